import { type KernelArgs, type KernelOutput, registerKernel, type TensorRef } from '../backend';
import type { DType, StorageArray, ValueArray } from '../dtype';
import { ValueError } from '../errors';
import { erf, gelu, sigmoid } from '../math';
import { adamOperands, type BinaryOp, type OpAttrs, type OpName, type OpOutputs, type UnaryOp } from '../ops/op-names';
import { dequantizeAffine, packedWords, type QuantSpec, quantizeAffine } from '../quantize';
import { dropoutKeep } from '../random';
import { broadcastShapes, broadcastStrides, reducedShape, type Shape, sizeOf, stridesOf } from '../shape';
import { type CpuBackend, cpuBackend } from './backend';
import { registerCpuBlockKernels } from './block-kernels';
import { gemmABt, transpose2d } from './matmul';

type Args<K extends OpName> = KernelArgs<K, CpuBackend>;
type Floats = Float32Array | Float64Array;

/** f64 inputs compute in f64; everything else in f32 (float16 included). */
function floatArray(dtype: DType, size: number): Floats {
  return dtype === 'float64' ? new Float64Array(size) : new Float32Array(size);
}

function asFloats(values: ValueArray, dtype: DType): Floats {
  if (values instanceof Float32Array || values instanceof Float64Array) return values;
  return dtype === 'float64' ? Float64Array.from(values) : Float32Array.from(values);
}

const unaryFns: Record<Exclude<UnaryOp, 'gelu'>, (x: number) => number> = {
  neg: (x) => -x,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  tanh: Math.tanh,
  sigmoid,
  silu: (x) => x * sigmoid(x),
  relu: (x) => Math.max(x, 0), // NaN stays NaN, as in PyTorch
  erf,
  abs: Math.abs,
};

function unaryKernel(fn: (x: number) => number) {
  return ({ inputs: [x], backend }: KernelArgs<UnaryOp, CpuBackend>): KernelOutput => {
    const v = backend.values(x);
    const out = backend.alloc(x.dtype, v.length);
    for (let i = 0; i < v.length; i++) out[i] = fn(v[i]);
    return backend.output(out, [...x.shape], x.dtype);
  };
}

/** Visits every index of `outShape`, passing the matching flat offsets into each input. */
function forEachBroadcast(outShape: Shape, inShapes: Shape[], visit: (outIndex: number, offsets: number[]) => void): void {
  const rank = outShape.length;
  const strides = inShapes.map((s) => broadcastStrides(s, outShape));
  const counter = new Array<number>(rank).fill(0);
  const offsets = new Array<number>(inShapes.length).fill(0);
  const total = sizeOf(outShape);
  for (let o = 0; o < total; o++) {
    visit(o, offsets);
    for (let d = rank - 1; d >= 0; d--) {
      counter[d]++;
      for (let k = 0; k < offsets.length; k++) offsets[k] += strides[k][d];
      if (counter[d] < outShape[d]) break;
      for (let k = 0; k < offsets.length; k++) offsets[k] -= strides[k][d] * outShape[d];
      counter[d] = 0;
    }
  }
}

const binaryFns: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: (a, b) => a ** b,
  maximum: (a, b) => (a > b || Number.isNaN(a) ? a : b),
  equal: (a, b) => (a === b ? 1 : 0),
  greater: (a, b) => (a > b ? 1 : 0),
  less: (a, b) => (a < b ? 1 : 0),
};

function binaryKernel(op: BinaryOp) {
  const fn = binaryFns[op];
  const isCompare = op === 'equal' || op === 'greater' || op === 'less';
  return ({ inputs: [a, b], backend }: KernelArgs<BinaryOp, CpuBackend>): KernelOutput => {
    const av = backend.values(a);
    const bv = backend.values(b);
    const shape = broadcastShapes(op, a.shape, b.shape);
    const dtype: DType = isCompare ? 'bool' : a.dtype;
    const out = backend.alloc(dtype, sizeOf(shape));
    if (av.length === out.length && bv.length === out.length) {
      for (let i = 0; i < out.length; i++) out[i] = fn(av[i], bv[i]);
    } else if (bv.length === 1 && av.length === out.length) {
      const s = bv[0];
      for (let i = 0; i < out.length; i++) out[i] = fn(av[i], s);
    } else {
      forEachBroadcast(shape, [a.shape, b.shape], (o, [i, j]) => {
        out[o] = fn(av[i], bv[j]);
      });
    }
    return backend.output(out, shape, dtype);
  };
}

function whereKernel({ inputs: [c, a, b], backend }: Args<'where'>): KernelOutput {
  const cv = backend.values(c);
  const av = backend.values(a);
  const bv = backend.values(b);
  const shape = broadcastShapes('where', c.shape, a.shape, b.shape);
  const out = backend.alloc(a.dtype, sizeOf(shape));
  forEachBroadcast(shape, [c.shape, a.shape, b.shape], (o, [i, j, k]) => {
    out[o] = cv[i] ? av[j] : bv[k];
  });
  return backend.output(out, shape, a.dtype);
}

function castKernel({ inputs: [x], attrs, backend }: Args<'cast'>): KernelOutput {
  return backend.output(backend.values(x), [...x.shape], attrs.dtype);
}

function reduceKernel(kind: 'sum' | 'max') {
  return ({ inputs: [x], attrs, backend }: Args<'sum' | 'max'>): KernelOutput => {
    const v = backend.values(x);
    const keptShape = reducedShape(x.shape, attrs.axes, true);
    const outShape = reducedShape(x.shape, attrs.axes, attrs.keepDims);
    const n = sizeOf(keptShape);
    const acc = new Float64Array(n).fill(kind === 'sum' ? 0 : Number.NEGATIVE_INFINITY);
    // Iterate the input; each element lands on its reduced output position (stride 0 on reduced axes).
    const outStrides = stridesOf(keptShape).map((s, d) => (attrs.axes.includes(d) ? 0 : s));
    const rank = x.shape.length;
    const counter = new Array<number>(rank).fill(0);
    let o = 0;
    for (let i = 0; i < v.length; i++) {
      const value = v[i];
      if (kind === 'sum') acc[o] += value;
      else if (value > acc[o] || Number.isNaN(value)) acc[o] = value;
      for (let d = rank - 1; d >= 0; d--) {
        counter[d]++;
        o += outStrides[d];
        if (counter[d] < x.shape[d]) break;
        o -= outStrides[d] * x.shape[d];
        counter[d] = 0;
      }
    }
    return backend.output(acc, outShape, x.dtype);
  };
}

/** Splits a shape around `axis` into (outer, length, inner) for axis-wise kernels. */
function aroundAxis(shape: Shape, axis: number): [number, number, number] {
  return [sizeOf(shape.slice(0, axis)), shape[axis], sizeOf(shape.slice(axis + 1))];
}

function softmaxKernel(log: boolean) {
  return ({ inputs: [x], attrs, backend }: Args<'softmax' | 'logSoftmax'>): KernelOutput => {
    const v = backend.values(x);
    const [outer, len, inner] = aroundAxis(x.shape, attrs.axis);
    const out = floatArray(x.dtype, v.length);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < inner; i++) {
        const base = o * len * inner + i;
        let mx = Number.NEGATIVE_INFINITY;
        for (let k = 0; k < len; k++) mx = Math.max(mx, v[base + k * inner]);
        let total = 0;
        for (let k = 0; k < len; k++) total += Math.exp(v[base + k * inner] - mx);
        const logTotal = Math.log(total);
        for (let k = 0; k < len; k++) {
          const z = v[base + k * inner] - mx;
          out[base + k * inner] = log ? z - logTotal : Math.exp(z) / total;
        }
      }
    }
    return backend.output(out, [...x.shape], x.dtype);
  };
}

/** Rows of `softmaxCrossEntropy`: loss and log-sum-exp per row (f64 for float64 logits, f32 otherwise). */
function crossEntropyKernel({ inputs: [logits, targets, weights], backend }: Args<'softmaxCrossEntropy'>): OpOutputs['softmaxCrossEntropy'] {
  const [N, V] = logits.shape;
  const x = backend.values(logits);
  const t = backend.values(targets);
  const w = backend.values(weights);
  const loss = floatArray(logits.dtype, N);
  const lse = floatArray(logits.dtype, N);
  for (let i = 0; i < N; i++) {
    let mx = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < V; j++) mx = Math.max(mx, x[i * V + j]);
    let total = 0;
    for (let j = 0; j < V; j++) total += Math.exp(x[i * V + j] - mx);
    lse[i] = mx + Math.log(total);
    const valid = t[i] >= 0 && t[i] < V;
    loss[i] = w[i] === 0 ? 0 : valid ? w[i] * (lse[i] - x[i * V + t[i]]) : Number.NaN;
  }
  return { loss: backend.output(loss, [N], logits.dtype), logsumexp: backend.output(lse, [N], logits.dtype) };
}

/** `softmaxCrossEntropyBackward`: dlogits = dloss·w·(softmax − one-hot). */
function crossEntropyBackwardKernel({ inputs: [logits, targets, weights, lse, dloss], backend }: Args<'softmaxCrossEntropyBackward'>): KernelOutput {
  const [N, V] = logits.shape;
  const x = backend.values(logits);
  const t = backend.values(targets);
  const w = backend.values(weights);
  const l = backend.values(lse);
  const dy = backend.values(dloss);
  const dx = floatArray(logits.dtype, N * V);
  for (let i = 0; i < N; i++) {
    const c = dy[i] * w[i];
    for (let j = 0; j < V; j++) dx[i * V + j] = c === 0 ? 0 : c * (Math.exp(x[i * V + j] - l[i]) - (j === t[i] ? 1 : 0));
  }
  return backend.output(dx, [N, V], logits.dtype);
}

/** The reference of `adamUpdate`: float64 arithmetic, with m' and v' rounded to the parameter's precision as they are stored. */
function adamUpdateKernel({ inputs: [param, grad, m, v], attrs, backend }: Args<'adamUpdate'>): OpOutputs['adamUpdate'] {
  const { lr, beta1, beta2, weightDecay: wd, decoupled, step } = attrs;
  return adamReference(backend, [param, grad, m, v], attrs, [lr, decoupled ? 1 - lr * wd : 1, 1 - beta1 ** step, 1 - beta2 ** step]);
}

/** One Adam step over [param, grad, m, v] with the step's values [lr, decay, c1, c2]. */
function adamReference(
  backend: Args<'adamUpdate'>['backend'],
  tensors: readonly TensorRef[],
  { beta1, beta2, eps, weightDecay: wd, decoupled }: OpAttrs['adamUpdate'],
  values: ArrayLike<number>,
): OpOutputs['adamUpdate'] {
  const [lr, decay, c1, c2] = [values[0], values[1], values[2], values[3]];
  const [param] = tensors;
  const [pv, gv, mv, vv] = tensors.map((t) => backend.values(t));
  const n = pv.length;
  const [po, mo, vo] = [0, 1, 2].map(() => floatArray(param.dtype, n));
  const l2 = decoupled ? 0 : wd;
  for (let i = 0; i < n; i++) {
    const g = gv[i] + l2 * pv[i];
    mo[i] = beta1 * mv[i] + (1 - beta1) * g;
    vo[i] = beta2 * vv[i] + (1 - beta2) * g * g;
    po[i] = pv[i] * decay - (lr * (mo[i] / c1)) / (Math.sqrt(vo[i] / c2) + eps);
  }
  const shape = [...param.shape];
  return { param: backend.output(po, shape, param.dtype), m: backend.output(mo, shape, param.dtype), v: backend.output(vo, shape, param.dtype) };
}

/** `adamUpdateInPlace`: the reference step, written into the storage of param, m and v (the step's values from `schedule` when given). */
function adamUpdateInPlaceKernel({ inputs, attrs, backend }: Args<'adamUpdateInPlace'>): OpOutputs['adamUpdateInPlace'] {
  const { param, grad, m, v, copy, schedule } = adamOperands(inputs, attrs.schedule);
  const { lr, beta1, beta2, weightDecay: wd, decoupled, step } = attrs;
  const values = schedule ? (schedule.data as Float32Array) : [lr, decoupled ? 1 - lr * wd : 1, 1 - beta1 ** step, 1 - beta2 ** step];
  const outs = adamReference(backend, [param, grad, m, v], attrs, values);
  const rounded = copy ? backend.output(backend.values(outs.param), [...copy.shape], copy.dtype) : null;
  for (const [target, o] of [[param, outs.param], [m, outs.m], [v, outs.v], ...(copy && rounded ? [[copy, rounded] as const] : [])] as const) {
    (target.data as StorageArray).set(o.data as StorageArray);
    backend.free(o.data);
  }
  return {};
}

/** The float64 weights of a packed matrix `[rows, cols]` (`dequantize`'s reference). */
function dequantized(
  backend: CpuBackend,
  weight: TensorRef,
  scales: TensorRef,
  biases: TensorRef,
  spec: QuantSpec,
): { w: Float64Array; rows: number; cols: number } {
  const rows = weight.shape[0];
  const cols = scales.shape[1] * spec.groupSize;
  return { w: dequantizeAffine(weight.data as Int32Array, backend.values(scales), backend.values(biases), rows, cols, spec), rows, cols };
}

function dequantizeKernel({ inputs: [weight, scales, biases], attrs, backend }: Args<'dequantize'>): KernelOutput {
  const { w, rows, cols } = dequantized(backend, weight, scales, biases, attrs);
  const out = floatArray(scales.dtype, rows * cols);
  out.set(w);
  return backend.output(out, [rows, cols], scales.dtype);
}

/** `quantize`: MLX affine quantization in f32 arithmetic (throws on a value that is not finite). */
function quantizeKernel({ inputs: [w], attrs, backend }: Args<'quantize'>): OpOutputs['quantize'] {
  const [rows, cols] = w.shape;
  const q = quantizeAffine(backend.values(w), rows, cols, attrs);
  const groups = cols / attrs.groupSize;
  const scales = floatArray(w.dtype, rows * groups);
  const biases = floatArray(w.dtype, rows * groups);
  scales.set(q.scales);
  biases.set(q.biases);
  return {
    weight: backend.output(q.packed, [rows, packedWords(cols, attrs.bits)], 'int32'),
    scales: backend.output(scales, [rows, groups], w.dtype),
    biases: backend.output(biases, [rows, groups], w.dtype),
  };
}

/** `quantizedMatmul`: x·Wᵀ or x·W over the dequantized weights, accumulated in float64. */
function quantizedMatmulKernel({ inputs: [x, weight, scales, biases], attrs, backend }: Args<'quantizedMatmul'>): KernelOutput {
  const { w, rows, cols } = dequantized(backend, weight, scales, biases, attrs);
  const xv = backend.values(x);
  const [inner, outer] = attrs.transpose ? [cols, rows] : [rows, cols];
  const m = xv.length / inner;
  const out = floatArray(x.dtype, m * outer);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < outer; j++) {
      let acc = 0;
      if (attrs.transpose) for (let k = 0; k < inner; k++) acc += xv[i * inner + k] * w[j * cols + k];
      else for (let k = 0; k < inner; k++) acc += xv[i * inner + k] * w[k * cols + j];
      out[i * outer + j] = acc;
    }
  }
  return backend.output(out, [...x.shape.slice(0, -1), outer], x.dtype);
}

/** `writeSlice`: values copied into the target's own storage from the start index (refused past the end). */
function writeSliceKernel({ inputs: [target, values, start], attrs: { axis } }: Args<'writeSlice'>): OpOutputs['writeSlice'] {
  const at = (start.data as StorageArray)[0];
  const span = values.shape[axis];
  const dim = target.shape[axis];
  if (!(at >= 0 && at + span <= dim))
    throw new ValueError('writeSlice', 'start puts the slice past the end of target', `a start in 0..${dim - span}`, String(at));
  const [outer, , inner] = aroundAxis([...target.shape], axis);
  const dst = target.data as StorageArray;
  const src = values.data as StorageArray;
  const chunk = span * inner;
  for (let o = 0; o < outer; o++) dst.set(src.subarray(o * chunk, (o + 1) * chunk), (o * dim + at) * inner);
  return {};
}

function matmulKernel({ inputs: [a, b], attrs, backend }: Args<'matmul'>): KernelOutput {
  const av = asFloats(backend.values(a), a.dtype);
  const bv = asFloats(backend.values(b), b.dtype);
  const ra = a.shape.length;
  const rb = b.shape.length;
  const [m, k] = attrs.transposeA ? [a.shape[ra - 1], a.shape[ra - 2]] : [a.shape[ra - 2], a.shape[ra - 1]];
  const n = attrs.transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes('matmul', batchA, batchB);
  const out = floatArray(a.dtype, sizeOf(batch) * m * n);
  // Bring each operand into the layout gemmABt wants: A as [M, K], B as [N, K].
  const aMat = attrs.transposeA ? floatArray(a.dtype, m * k) : null;
  const bMat = attrs.transposeB ? null : floatArray(a.dtype, n * k);
  forEachBroadcast(batch, [batchA, batchB], (o, [ia, ib]) => {
    const aOff = ia * m * k;
    const bOff = ib * n * k;
    let aSrc: Floats = av;
    let aStart = aOff;
    if (aMat) {
      transpose2d(av, aOff, k, m, aMat, 0);
      aSrc = aMat;
      aStart = 0;
    }
    let bSrc: Floats = bv;
    let bStart = bOff;
    if (bMat) {
      transpose2d(bv, bOff, k, n, bMat, 0);
      bSrc = bMat;
      bStart = 0;
    }
    gemmABt(m, n, k, aSrc, aStart, bSrc, bStart, out, o * m * n, false);
  });
  return backend.output(out, [...batch, m, n], a.dtype);
}

function broadcastToKernel({ inputs: [x], attrs, backend }: Args<'broadcastTo'>): KernelOutput {
  const v = backend.values(x);
  const out = backend.alloc(x.dtype, sizeOf(attrs.shape));
  forEachBroadcast(attrs.shape, [x.shape], (o, [i]) => {
    out[o] = v[i];
  });
  return backend.output(out, [...attrs.shape], x.dtype);
}

function transposeKernel({ inputs: [x], attrs, backend }: Args<'transpose'>): KernelOutput {
  const v = backend.values(x);
  const outShape = attrs.perm.map((p) => x.shape[p]);
  const inStrides = stridesOf(x.shape);
  const out = backend.alloc(x.dtype, v.length);
  // Read the input in the output's order: stride of output dim d is the input stride of perm[d].
  const permStrides = attrs.perm.map((p) => inStrides[p]);
  forEachStrided(outShape, permStrides, 0, (o, i) => {
    out[o] = v[i];
  });
  return backend.output(out, outShape, x.dtype);
}

/** Visits every index of `shape` in order with a strided source offset. */
function forEachStrided(shape: Shape, strides: readonly number[], start: number, visit: (outIndex: number, inIndex: number) => void): void {
  const rank = shape.length;
  const counter = new Array<number>(rank).fill(0);
  let i = start;
  const total = sizeOf(shape);
  for (let o = 0; o < total; o++) {
    visit(o, i);
    for (let d = rank - 1; d >= 0; d--) {
      counter[d]++;
      i += strides[d];
      if (counter[d] < shape[d]) break;
      i -= strides[d] * shape[d];
      counter[d] = 0;
    }
  }
}

function sliceKernel({ inputs: [x], attrs, backend }: Args<'slice'>): KernelOutput {
  const v = backend.values(x);
  const strides = stridesOf(x.shape);
  const start = attrs.begin.reduce((acc, b, d) => acc + b * strides[d], 0);
  const out = backend.alloc(x.dtype, sizeOf(attrs.size));
  forEachStrided(attrs.size, strides, start, (o, i) => {
    out[o] = v[i];
  });
  return backend.output(out, [...attrs.size], x.dtype);
}

function padKernel({ inputs: [x], attrs, backend }: Args<'pad'>): KernelOutput {
  const v = backend.values(x);
  const outShape = x.shape.map((d, i) => d + attrs.paddings[i][0] + attrs.paddings[i][1]);
  const out = backend.alloc(x.dtype, sizeOf(outShape)).fill(attrs.value);
  const outStrides = stridesOf(outShape);
  const start = attrs.paddings.reduce((acc, [before], d) => acc + before * outStrides[d], 0);
  // Walk the input in order and scatter into the padded interior.
  forEachStrided(x.shape, outStrides, start, (i, o) => {
    out[o] = v[i];
  });
  return backend.output(out, outShape, x.dtype);
}

function concatKernel({ inputs, attrs, backend }: Args<'concat'>): KernelOutput {
  const axis = attrs.axis;
  const first = inputs[0];
  const outShape = [...first.shape];
  outShape[axis] = inputs.reduce((acc, t) => acc + t.shape[axis], 0);
  const out = backend.alloc(first.dtype, sizeOf(outShape));
  const [outer, , inner] = aroundAxis(outShape, axis);
  let offset = 0;
  for (const t of inputs) {
    const v = backend.values(t);
    const chunk = t.shape[axis] * inner;
    for (let o = 0; o < outer; o++) out.set(v.subarray(o * chunk, (o + 1) * chunk), o * outShape[axis] * inner + offset);
    offset += chunk;
  }
  return backend.output(out, outShape, first.dtype);
}

function gatherKernel({ inputs: [table, indices], attrs, backend }: Args<'gather'>): KernelOutput {
  const tv = backend.values(table);
  const iv = backend.values(indices);
  const [outer, len, inner] = aroundAxis(table.shape, attrs.axis);
  const outShape = [...table.shape.slice(0, attrs.axis), ...indices.shape, ...table.shape.slice(attrs.axis + 1)];
  const out = backend.alloc(table.dtype, sizeOf(outShape));
  const count = iv.length;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < count; j++) {
      const src = (o * len + iv[j]) * inner;
      out.set(tv.subarray(src, src + inner), (o * count + j) * inner);
    }
  }
  return backend.output(out, outShape, table.dtype);
}

function scatterAddKernel({ inputs: [indices, updates], attrs, backend }: Args<'scatterAdd'>): KernelOutput {
  const iv = backend.values(indices);
  const uv = backend.values(updates);
  const [outer, len, inner] = aroundAxis(attrs.shape, attrs.axis);
  const out = new Float64Array(sizeOf(attrs.shape));
  const count = iv.length;
  for (let o = 0; o < outer; o++) {
    for (let j = 0; j < count; j++) {
      const dst = (o * len + iv[j]) * inner;
      const src = (o * count + j) * inner;
      for (let q = 0; q < inner; q++) out[dst + q] += uv[src + q];
    }
  }
  return backend.output(out, [...attrs.shape], updates.dtype);
}

/** x with dropout applied (scaled by 1/(1-p)), or x itself when p = 0. */
export function dropoutInput(x: Floats, dropout: number, seed: number): Floats {
  if (dropout === 0) return x;
  const out = new (x.constructor as Float64ArrayConstructor)(x.length);
  const keepScale = 1 / (1 - dropout);
  for (let i = 0; i < x.length; i++) out[i] = dropoutKeep(seed, i, dropout) ? x[i] * keepScale : 0;
  return out;
}

function transposed(src: Floats, rows: number, cols: number): Floats {
  const out = new (src.constructor as Float64ArrayConstructor)(rows * cols);
  transpose2d(src, 0, rows, cols, out, 0);
  return out;
}

/** W [out, in] of a loraLinear: its values, or with `quant` its packed words dequantized (float64). */
function baseWeight(backend: CpuBackend, w: TensorRef, quantParts: readonly TensorRef[], quant: QuantSpec | null, dtype: DType): Floats {
  if (!quant) return asFloats(backend.values(w), dtype);
  return dequantized(backend, w, quantParts[0], quantParts[1], quant).w;
}

function loraLinearKernel({ inputs, attrs, backend }: Args<'loraLinear'>): OpOutputs['loraLinear'] {
  const [x, w, a, b] = inputs;
  const bias = attrs.hasBias ? inputs[4] : undefined;
  const quantParts = inputs.slice(attrs.hasBias ? 5 : 4);
  const dtype = x.dtype;
  const [m, inF] = x.shape;
  const outF = w.shape[0];
  const r = a.shape[0];
  const xv = asFloats(backend.values(x), dtype);
  const xd = dropoutInput(xv, attrs.dropout, attrs.seed);
  const t = floatArray(dtype, m * r);
  gemmABt(m, r, inF, xd, 0, asFloats(backend.values(a), dtype), 0, t, 0, false);
  const y = floatArray(dtype, m * outF);
  gemmABt(m, outF, inF, xv, 0, baseWeight(backend, w, quantParts, attrs.quant, dtype), 0, y, 0, false);
  const ts = t.map((v) => v * attrs.scale);
  gemmABt(m, outF, r, ts, 0, asFloats(backend.values(b), dtype), 0, y, 0, true);
  if (attrs.hasBias) {
    const bv = backend.values(bias!);
    for (let i = 0; i < m; i++) for (let j = 0; j < outF; j++) y[i * outF + j] += bv[j];
  }
  return { y: backend.output(y, [m, outF], dtype), t: backend.output(t, [m, r], dtype) };
}

function loraLinearBackwardKernel({ inputs, attrs, backend }: Args<'loraLinearBackward'>): OpOutputs['loraLinearBackward'] {
  const [dyRef, xRef, wRef, aRef, bRef, tRef, ...quantParts] = inputs;
  if (attrs.quant && attrs.needWeight)
    throw new ValueError('loraLinearBackward', 'a quantized base has no gradient', 'needWeight false with quant', 'needWeight true');
  const dtype = dyRef.dtype;
  const [m, outF] = dyRef.shape;
  const inF = xRef.shape[1];
  const r = aRef.shape[0];
  const s = attrs.scale;
  const dy = asFloats(backend.values(dyRef), dtype);
  const x = asFloats(backend.values(xRef), dtype);
  const a = asFloats(backend.values(aRef), dtype);
  const b = asFloats(backend.values(bRef), dtype);
  const t = asFloats(backend.values(tRef), dtype);
  const outputs: OpOutputs['loraLinearBackward'] = {};
  // U = s·dy·B  [M, r]
  const u = floatArray(dtype, m * r);
  gemmABt(m, r, outF, dy, 0, transposed(b, outF, r), 0, u, 0, false);
  for (let i = 0; i < u.length; i++) u[i] *= s;
  const dyT = transposed(dy, m, outF);
  if (attrs.needX) {
    const dx = floatArray(dtype, m * inF);
    gemmABt(m, inF, outF, dy, 0, transposed(baseWeight(backend, wRef, quantParts, attrs.quant, dtype), outF, inF), 0, dx, 0, false);
    const lora = floatArray(dtype, m * inF);
    gemmABt(m, inF, r, u, 0, transposed(a, r, inF), 0, lora, 0, false);
    const keepScale = 1 / (1 - attrs.dropout);
    for (let i = 0; i < dx.length; i++) {
      if (attrs.dropout === 0) dx[i] += lora[i];
      else if (dropoutKeep(attrs.seed, i, attrs.dropout)) dx[i] += lora[i] * keepScale;
    }
    outputs.dx = backend.output(dx, [m, inF], dtype);
  }
  if (attrs.needA) {
    const dA = floatArray(dtype, r * inF);
    const xd = dropoutInput(x, attrs.dropout, attrs.seed);
    gemmABt(r, inF, m, transposed(u, m, r), 0, transposed(xd, m, inF), 0, dA, 0, false);
    outputs.dA = backend.output(dA, [r, inF], dtype);
  }
  if (attrs.needB) {
    const dB = floatArray(dtype, outF * r);
    gemmABt(outF, r, m, dyT, 0, transposed(t, m, r), 0, dB, 0, false);
    for (let i = 0; i < dB.length; i++) dB[i] *= s;
    outputs.dB = backend.output(dB, [outF, r], dtype);
  }
  if (attrs.needWeight) {
    const dW = floatArray(dtype, outF * inF);
    gemmABt(outF, inF, m, dyT, 0, transposed(x, m, inF), 0, dW, 0, false);
    outputs.dWeight = backend.output(dW, [outF, inF], dtype);
  }
  if (attrs.needBias) {
    const dBias = new Float64Array(outF);
    for (let i = 0; i < m; i++) for (let j = 0; j < outF; j++) dBias[j] += dy[i * outF + j];
    outputs.dBias = backend.output(dBias, [outF], dtype);
  }
  return outputs;
}

/** Registers every CPU reference kernel. Called once when the package loads. */
export function registerCpuKernels(): void {
  for (const [op, fn] of Object.entries(unaryFns)) registerKernel('cpu', op as UnaryOp, unaryKernel(fn));
  registerKernel<'gelu', CpuBackend>('cpu', 'gelu', (args) => unaryKernel((x) => gelu(x, args.attrs.approximate))(args));
  for (const op of Object.keys(binaryFns) as BinaryOp[]) registerKernel('cpu', op, binaryKernel(op));
  registerKernel('cpu', 'where', whereKernel);
  registerKernel('cpu', 'cast', castKernel);
  registerKernel('cpu', 'sum', reduceKernel('sum'));
  registerKernel('cpu', 'max', reduceKernel('max'));
  registerKernel('cpu', 'softmax', softmaxKernel(false));
  registerKernel('cpu', 'logSoftmax', softmaxKernel(true));
  registerKernel('cpu', 'matmul', matmulKernel);
  registerKernel('cpu', 'broadcastTo', broadcastToKernel);
  registerKernel('cpu', 'transpose', transposeKernel);
  registerKernel('cpu', 'slice', sliceKernel);
  registerKernel('cpu', 'pad', padKernel);
  registerKernel('cpu', 'concat', concatKernel);
  registerKernel('cpu', 'writeSlice', writeSliceKernel);
  registerKernel('cpu', 'gather', gatherKernel);
  registerKernel('cpu', 'scatterAdd', scatterAddKernel);
  registerKernel('cpu', 'loraLinear', loraLinearKernel);
  registerKernel('cpu', 'loraLinearBackward', loraLinearBackwardKernel);
  registerKernel('cpu', 'softmaxCrossEntropy', crossEntropyKernel);
  registerKernel('cpu', 'softmaxCrossEntropyBackward', crossEntropyBackwardKernel);
  registerKernel('cpu', 'adamUpdate', adamUpdateKernel);
  registerKernel('cpu', 'adamUpdateInPlace', adamUpdateInPlaceKernel);
  registerKernel('cpu', 'dequantize', dequantizeKernel);
  registerKernel('cpu', 'quantize', quantizeKernel);
  registerKernel('cpu', 'quantizedMatmul', quantizedMatmulKernel);
  registerCpuBlockKernels();
}

export type { TensorRef };
export { cpuBackend };
