import type { KernelOutput, TensorRef } from '../backend';
import type { DType } from '../dtype';
import type { QuantSpec } from '../quantize';

/**
 * Every op of the library, with the attributes its kernels receive. A backend registers kernels
 * under these names; the user-facing functions in `ops/` validate input and dispatch here.
 * Inputs are listed in the comment: kernels may assume they were validated.
 */
export interface OpAttrs {
  // elementwise unary: [x]
  neg: Record<string, never>;
  exp: Record<string, never>;
  log: Record<string, never>;
  sqrt: Record<string, never>;
  tanh: Record<string, never>;
  sigmoid: Record<string, never>;
  silu: Record<string, never>;
  relu: Record<string, never>;
  erf: Record<string, never>;
  abs: Record<string, never>;
  /** Gaussian error linear unit: exact (erf) or the tanh approximation. */
  gelu: { approximate: 'none' | 'tanh' };
  // elementwise binary with broadcasting: [a, b]
  add: Record<string, never>;
  sub: Record<string, never>;
  mul: Record<string, never>;
  div: Record<string, never>;
  pow: Record<string, never>;
  maximum: Record<string, never>;
  equal: Record<string, never>;
  greater: Record<string, never>;
  less: Record<string, never>;
  // [cond, a, b], broadcast
  where: Record<string, never>;
  cast: { dtype: DType };
  // reductions: [x]; axes sorted, non-negative
  sum: { axes: number[]; keepDims: boolean };
  max: { axes: number[]; keepDims: boolean };
  // along one non-negative axis: [x]
  softmax: { axis: number };
  logSoftmax: { axis: number };
  // [a, b]: a [...batch, M, K] (or [..., K, M] with transposeA), b [...batch, K, N] (or [..., N, K])
  matmul: { transposeA: boolean; transposeB: boolean };
  // layout: [x] (reshape is metadata only: no kernel)
  broadcastTo: { shape: number[] };
  transpose: { perm: number[] };
  slice: { begin: number[]; size: number[] };
  pad: { paddings: [number, number][]; value: number };
  concat: { axis: number };
  // [table, indices int32]
  gather: { axis: number };
  // [indices int32, updates]: zeros of `shape` with updates added at indices along axis
  scatterAdd: { axis: number; shape: number[] };
  /**
   * [x [M, in], weight [out, in], loraA [r, in], loraB [out, r], bias? [out] (hasBias), then with
   * `quant` scales and biases [out, in/groupSize] (weight: the packed int32 words [out, in·bits/32]
   * of an MLX affine-quantized W)] → [y [M, out], t [M, r]] with t = dropout(x)·Aᵀ and
   * y = x·Wᵀ + bias + scale·t·Bᵀ.
   */
  loraLinear: { scale: number; dropout: number; seed: number; hasBias: boolean; quant: QuantSpec | null };
  /**
   * [dy [M, out], x [M, in], weight, loraA, loraB, t [M, r], then with `quant` scales and biases] →
   * those requested, by name (`OpOutputs`): dx [M, in], dA [r, in], dB [out, r], dWeight [out, in]
   * (never with `quant`), dBias [out].
   */
  loraLinearBackward: {
    quant: QuantSpec | null;
    scale: number;
    dropout: number;
    seed: number;
    needX: boolean;
    needA: boolean;
    needB: boolean;
    needWeight: boolean;
    needBias: boolean;
  };
  /** [x [rows, D], weight [D]] → [y [rows, D], rstd [rows]] (`rmsNorm`; `offset`: scale by 1 + weight). */
  rmsNorm: { eps: number; offset: boolean };
  /** [dy [rows, D], x [rows, D], weight [D], rstd [rows]] → [dx [rows, D]]. */
  rmsNormBackward: { offset: boolean };
  /** [x [rows, D], residual [rows, D], weight [D]] → [sum = x + residual, y = rmsNorm(sum)] (`addRmsNorm`). */
  addRmsNorm: { eps: number; offset: boolean };
  /**
   * [x, cos, sin ([T, R] or [B, 1, T, R])] → [y]: x is [B, H, T, Dh] ([B, T, H, Dh] with
   * `transposeIn`), y likewise with `transposeOut`; `inverse`: the transposed rotation.
   */
  rope: { inverse: boolean; transposeIn: boolean; transposeOut: boolean };
  /** [x [..., T, S], mask [T, S] or [B, 1, …, 1, T, S]] → [softmax(x·scale + mask)] over the last axis. */
  maskedSoftmax: { scale: number };
  /** [dy, y] → [dx = scale·y·(dy − Σ dy·y)], rows of the last axis. */
  maskedSoftmaxBackward: { scale: number };
  /** [gate, up] (one shape) → [act(gate)·up]. */
  gatedActivation: { activation: 'silu' | 'gelu_tanh' };
  /** [dy, gate, up] → [dGate, dUp]. */
  gatedActivationBackward: { activation: 'silu' | 'gelu_tanh' };
  /** [logits [N, V], targets int32 [N], weights [N]] → [loss [N], logsumexp [N]] (`softmaxCrossEntropy`). */
  softmaxCrossEntropy: Record<string, never>;
  /** [logits [N, V], targets [N], weights [N], logsumexp [N], dloss [N]] → [dlogits [N, V]]. */
  softmaxCrossEntropyBackward: Record<string, never>;
  /**
   * [param, grad, m, v] (one shape, one float dtype) → [param', m', v']: one Adam/AdamW step
   * (`adamUpdate`); bias corrections from `step` (≥ 1).
   */
  adamUpdate: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean; step: number };
  /**
   * [q [B, H, R, D], k [B, H, S, D], v [B, H, S, D], mask [T, S] or [B, 1, 1, T, S]] →
   * [softmax(q·kᵀ·scale + mask)·v [B, H, R, D]], query row r at position r mod T (`decodeAttention`).
   */
  decodeAttention: { scale: number };
  /**
   * [q [B, H, R, D], k [B, H, S, D], v [B, H, S, D], mask [T, S] or [B, 1, 1, T, S]] →
   * [y [B, H, R, D], lse [B, H, R] (float32; float64 for float64 inputs)]: `decodeAttention`'s formula, differentiable, with the
   * rows' log-sum-exp for backward; `causal` leaves out keys past t + S − T (`attention`).
   */
  attention: { scale: number; causal: boolean };
  /** [q, k, v, mask, y, lse, dy] → [dq, dk, dv]. */
  attentionBackward: { scale: number; causal: boolean };
  /**
   * [param, grad, m, v, copy?, schedule?] → []: the same step written into param, m and v, and
   * rounded into copy when given (grad in param's or copy's dtype); with `schedule` (last, float32
   * [4]: lr, decay, c1, c2 as `adamSchedule` gives them) the step's values are read from it
   * instead of lr and step (`adamUpdateInPlace`).
   */
  adamUpdateInPlace: OpAttrs['adamUpdate'] & { schedule: boolean };
  /**
   * [weight int32 [R, C·bits/32], scales [R, C/groupSize], biases (as scales)] → [W [R, C] in
   * scales' dtype]: MLX affine dequantization `scale·q + bias` (`dequantize`).
   */
  dequantize: { bits: number; groupSize: number };
  /**
   * [w float [R, C]] → { weight int32 [R, C·bits/32], scales [R, C/groupSize] and biases in w's
   * dtype }: MLX affine quantization (`quantize`, `quantizeAsync`). A group holding a value that is
   * not finite gets a NaN scale where the kernel cannot throw (GPU); the caller reports it.
   */
  quantize: { bits: number; groupSize: number };
  /**
   * [x [..., C or R], weight, scales, biases (as `dequantize`)] → [x·Wᵀ [..., R] (transpose) or
   * x·W [..., C]] with W dequantized as it is read (`quantizedMatmul`).
   */
  quantizedMatmul: { bits: number; groupSize: number; transpose: boolean };
  /** [target, values, start int32 [1]] → []: values written into target along `axis` from index start (`writeSlice`). */
  writeSlice: { axis: number };
  /**
   * [keys, values [B, H, S, D], k, v [B, T, H, D], start int32 [1], cos?, sin? ([T, R] or
   * [B, 1, T, R])] → []: k (rotated by the tables when given) and v written into keys and values
   * at slots start.. (`writeKV`).
   */
  writeKV: Record<string, never>;
}

export type OpName = keyof OpAttrs;

type R = TensorRef;

/** Each op's kernel inputs, in order (the comments above say their shapes; kernels may assume them validated). */
export type OpInputs = { [K in UnaryOp]: readonly [x: R] } & { [K in BinaryOp]: readonly [a: R, b: R] } & {
  where: readonly [cond: R, a: R, b: R];
  cast: readonly [x: R];
  sum: readonly [x: R];
  max: readonly [x: R];
  softmax: readonly [x: R];
  logSoftmax: readonly [x: R];
  matmul: readonly [a: R, b: R];
  broadcastTo: readonly [x: R];
  transpose: readonly [x: R];
  slice: readonly [x: R];
  pad: readonly [x: R];
  concat: readonly R[];
  gather: readonly [table: R, indices: R];
  scatterAdd: readonly [indices: R, updates: R];
  loraLinear: readonly [x: R, weight: R, loraA: R, loraB: R, ...biasThenQuant: R[]];
  loraLinearBackward: readonly [dy: R, x: R, weight: R, loraA: R, loraB: R, t: R, ...quant: R[]];
  rmsNorm: readonly [x: R, weight: R];
  rmsNormBackward: readonly [dy: R, x: R, weight: R, rstd: R];
  addRmsNorm: readonly [x: R, residual: R, weight: R];
  rope: readonly [x: R, cos: R, sin: R];
  maskedSoftmax: readonly [x: R, mask: R];
  decodeAttention: readonly [q: R, k: R, v: R, mask: R];
  attention: readonly [q: R, k: R, v: R, mask: R];
  attentionBackward: readonly [q: R, k: R, v: R, mask: R, y: R, lse: R, dy: R];
  maskedSoftmaxBackward: readonly [dy: R, y: R];
  gatedActivation: readonly [gate: R, up: R];
  gatedActivationBackward: readonly [dy: R, gate: R, up: R];
  softmaxCrossEntropy: readonly [logits: R, targets: R, weights: R];
  softmaxCrossEntropyBackward: readonly [logits: R, targets: R, weights: R, logsumexp: R, dloss: R];
  adamUpdate: readonly [param: R, grad: R, m: R, v: R];
  adamUpdateInPlace: readonly [param: R, grad: R, m: R, v: R, ...copyAndSchedule: R[]];
  dequantize: readonly [weight: R, scales: R, biases: R];
  quantize: readonly [w: R];
  quantizedMatmul: readonly [x: R, weight: R, scales: R, biases: R];
  writeSlice: readonly [target: R, values: R, start: R];
  writeKV: readonly [keys: R, values: R, k: R, v: R, start: R, cos?: R, sin?: R];
};

type O = KernelOutput;

/** The outputs of the ops with more than one (or none), by name; every other op has one output. */
export interface OpOutputs {
  loraLinear: { y: O; t: O };
  /** Those requested by the `need…` attributes. */
  loraLinearBackward: { dx?: O; dA?: O; dB?: O; dWeight?: O; dBias?: O };
  rmsNorm: { y: O; rstd: O };
  attention: { y: O; lse: O };
  attentionBackward: { dq: O; dk: O; dv: O };
  addRmsNorm: { sum: O; y: O };
  gatedActivationBackward: { dGate: O; dUp: O };
  softmaxCrossEntropy: { loss: O; logsumexp: O };
  adamUpdate: { param: O; m: O; v: O };
  quantize: { weight: O; scales: O; biases: O };
  /** Written into its inputs. */
  adamUpdateInPlace: Record<string, never>;
  /** Written into its target. */
  writeSlice: Record<string, never>;
  /** Written into keys and values. */
  writeKV: Record<string, never>;
}

/** An op whose kernel returns a named record (`OpOutputs`); the others return their one output. */
export type NamedOutputOp = keyof OpOutputs;

/** What `op`'s kernel returns: the named record of a multi-output op, else its one output. */
export type OpResult<K extends OpName, Out = KernelOutput> = K extends NamedOutputOp ? { [N in keyof OpOutputs[K]]: Out } : Out;

/** One op's whole contract: its inputs, attributes and result (what `registerKernel` types a kernel by). */
export interface OpSpec<K extends OpName> {
  inputs: OpInputs[K];
  attrs: OpAttrs[K];
  result: OpResult<K>;
}

/**
 * The inputs of an Adam kernel by role: `[param, grad, m, v]`, then the half copy where there is
 * one and the schedule last where `scheduled` (the op's `schedule` attribute; as `adamUpdateInPlace`
 * passes them).
 */
export function adamOperands<R>(inputs: readonly R[], scheduled: boolean): { param: R; grad: R; m: R; v: R; copy?: R; schedule?: R } {
  const [param, grad, m, v] = inputs;
  const schedule = scheduled ? inputs[inputs.length - 1] : undefined;
  const copy = inputs.length - (schedule ? 1 : 0) > 4 ? inputs[4] : undefined;
  return { param, grad, m, v, copy, schedule };
}

export const OP_NAMES = [
  'neg',
  'exp',
  'log',
  'sqrt',
  'tanh',
  'sigmoid',
  'silu',
  'relu',
  'erf',
  'abs',
  'gelu',
  'add',
  'sub',
  'mul',
  'div',
  'pow',
  'maximum',
  'equal',
  'greater',
  'less',
  'where',
  'cast',
  'sum',
  'max',
  'softmax',
  'logSoftmax',
  'matmul',
  'broadcastTo',
  'transpose',
  'slice',
  'pad',
  'concat',
  'gather',
  'scatterAdd',
  'loraLinear',
  'loraLinearBackward',
  'rmsNorm',
  'rmsNormBackward',
  'addRmsNorm',
  'rope',
  'maskedSoftmax',
  'maskedSoftmaxBackward',
  'decodeAttention',
  'attention',
  'attentionBackward',
  'gatedActivation',
  'gatedActivationBackward',
  'softmaxCrossEntropy',
  'softmaxCrossEntropyBackward',
  'adamUpdate',
  'adamUpdateInPlace',
  'dequantize',
  'quantize',
  'quantizedMatmul',
  'writeSlice',
  'writeKV',
] as const satisfies readonly OpName[];

export const UNARY_OPS = ['neg', 'exp', 'log', 'sqrt', 'tanh', 'sigmoid', 'silu', 'relu', 'erf', 'abs', 'gelu'] as const;
export type UnaryOp = (typeof UNARY_OPS)[number];
export const BINARY_OPS = ['add', 'sub', 'mul', 'div', 'pow', 'maximum', 'equal', 'greater', 'less'] as const;
export type BinaryOp = (typeof BINARY_OPS)[number];
