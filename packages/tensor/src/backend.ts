import type { DType, StorageArray } from './dtype';
import { KernelNotFoundError, ValueError } from './errors';
import type { OpAttrs, OpInputs, OpName, OpResult } from './ops/op-names';
import type { Shape } from './shape';

/** What a kernel sees of a tensor: its backend data, shape and dtype (always contiguous). */
export interface TensorRef {
  readonly data: unknown;
  readonly shape: Shape;
  readonly dtype: DType;
}

/** What a kernel returns for each output. `data` is owned by the backend that made it. */
export interface KernelOutput {
  data: unknown;
  shape: number[];
  dtype: DType;
}

/** What `op`'s kernel receives: its typed inputs and attributes (see `OpSpec`), and the backend it runs on. */
export interface KernelArgs<K extends OpName = OpName, B extends Backend = Backend> {
  inputs: OpInputs[K];
  attrs: OpAttrs[K];
  backend: B;
}

/** `op`'s kernel on backend class `B`: one output, or a named record for the ops in `OpOutputs`. */
export type KernelFn<K extends OpName = OpName, B extends Backend = Backend> = (args: KernelArgs<K, B>) => OpResult<K>;

/** A step's recorded device work (`captureGraph`). */
export interface CapturedGraph {
  /** Sends the recorded work again: the same kernels over the same buffers, whatever they hold now. */
  replay(): void;
  /**
   * Does the host side of the next replay now (encoding its commands), so that it overlaps the
   * device's work (call it while awaiting a read-back); the next `replay()` only submits.
   */
  prepare(): void;
  /** Dispatches one replay records. */
  readonly dispatches: number;
  /** Frees what only the graph held (the step's intermediates). Safe to call twice. */
  dispose(): void;
}

/** Live and peak bytes held by a backend's allocator. */
export interface MemoryInfo {
  liveBytes: number;
  peakBytes: number;
  liveBuffers: number;
}

/**
 * A place where tensor data lives and kernels run. The CPU backend is built in; the WebGPU
 * backend registers itself from `@metal-lora/metal-kernels`.
 */
export interface Backend {
  readonly name: string;
  /** Takes ownership of `values` (already in the storage layout of `dtype`). */
  upload(values: StorageArray, dtype: DType): unknown;
  /** A copy of the data, in the storage layout of `dtype`. */
  read(data: unknown, dtype: DType, size: number): Promise<StorageArray>;
  /** Synchronous read, where the backend can offer it (the CPU backend does). */
  readSync?(data: unknown, dtype: DType, size: number): StorageArray;
  /** Overwrites `data` with `values` (the whole tensor, storage layout of `dtype`), ordered after the work recorded before. */
  write?(data: unknown, values: StorageArray, dtype: DType): void;
  /**
   * Runs `fn` and records what it sends to the device, so that `replay()` sends the same work
   * again, reading whatever the same buffers hold then (see `captureGraph`). Backends whose
   * kernels run on the host have nothing to gain and leave it out.
   */
  capture?<R>(fn: () => R): { result: R; graph: CapturedGraph };
  free(data: unknown): void;
  memory(): MemoryInfo;
  /** Resets the peak to the current live bytes (for measuring one step). */
  resetPeak(): void;
  /**
   * A CPU implementation of a GPU API (lavapipe, SwiftShader): slower than the CPU backend for
   * the work this library does, so `setBackend('auto')` passes it over.
   */
  readonly software?: boolean;
}

/** How `setBackend('auto')` may rule out a registered backend before opening it. */
export interface AutoHint {
  /** Why 'auto' should not take this backend on this machine (e.g. only a software GPU driver is installed), or undefined to try it. */
  skipReason(): string | undefined;
}

const backends = new Map<string, Backend | (() => Backend | Promise<Backend>)>();
const autoHints = new Map<string, AutoHint>();
let current: Backend | undefined;

/** Registers a backend (or a factory called on first use) under `name`, with an optional hint for 'auto'. */
export function registerBackend(name: string, backend: Backend | (() => Backend | Promise<Backend>), autoHint?: AutoHint): void {
  backends.set(name, backend);
  if (autoHint) autoHints.set(name, autoHint);
  else autoHints.delete(name);
}

/** Where a backend is registered by importing a package, named in the error for a missing one. */
const REGISTERED_BY: Record<string, string> = {
  webgpu: "import '@metal-lora/metal-kernels' (or 'metal-lora') first: importing it registers the webgpu backend",
};

let autoNoted = false;
/** 'auto' says once per process why it took the CPU over a GPU backend that exists. */
function noteAuto(reason: string): void {
  if (autoNoted) return;
  autoNoted = true;
  console.warn(`metal-lora: setBackend('auto') chose the cpu backend: ${reason}`);
}

export function registeredBackends(): string[] {
  return [...backends.keys()];
}

/** The backend by name, creating it on first use. */
export async function resolveBackend(name: string): Promise<Backend> {
  const entry = backends.get(name);
  if (!entry) {
    const hint = REGISTERED_BY[name];
    throw new ValueError(
      'setBackend',
      `unknown backend${hint ? ` ('${name}' is not registered: ${hint})` : ''}`,
      `one of ${registeredBackends().join(', ')}`,
      `'${name}'`,
    );
  }
  if (typeof entry !== 'function') return entry;
  const made = await entry();
  backends.set(name, made);
  return made;
}

/**
 * Selects the backend new tensors are created on. `webgpu` needs `@metal-lora/metal-kernels` to
 * be imported; `auto` takes webgpu when it is registered and a hardware adapter opens, else cpu.
 * A software adapter (lavapipe, SwiftShader) is slower than the CPU backend here, so 'auto'
 * takes the CPU instead and says so once (`console.warn`); `setBackend('webgpu')` uses it anyway.
 */
export async function setBackend(name: string): Promise<Backend> {
  if (name === 'auto') {
    if (backends.has('webgpu')) {
      const skip = autoHints.get('webgpu')?.skipReason();
      if (skip) noteAuto(skip);
      else {
        try {
          const gpu = await resolveBackend('webgpu');
          if (!gpu.software) {
            current = gpu;
            return current;
          }
          noteAuto(`the WebGPU adapter is a software renderer, slower than the CPU backend (setBackend('webgpu') uses it anyway)`);
        } catch {
          // No adapter here: fall back to the CPU, as 'auto' promises.
        }
      }
    }
    current = await resolveBackend('cpu');
    return current;
  }
  current = await resolveBackend(name);
  return current;
}

/** Selects an already created backend synchronously. */
export function setBackendSync(backend: Backend): void {
  current = backend;
}

export function getBackend(): Backend {
  if (!current) {
    const cpu = backends.get('cpu');
    if (!cpu || typeof cpu === 'function') throw new ValueError('getBackend', 'no backend is set', 'the cpu backend to be registered', 'none');
    current = cpu;
  }
  return current;
}

/** Kernels by op and backend name; each entry is the `KernelFn<op, B>` registered for that pair. */
const kernels = new Map<OpName, Map<string, unknown>>();

/**
 * Registers `fn` as `op`'s kernel on the backend named `backend` (whose class is `B`). `fn` is typed
 * by the op's `OpSpec`: its inputs, attributes and result. A second registration for the pair throws.
 */
export function registerKernel<K extends OpName, B extends Backend = Backend>(backend: string, op: K, fn: KernelFn<K, B>): void {
  let byBackend = kernels.get(op);
  if (!byBackend) kernels.set(op, (byBackend = new Map()));
  if (byBackend.has(backend))
    throw new ValueError('registerKernel', `kernel '${op}' is already registered`, 'one registration per (backend, op)', `a second one for '${backend}'`);
  byBackend.set(backend, fn);
}

/** Removes a registration (tests and backends that swap variants). */
export function unregisterKernel(backend: string, op: OpName): void {
  kernels.get(op)?.delete(backend);
}

export function hasKernel(backend: string, op: OpName): boolean {
  return kernels.get(op)?.has(backend) ?? false;
}

/** `op`'s kernel on the backend named `backend`; `KernelNotFoundError` names the backends that have one. */
export function getKernel<K extends OpName>(backend: string, op: K): KernelFn<K> {
  const fn = kernels.get(op)?.get(backend);
  if (!fn) throw new KernelNotFoundError(op, backend, [...(kernels.get(op)?.keys() ?? [])]);
  // Registered by registerKernel for this op, on the backend of this name.
  return fn as KernelFn<K>;
}
