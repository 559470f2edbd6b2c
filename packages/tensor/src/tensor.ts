import { type Backend, type TensorRef, getBackend, resolveBackend } from './backend';
import { type DType, type StorageArray, type ValueArray, assertDType, bytesPerElement, fromStorage, isFloat, toStorage } from './dtype';
import { assertDifferentiable, computeGradients, type GradNode, isGradEnabled, releaseGraph } from './engine';
import { DTypeError, ShapeError, StateError, ValueError } from './errors';
import type { MatmulOptions } from './ops/matmul';
import { normalValues, nextSeed, uniformValues } from './random';
import { keep, setTensorCheck, trackTensor } from './scope';
import { assertShape, formatShape, type Shape, sizeOf } from './shape';

/** Backend data shared by tensor handles (reshape and detach share it); freed at refcount 0. */
class Storage {
  refs = 1;
  constructor(
    readonly backend: Backend,
    public data: unknown,
    readonly bytes: number,
  ) {}
}

let nextId = 1;

/** Nested arrays of numbers, as `toArray()` returns and `tensor()` accepts. */
export type NestedArray = number | boolean | NestedArray[];

/**
 * An n-dimensional array on a backend, contiguous in row-major order.
 *
 * @example
 * const x = tensor([[1, 2], [3, 4]], undefined, { requiresGrad: true });
 * const y = x.mul(x).sum();
 * y.backward();
 * await x.grad!.toArray(); // [[2, 4], [6, 8]]
 */
// biome-ignore lint/suspicious/noUnsafeDeclarationMerging: the merged interface's methods are installed on the prototype by tensor-methods.ts (run by the package entry)
export class Tensor {
  readonly id = nextId++;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** Whether gradients flow to this tensor. Leaves with it set receive `.grad` from `backward()`. */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after `backward()`; null until then. */
  grad: Tensor | null = null;
  /** How this tensor was computed, while a graph is recorded. @internal */
  node: GradNode | null = null;
  /** Set when backward released the graph that computed this tensor. @internal */
  graphReleased = false;
  private storage: Storage | null;

  private constructor(storage: Storage, shape: readonly number[], dtype: DType) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    trackTensor(this);
  }

  /** Wraps data a backend produced (kernels' outputs). @internal */
  static fromBackendData(backend: Backend, data: unknown, shape: readonly number[], dtype: DType): Tensor {
    return new Tensor(new Storage(backend, data, sizeOf(shape) * bytesPerElement(dtype)), shape, dtype);
  }

  get size(): number {
    return sizeOf(this.shape);
  }
  get rank(): number {
    return this.shape.length;
  }
  get backend(): Backend {
    return this.live('backend').backend;
  }
  get isDisposed(): boolean {
    return this.storage === null;
  }
  /** A leaf is a tensor not computed by a recorded op (parameters, inputs). */
  get isLeaf(): boolean {
    return this.node === null && !this.graphReleased;
  }

  private live(op: string): Storage {
    if (!this.storage)
      throw new StateError(op, `tensor #${this.id} ${formatShape(this.shape, this.dtype)} was disposed; expected a live tensor, got a disposed one`);
    return this.storage;
  }

  /** The view kernels receive. @internal */
  ref(op: string): TensorRef {
    return { data: this.live(op).data, shape: this.shape, dtype: this.dtype };
  }

  /** A new handle on the same data with another shape (same size). @internal */
  withShape(shape: readonly number[]): Tensor {
    const storage = this.live('reshape');
    storage.refs++;
    return new Tensor(storage, shape, this.dtype);
  }

  /** A second handle on the same data: disposing one leaves the other valid. */
  share(): Tensor {
    return this.withShape(this.shape);
  }

  /** The same data, cut from the graph: no gradient flows through the result. */
  detach(): Tensor {
    return this.share();
  }

  /** Values as a typed array (float16 decoded to Float32Array, bool as Uint8Array). */
  async data(): Promise<ValueArray> {
    const s = this.live('data');
    const raw = await s.backend.read(s.data, this.dtype, this.size);
    return fromStorage(raw, this.dtype);
  }

  /** Synchronous read; only backends that hold data in host memory (cpu) offer it. */
  dataSync(): ValueArray {
    const s = this.live('dataSync');
    if (!s.backend.readSync) {
      throw new StateError('dataSync', `backend '${s.backend.name}' reads asynchronously; expected await t.data(), got a synchronous read`);
    }
    return fromStorage(s.backend.readSync(s.data, this.dtype, this.size), this.dtype);
  }

  /** Values as nested arrays shaped like the tensor. */
  async toArray(): Promise<NestedArray> {
    return nest(await this.data(), this.shape, this.dtype);
  }

  toArraySync(): NestedArray {
    return nest(this.dataSync(), this.shape, this.dtype);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    this.assertScalar('item');
    return (await this.data())[0];
  }

  itemSync(): number {
    this.assertScalar('itemSync');
    return this.dataSync()[0];
  }

  private assertScalar(op: string): void {
    if (this.size !== 1) throw new ShapeError(op, 'tensor has more than one element', 'a one-element tensor', formatShape(this.shape));
  }

  /** A copy of this tensor on another backend (`'cpu'`, `'webgpu'`). Gradients do not flow through it. */
  async to(backendName: string): Promise<Tensor> {
    const target = await resolveBackend(backendName);
    const s = this.live('to');
    if (target === s.backend) return this.share();
    const raw = await s.backend.read(s.data, this.dtype, this.size);
    return Tensor.fromBackendData(target, target.upload(raw, this.dtype), this.shape, this.dtype);
  }

  /**
   * Backpropagates from this tensor. Without `grad` the tensor must have one element (a loss).
   * Leaves requiring grad accumulate into `.grad`; the graph is released afterwards unless
   * `retainGraph` is set.
   */
  backward(grad?: Tensor, options: { retainGraph?: boolean } = {}): void {
    assertDifferentiable(this, 'backward');
    let seed = grad;
    if (!seed) {
      if (this.size !== 1)
        throw new ShapeError('backward', 'an implicit gradient needs a one-element output', 'a scalar (pass grad for other shapes)', formatShape(this.shape));
      seed = full(this.shape, 1, { dtype: this.dtype, backend: this.backend });
    } else if (seed.shape.join() !== this.shape.join()) {
      throw new ShapeError('backward', 'gradient shape differs from the output', formatShape(this.shape), formatShape(seed.shape));
    }
    const grads = computeGradients(this, seed, (t) => t.isLeaf);
    for (const [leaf, g] of grads) {
      if (!leaf.isLeaf) continue;
      if (leaf.grad) {
        const sum = leaf.grad.add(g);
        leaf.grad.dispose();
        g.dispose();
        leaf.grad = keep(sum);
      } else leaf.grad = keep(g === seed ? g.share() : g);
    }
    if (!grad) seed.dispose();
    if (!options.retainGraph) releaseGraph(this);
  }

  /**
   * Replaces this tensor's data with `value`'s (shared, no copy), keeping the handle, its
   * `requiresGrad` and `.grad`: how optimizers update parameters in place. `value` must have the
   * same shape, dtype and backend. Not recorded by autograd.
   */
  assign(value: Tensor): this {
    const incoming = value.live('assign');
    const own = this.live('assign');
    if (value.shape.join() !== this.shape.join() || value.dtype !== this.dtype) {
      throw new ShapeError('assign', 'value differs in shape or dtype', formatShape(this.shape, this.dtype), formatShape(value.shape, value.dtype));
    }
    if (incoming.backend !== own.backend)
      throw new StateError('assign', `value lives on another backend; expected '${own.backend.name}', got '${incoming.backend.name}'`);
    incoming.refs++;
    this.storage = incoming;
    if (--own.refs === 0) own.backend.free(own.data);
    return this;
  }

  /**
   * Overwrites every value in place (`values` in row-major order, as many as the tensor holds):
   * the storage keeps its place (on the GPU, the same buffer, written in order with the work
   * recorded before), so every handle on it sees the new values. How a recorded step's inputs
   * change between replays (`captureGraph`). Not recorded by autograd: refused while gradients
   * are recorded for this tensor.
   */
  write(values: ArrayLike<number>): this {
    const op = 'write';
    const s = this.live(op);
    if (!ArrayBuffer.isView(values) && !Array.isArray(values))
      throw new ValueError(op, 'values must be an array or typed array of numbers', `${this.size} numbers`, typeof values);
    if (values.length !== this.size)
      throw new ShapeError(op, 'values must fill the tensor', `${this.size} values for ${formatShape(this.shape)}`, `${values.length}`);
    if (isGradEnabled() && this.requiresGrad)
      throw new StateError(op, 'the tensor requires grad and gradients are being recorded; expected the write under noGrad(), got it outside');
    if (!s.backend.write) throw new StateError(op, `backend '${s.backend.name}' cannot overwrite data in place; expected a backend with write(), got none`);
    const storage = values instanceof Uint16Array && this.dtype === 'float16' ? values.slice() : toStorage(values, this.dtype);
    s.backend.write(s.data, storage, this.dtype);
    return this;
  }

  /** Frees the data once no handle refers to it. Safe to call twice. */
  dispose(): void {
    const s = this.storage;
    if (!s) return;
    this.storage = null;
    if (--s.refs === 0) s.backend.free(s.data);
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape, this.dtype)}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/**
 * The chaining forms of the ops (`x.mul(y).sum()`; see the functions in ops/ for documentation).
 * They are installed on `Tensor.prototype` by `tensor-methods.ts`, which the package entry runs, so
 * that this module does not import the ops (they import it).
 */
export interface TensorOpMethods {
  add(b: Tensor | number): Tensor;
  sub(b: Tensor | number): Tensor;
  mul(b: Tensor | number): Tensor;
  div(b: Tensor | number): Tensor;
  pow(b: Tensor | number): Tensor;
  neg(): Tensor;
  exp(): Tensor;
  log(): Tensor;
  sqrt(): Tensor;
  tanh(): Tensor;
  sigmoid(): Tensor;
  relu(): Tensor;
  abs(): Tensor;
  silu(): Tensor;
  gelu(options?: { approximate?: 'none' | 'tanh' }): Tensor;
  matmul(b: Tensor, options?: MatmulOptions): Tensor;
  sum(axes?: number | number[], keepDims?: boolean): Tensor;
  mean(axes?: number | number[], keepDims?: boolean): Tensor;
  max(axes?: number | number[], keepDims?: boolean): Tensor;
  softmax(axis?: number): Tensor;
  logSoftmax(axis?: number): Tensor;
  reshape(shape: readonly number[]): Tensor;
  transpose(perm?: readonly number[]): Tensor;
  slice(begin: readonly number[], end?: readonly number[]): Tensor;
  cast(dtype: DType): Tensor;
}

export interface Tensor extends TensorOpMethods {}

setTensorCheck((v: unknown): v is Tensor => v instanceof Tensor);

function nest(values: ValueArray, shape: Shape, dtype: DType): NestedArray {
  const conv = dtype === 'bool' ? (v: number) => v !== 0 : (v: number) => v;
  if (shape.length === 0) return conv(values[0]);
  const build = (dim: number, offset: number): NestedArray[] => {
    const n = shape[dim];
    const stride = sizeOf(shape.slice(dim + 1));
    const out: NestedArray[] = new Array(n);
    for (let i = 0; i < n; i++) out[i] = dim === shape.length - 1 ? conv(values[offset + i]) : build(dim + 1, offset + i * stride);
    return out;
  };
  return build(0, 0);
}

export interface CreateOptions {
  dtype?: DType;
  /** Track gradients for this leaf. Only floating-point tensors can require grad. */
  requiresGrad?: boolean;
  /** Defaults to the current backend (`getBackend()`). */
  backend?: Backend;
}

function inferShape(data: NestedArray, op: string): number[] {
  const shape: number[] = [];
  let level: NestedArray = data;
  while (Array.isArray(level)) {
    shape.push(level.length);
    level = level[0];
  }
  const check = (v: NestedArray, dim: number): void => {
    if (dim === shape.length) {
      if (typeof v !== 'number' && typeof v !== 'boolean')
        throw new ShapeError(op, 'ragged nested array', `a rectangular array of shape ${formatShape(shape)}`, 'rows of different lengths');
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[dim])
      throw new ShapeError(op, 'ragged nested array', `a rectangular array of shape ${formatShape(shape)}`, 'rows of different lengths');
    for (const x of v) check(x, dim + 1);
  };
  check(data, 0);
  return shape;
}

function flatten(data: NestedArray, out: number[]): void {
  if (Array.isArray(data)) for (const v of data) flatten(v, out);
  else out.push(Number(data));
}

type TypedInput = Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array;

function defaultDType(data: NestedArray | TypedInput): DType {
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof Uint8Array) return 'bool';
  if (data instanceof Uint16Array) return 'float16';
  return 'float32';
}

/** Builds a leaf tensor from computed values (number arrays in the compute layout of `dtype`). */
export function fromValues(values: ArrayLike<number>, shape: readonly number[], options: CreateOptions = {}, op = 'tensor'): Tensor {
  const dtype = assertDType(op, options.dtype ?? 'float32');
  const backend = options.backend ?? getBackend();
  const t = Tensor.fromBackendData(backend, backend.upload(toStorage(values, dtype), dtype), shape, dtype);
  return setRequiresGrad(t, options.requiresGrad ?? false, op);
}

function setRequiresGrad(t: Tensor, requiresGrad: boolean, op: string): Tensor {
  if (requiresGrad && !isFloat(t.dtype)) throw new DTypeError(op, 'only floating-point tensors can require grad', 'float32 | float16 | float64', t.dtype);
  t.requiresGrad = requiresGrad;
  return t;
}

/**
 * A tensor from nested arrays, a typed array or a number. The shape is inferred from nested
 * arrays; flat data needs `shape`. Default dtype: float32 for numbers, else the typed array's
 * (Float64Array → float64, Int32Array → int32, Uint16Array → float16 bits, Uint8Array → bool).
 *
 * @example
 * const w = tensor(new Float32Array(6), [2, 3], { requiresGrad: true });
 */
export function tensor(data: NestedArray | TypedInput, shape?: readonly number[], options: CreateOptions = {}): Tensor {
  const dtype = options.dtype ? assertDType('tensor', options.dtype) : defaultDType(data);
  let values: ArrayLike<number>;
  let inferred: number[];
  if (ArrayBuffer.isView(data)) {
    if (data instanceof Uint16Array) {
      if (dtype !== 'float16') throw new DTypeError('tensor', 'a Uint16Array holds float16 bits', "dtype 'float16'", dtype);
      const backend = options.backend ?? getBackend();
      const s = shape ? assertShape('tensor', shape) : [data.length];
      if (sizeOf(s) !== data.length)
        throw new ShapeError('tensor', 'data length does not match the shape', `${sizeOf(s)} elements for ${formatShape(s)}`, `${data.length}`);
      const t = Tensor.fromBackendData(backend, backend.upload(data.slice(), 'float16'), s, 'float16');
      return setRequiresGrad(t, options.requiresGrad ?? false, 'tensor');
    }
    values = data;
    inferred = [data.length];
  } else {
    inferred = inferShape(data, 'tensor');
    const flat: number[] = [];
    flatten(data, flat);
    values = flat;
  }
  const finalShape = shape ? assertShape('tensor', shape) : inferred;
  if (sizeOf(finalShape) !== values.length) {
    throw new ShapeError('tensor', 'data length does not match the shape', `${sizeOf(finalShape)} elements for ${formatShape(finalShape)}`, `${values.length}`);
  }
  // Copy: the backend takes ownership of what it is given, the caller keeps theirs.
  const copy = ArrayBuffer.isView(values) ? (values as TypedInput).slice() : values;
  return fromValues(copy, finalShape, { ...options, dtype }, 'tensor');
}

/** A tensor of `shape` filled with `value`. */
export function full(shape: readonly number[], value: number, options: CreateOptions = {}): Tensor {
  const s = assertShape('full', shape);
  if (options.dtype !== undefined) assertDType('full', options.dtype);
  const values = new Float64Array(sizeOf(s)).fill(value);
  return fromValues(values, s, options, 'full');
}

export function zeros(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return full(shape, 0, options);
}

export function ones(shape: readonly number[], options: CreateOptions = {}): Tensor {
  return full(shape, 1, options);
}

/** A one-element tensor of rank 0. */
export function scalar(value: number, options: CreateOptions = {}): Tensor {
  return fromValues([value], [], options, 'scalar');
}

export interface RandomOptions extends CreateOptions {
  /** Stream key; the same seed gives the same numbers on every backend. Default: drawn from the global generator. */
  seed?: number;
}

/** Uniform values in [low, high). */
export function rand(shape: readonly number[], options: RandomOptions & { low?: number; high?: number } = {}): Tensor {
  const s = assertShape('rand', shape);
  if (options.dtype !== undefined) assertDType('rand', options.dtype);
  const values = new Float64Array(sizeOf(s));
  uniformValues(options.seed ?? nextSeed(), values.length, options.low ?? 0, options.high ?? 1, values);
  return fromValues(values, s, options, 'rand');
}

/** Normal values with the given mean and standard deviation. */
export function randn(shape: readonly number[], options: RandomOptions & { mean?: number; std?: number } = {}): Tensor {
  const s = assertShape('randn', shape);
  if (options.dtype !== undefined) assertDType('randn', options.dtype);
  const values = new Float64Array(sizeOf(s));
  normalValues(options.seed ?? nextSeed(), values.length, options.mean ?? 0, options.std ?? 1, values);
  return fromValues(values, s, options, 'randn');
}

/** `[start, start + step, ...)` up to `stop` (exclusive); `arange(n)` is `0..n-1`. */
export function arange(start: number, stop?: number, step = 1, options: CreateOptions = {}): Tensor {
  const [lo, hi] = stop === undefined ? [0, start] : [start, stop];
  if (step === 0 || !Number.isFinite(step)) throw new ShapeError('arange', 'invalid step', 'a finite non-zero step', String(step));
  const n = Math.max(0, Math.ceil((hi - lo) / step));
  const values = Array.from({ length: n }, (_, i) => lo + i * step);
  return fromValues(values, [n], { dtype: 'float32', ...options }, 'arange');
}

/** The storage array type used by a backend's `upload` for a dtype. @internal */
export type { StorageArray };
