import { runOp } from '../dispatch';
import { isGradEnabled, recordOp } from '../engine';
import { DTypeError, ShapeError, StateError, ValueError } from '../errors';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertSameDType, assertTensor, freeing } from './helpers';
import { add } from './elementwise';
import { reshape } from './layout';

// Gradients: ops/gradients.ts.

export interface RMSNormOptions {
  eps: number;
  /** Scale by `1 + weight` (Gemma's zero-centred norms) instead of `weight`. Default false. */
  offset?: boolean;
}

/** An RMSNorm's checked feature count and attributes: x `[..., D]`, weight `[D]`, eps ≥ 0. */
function normAttrs(op: string, x: Tensor, weight: Tensor, options: RMSNormOptions): { D: number; eps: number; offset: boolean } {
  if (x.rank < 1) throw new ShapeError(op, 'x must have a feature axis', '[..., D]', formatShape(x.shape));
  const D = x.shape[x.rank - 1];
  if (weight.rank !== 1 || weight.shape[0] !== D) throw new ShapeError(op, "weight must match x's last axis", `[${D}]`, formatShape(weight.shape));
  const { eps } = options;
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0) throw new ValueError(op, 'eps is out of range', 'a finite number ≥ 0', String(eps));
  return { D, eps, offset: options.offset ?? false };
}

/** RoPE's tables checked for B sequences of T positions and heads of `Dh` features: `[T, R]` or `[B, 1, T, R]`, R even, 2 ≤ R ≤ Dh. */
function assertRopeTables(op: string, cos: Tensor, sin: Tensor, B: number, T: number, Dh: number, feature = 'Dh'): void {
  const R = cos.shape[cos.rank - 1];
  const shared = cos.rank === 2 && cos.shape[0] === T;
  const perSequence = cos.rank === 4 && cos.shape[0] === B && cos.shape[1] === 1 && cos.shape[2] === T;
  if (!(shared || perSequence) || R % 2 !== 0 || R < 2 || R > Dh)
    throw new ShapeError(
      op,
      `cos must be [T, R] or [B, 1, T, R] with R even and at most ${feature}`,
      `[${T}, R] or [${B}, 1, ${T}, R], R ≤ ${Dh}`,
      formatShape(cos.shape),
    );
  if (sin.shape.join() !== cos.shape.join()) throw new ShapeError(op, 'sin must have the shape of cos', formatShape(cos.shape), formatShape(sin.shape));
}

/**
 * RMSNorm over the last axis as one op: `y = x / √(mean(x²) + eps) · w` (`w = 1 + weight` with
 * `offset`), x `[..., D]`, weight `[D]`. Backward (`rmsNormBackward`) computes dx in one pass from
 * the saved per-row `1/rms`; dWeight, when the weight trains, is `Σ dy·x/rms` over the rows.
 *
 * @example
 * const y = rmsNorm(x, weight, { eps: 1e-5 });
 */
export function rmsNorm(x: Tensor, weight: Tensor, options: RMSNormOptions): Tensor {
  const op = 'rmsNorm';
  assertTensor(op, x, 'x');
  assertTensor(op, weight, 'weight');
  assertFloat(op, x, 'x');
  assertSameDType(op, [x, weight], ['x', 'weight']);
  const { D, eps, offset } = normAttrs(op, x, weight, options);
  const x2 = reshape(x, [-1, D]);
  const { y: y2, rstd } = runOp(op, [x2, weight], { eps, offset });
  const y = freeing(reshape(y2, x.shape), y2);
  const result = recordOp(op, y, [x, weight], { features: D, xShape: x.shape, offset }, [x2, weight, rstd]);
  x2.dispose();
  rstd.dispose();
  return result;
}

/**
 * A residual add and the RMSNorm that follows it, as one op: `sum = x + residual`, `y =
 * rmsNorm(sum, weight)`, x and residual of one shape `[..., D]`, weight `[D]`. A pre-norm block
 * needs both: the sum carries on as the residual stream and y feeds the next layer. Where
 * gradients are recorded for an input it is the composition (`add`, then `rmsNorm`) and
 * differentiable like them; otherwise one kernel (one workgroup per row on the GPU), which is
 * what a decode step runs.
 *
 * @example
 * const { sum: h, y: normed } = addRmsNorm(x, attentionOut, norm.weight, { eps: 1e-5 });
 */
export function addRmsNorm(x: Tensor, residual: Tensor, weight: Tensor, options: RMSNormOptions): { sum: Tensor; y: Tensor } {
  const op = 'addRmsNorm';
  assertTensor(op, x, 'x');
  assertTensor(op, residual, 'residual');
  assertTensor(op, weight, 'weight');
  assertFloat(op, x, 'x');
  assertSameDType(op, [x, residual, weight], ['x', 'residual', 'weight']);
  if (residual.shape.join() !== x.shape.join())
    throw new ShapeError(op, 'residual must have the shape of x', formatShape(x.shape), formatShape(residual.shape));
  if (isGradEnabled() && [x, residual, weight].some((t) => t.requiresGrad)) {
    const sum = add(x, residual);
    return { sum, y: rmsNorm(sum, weight, options) };
  }
  const { D, eps, offset } = normAttrs(op, x, weight, options);
  const x2 = reshape(x, [-1, D]);
  const r2 = reshape(residual, [-1, D]);
  const { sum, y } = runOp(op, [x2, r2, weight], { eps, offset });
  x2.dispose();
  r2.dispose();
  return { sum: freeing(reshape(sum, x.shape), sum), y: freeing(reshape(y, x.shape), y) };
}

/**
 * Rotary position embedding ("rotate half", as Hugging Face models) as one op, for x
 * `[B, H, T, Dh]` (or, with `layout: 'bthd'`, the projection's `[B, T, H, Dh]`, moved to
 * `[B, H, T, Dh]` by the same kernel) and tables `cos`, `sin` of `[T, R]` (shared by the batch)
 * or `[B, 1, T, R]` (a row per sequence), R even and ≤ Dh: the first R features of each head
 * become `x·cos + rotateHalf(x)·sin`, the rest pass through. `inverse` applies the transposed
 * rotation (the backward pass is this kernel again). Differentiable in x only (the tables are
 * constants). The result is always `[B, H, T, Dh]`.
 */
export function rope(x: Tensor, cos: Tensor, sin: Tensor, options: { inverse?: boolean; layout?: 'bhtd' | 'bthd' } = {}): Tensor {
  const op = 'rope';
  assertTensor(op, x, 'x');
  assertTensor(op, cos, 'cos');
  assertTensor(op, sin, 'sin');
  assertFloat(op, x, 'x');
  assertSameDType(op, [x, cos, sin], ['x', 'cos', 'sin']);
  const layout = options.layout ?? 'bhtd';
  if (layout !== 'bhtd' && layout !== 'bthd') throw new ValueError(op, 'unknown layout', "'bhtd' or 'bthd'", String(layout));
  if (x.rank !== 4) throw new ShapeError(op, `x must be [${layout === 'bhtd' ? 'B, H, T, Dh' : 'B, T, H, Dh'}]`, 'rank 4', formatShape(x.shape));
  const [B, T, Dh] = layout === 'bhtd' ? [x.shape[0], x.shape[2], x.shape[3]] : [x.shape[0], x.shape[1], x.shape[3]];
  assertRopeTables(op, cos, sin, B, T, Dh);
  if (cos.requiresGrad || sin.requiresGrad) throw new ValueError(op, 'the tables are constants', 'cos and sin without requiresGrad', 'a table requiring grad');
  const inverse = options.inverse ?? false;
  const bthd = layout === 'bthd';
  const y = runOp(op, [x, cos, sin], { inverse, transposeIn: bthd, transposeOut: false });
  return recordOp(op, y, [x, cos, sin], { inverse, bthd }, [cos, sin]);
}

/** The gate activations `gatedActivation` fuses: SiLU (SwiGLU) and tanh-approximated GELU (GeGLU). */
export type GateActivation = 'silu' | 'gelu_tanh';

/**
 * The gated feed-forward's middle as one op: `act(gate) · up` (SwiGLU with SiLU, GeGLU with
 * tanh-GELU), gate and up of one shape. Backward (`gatedActivationBackward`) gives both gradients in
 * one pass, recomputing act(gate) rather than storing it.
 */
export function gatedActivation(gate: Tensor, up: Tensor, activation: GateActivation): Tensor {
  const op = 'gatedActivation';
  assertTensor(op, gate, 'gate');
  assertTensor(op, up, 'up');
  assertFloat(op, gate, 'gate');
  assertSameDType(op, [gate, up], ['gate', 'up']);
  if (gate.shape.join() !== up.shape.join()) throw new ShapeError(op, 'up must have the shape of gate', formatShape(gate.shape), formatShape(up.shape));
  if (activation !== 'silu' && activation !== 'gelu_tanh') throw new ValueError(op, 'unknown activation', "'silu' or 'gelu_tanh'", String(activation));
  const y = runOp(op, [gate, up], { activation });
  return recordOp(op, y, [gate, up], { activation }, [gate, up]);
}

/**
 * Attention's softmax as one op: `softmax(x·scale + mask)` over the last axis, for scores x
 * `[..., T, S]` and an additive mask `[T, S]` (shared) or `[B, 1, …, 1, T, S]` (a mask per
 * sequence, B = x's first axis, same rank as x). Neither the scaled nor the masked scores are
 * stored: backward (`maskedSoftmaxBackward`) needs only the output. Differentiable in x only.
 */
export function maskedSoftmax(x: Tensor, mask: Tensor, scale: number): Tensor {
  const op = 'maskedSoftmax';
  assertTensor(op, x, 'x');
  assertTensor(op, mask, 'mask');
  assertFloat(op, x, 'x');
  assertSameDType(op, [x, mask], ['x', 'mask']);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new ValueError(op, 'scale must be a finite number', 'e.g. 1/√headDim', String(scale));
  if (x.rank < 2) throw new ShapeError(op, 'x must be [..., T, S]', 'rank ≥ 2', formatShape(x.shape));
  const [T, S] = x.shape.slice(-2);
  const shared = mask.rank === 2 && mask.shape[0] === T && mask.shape[1] === S;
  const perSequence =
    mask.rank === x.rank &&
    mask.shape[0] === x.shape[0] &&
    mask.shape.slice(1, -2).every((d) => d === 1) &&
    mask.shape[mask.rank - 2] === T &&
    mask.shape[mask.rank - 1] === S;
  if (!shared && !perSequence)
    throw new ShapeError(op, 'mask must be [T, S] or [B, 1, …, 1, T, S]', `[${T}, ${S}] or [${x.shape[0]}, …, ${T}, ${S}]`, formatShape(mask.shape));
  if (mask.requiresGrad) throw new ValueError(op, 'the mask is a constant', 'a mask without requiresGrad', 'a mask requiring grad');
  const y = runOp(op, [x, mask], { scale });
  return recordOp(op, y, [x, mask], { scale }, [y]);
}

/** Checks attention's operands (`decodeAttention`, `attention`): q `[B, H, R, D]`, k and v `[B, H, S, D]`, the mask `[T, S]` or `[B, 1, 1, T, S]` with T dividing R, S ≥ 1. */
function checkAttention(op: string, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number): void {
  for (const [t, name] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [mask, 'mask'],
  ] as const)
    assertTensor(op, t, name);
  assertFloat(op, q, 'q');
  assertSameDType(op, [q, k, v, mask], ['q', 'k', 'v', 'mask']);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new ValueError(op, 'scale must be a finite number', 'e.g. 1/√headDim', String(scale));
  if (q.rank !== 4) throw new ShapeError(op, 'q must be [B, H, R, D]', 'rank 4', formatShape(q.shape));
  const [B, H, R, D] = q.shape;
  const S = k.shape[2];
  if (k.rank !== 4 || k.shape[0] !== B || k.shape[1] !== H || k.shape[3] !== D)
    throw new ShapeError(op, "k must be [B, H, S, D] with q's B, H and D", `[${B}, ${H}, S, ${D}]`, formatShape(k.shape));
  if (v.shape.join() !== k.shape.join()) throw new ShapeError(op, 'v must have the shape of k', formatShape(k.shape), formatShape(v.shape));
  const T = mask.shape[mask.rank - 2];
  const shared = mask.rank === 2 && mask.shape[1] === S;
  const perSequence = mask.rank === 5 && mask.shape[0] === B && mask.shape[1] === 1 && mask.shape[2] === 1 && mask.shape[4] === S;
  if (!(shared || perSequence) || !(T >= 1) || R % T !== 0)
    throw new ShapeError(
      op,
      "mask must be [T, S] or [B, 1, 1, T, S] with T dividing q's rows",
      `[T, ${S}] or [${B}, 1, 1, T, ${S}], T | ${R}`,
      formatShape(mask.shape),
    );
  if (S < 1) throw new ShapeError(op, 'there must be at least one key', 'S ≥ 1', String(S));
}

/**
 * Attention of a few query rows over a cache of keys, as one op (generation's decode step):
 * `softmax(q·kᵀ·scale + mask)·v` for each batch entry and KV head, with q `[B, H, R, D]` (the R =
 * g·T rows of the g query heads sharing one KV head, row r at position r mod T), k and v
 * `[B, H, S, D]` and an additive mask `[T, S]` (shared) or `[B, 1, 1, T, S]` (per sequence), as
 * `maskedSoftmax` takes it. Returns `[B, H, R, D]`; the scores are never stored (on the GPU: one
 * workgroup per query row). Inference only: refused while gradients are recorded.
 */
export function decodeAttention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number): Tensor {
  const op = 'decodeAttention';
  checkAttention(op, q, k, v, mask, scale);
  if (isGradEnabled() && [q, k, v, mask].some((t) => t.requiresGrad))
    throw new StateError(op, 'the op has no gradient; expected it under noGrad() (generation), got gradients recorded');
  return runOp(op, [q, k, v, mask], { scale });
}

/**
 * Causal self-attention's core as one differentiable op, flash style: `softmax(q·kᵀ·scale +
 * mask)·v` for each batch entry and KV head, with q `[B, H, R, D]` (the R = g·T rows of the g
 * query heads sharing a KV head, row r at position r mod T), k and v `[B, H, S, D]` and an
 * additive mask `[T, S]` (shared) or `[B, 1, 1, T, S]` (per sequence: padding, packed documents,
 * sliding windows). With `causal`, keys past a row's position (j > t + S − T) are left out whatever
 * the mask says, and the GPU kernels skip them. Returns `[B, H, R, D]`. The `[B, H, R, S]` scores
 * and probabilities are never stored: forward keeps each row's log-sum-exp, and backward
 * (`attentionBackward`) recomputes the probabilities from it a block at a time. A score at or below
 * −3·10³⁸ counts as −∞ (left out), and a row that sees no key gives zeros and no gradient. Differentiable in q, k and v; on
 * webgpu heads of at most 256 features.
 *
 * @example
 * const rows = attention(reshape(q, [B, kvHeads, g * T, D]), k, v, mask, D ** -0.5, { causal: true });
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number, options: { causal?: boolean } = {}): Tensor {
  const op = 'attention';
  checkAttention(op, q, k, v, mask, scale);
  const causal = options.causal ?? false;
  if (typeof causal !== 'boolean') throw new ValueError(op, 'causal must be a boolean', 'true or false', String(causal));
  if (mask.requiresGrad) throw new ValueError(op, 'the mask is a constant', 'a mask without requiresGrad', 'a mask requiring grad');
  if (q.shape[2] < 1) throw new ShapeError(op, 'q must have at least one row', 'R ≥ 1', formatShape(q.shape));
  const { y, lse } = runOp(op, [q, k, v, mask], { scale, causal });
  const result = recordOp(op, y, [q, k, v, mask], { scale, causal }, [q, k, v, mask, y, lse]);
  lse.dispose();
  return result;
}

/**
 * A step's keys and values written into a KV cache of fixed capacity, in place and as one op:
 * `keys[b, h, start + t] = rope(k)[b, t, h]` (k as is without `rotary`) and `values[b, h, start +
 * t] = v[b, t, h]`, for k and v in the projection's layout `[B, T, H, D]` and a cache `[B, H, S,
 * D]`; `start` is an int32 tensor of one element, read where the kernel runs (so a captured step
 * serves every position). The tables are `rope`'s: `[T, R]` or `[B, 1, T, R]`, R even and ≤ D.
 * What `rope`, `transpose` and two `writeSlice`s do, in one dispatch on the GPU. Like
 * `writeSlice`, the CPU refuses a start that puts the slots past the end and the GPU writes only
 * those that fit. Inference only: refused while gradients are recorded for any input.
 *
 * @example
 * writeKV(cache.k, cache.v, kProjected, vProjected, position, { cos, sin });
 */
export function writeKV(keys: Tensor, values: Tensor, k: Tensor, v: Tensor, start: Tensor, rotary?: { cos: Tensor; sin: Tensor }): void {
  const op = 'writeKV';
  for (const [t, name] of [
    [keys, 'keys'],
    [values, 'values'],
    [k, 'k'],
    [v, 'v'],
    [start, 'start'],
  ] as const)
    assertTensor(op, t, name);
  assertFloat(op, keys, 'keys');
  assertSameDType(op, [keys, values, k, v], ['keys', 'values', 'k', 'v']);
  if (keys.rank !== 4) throw new ShapeError(op, 'keys must be [B, H, S, D]', 'rank 4', formatShape(keys.shape));
  const [B, H, S, D] = keys.shape;
  if (values.shape.join() !== keys.shape.join())
    throw new ShapeError(op, 'values must have the shape of keys', formatShape(keys.shape), formatShape(values.shape));
  const T = k.shape[1];
  if (k.rank !== 4 || k.shape[0] !== B || k.shape[2] !== H || k.shape[3] !== D || !(T <= S))
    throw new ShapeError(op, "k must be [B, T, H, D] with the cache's B, H and D and T ≤ S", `[${B}, ≤ ${S}, ${H}, ${D}]`, formatShape(k.shape));
  if (v.shape.join() !== k.shape.join()) throw new ShapeError(op, 'v must have the shape of k', formatShape(k.shape), formatShape(v.shape));
  if (start.dtype !== 'int32') throw new DTypeError(op, 'start must hold an int32 index', 'int32', start.dtype);
  if (start.size !== 1) throw new ShapeError(op, 'start must have one element', '[1]', formatShape(start.shape));
  const inputs = [keys, values, k, v, start];
  if (rotary) {
    const { cos, sin } = rotary;
    assertTensor(op, cos, 'cos');
    assertTensor(op, sin, 'sin');
    assertSameDType(op, [keys, cos, sin], ['keys', 'cos', 'sin']);
    assertRopeTables(op, cos, sin, B, T, D, 'D');
    inputs.push(cos, sin);
  }
  if (isGradEnabled() && inputs.some((t) => t.requiresGrad))
    throw new StateError(op, 'a tensor requires grad and gradients are being recorded; expected the write under noGrad(), got it outside');
  const cache = [keys, values].map((t) => t.ref(op).data);
  if (cache[0] === cache[1] || [k, v].some((t) => cache.includes(t.ref(op).data)))
    throw new ValueError(op, 'the cache must not share storage with itself or with k and v', 'distinct storages', 'shared storage');
  runOp(op, inputs, {});
}
