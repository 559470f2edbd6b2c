import { runOp } from '../dispatch';
import { isGradEnabled, recordOp } from '../engine';
import { ShapeError, StateError, ValueError } from '../errors';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertSameDType, assertTensor, freeing } from './helpers';
import { reshape } from './layout';

// Gradients: ops/gradients.ts.

export interface RMSNormOptions {
  eps: number;
  /** Scale by `1 + weight` (Gemma's zero-centred norms) instead of `weight`. Default false. */
  offset?: boolean;
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
  const D = x.shape[x.rank - 1];
  if (x.rank < 1) throw new ShapeError(op, 'x must have a feature axis', '[..., D]', formatShape(x.shape));
  if (weight.rank !== 1 || weight.shape[0] !== D) throw new ShapeError(op, "weight must match x's last axis", `[${D}]`, formatShape(weight.shape));
  const { eps } = options;
  if (typeof eps !== 'number' || !Number.isFinite(eps) || eps < 0) throw new ValueError(op, 'eps is out of range', 'a finite number ≥ 0', String(eps));
  const offset = options.offset ?? false;
  const x2 = reshape(x, [-1, D]);
  const { y: y2, rstd } = runOp(op, [x2, weight], { eps, offset });
  const y = freeing(reshape(y2, x.shape), y2);
  const result = recordOp(op, y, [x, weight], { features: D, xShape: x.shape, offset }, [x2, weight, rstd]);
  x2.dispose();
  rstd.dispose();
  return result;
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
  const R = cos.shape[cos.rank - 1];
  const shared = cos.rank === 2 && cos.shape[0] === T;
  const perSequence = cos.rank === 4 && cos.shape[0] === B && cos.shape[1] === 1 && cos.shape[2] === T;
  if (!(shared || perSequence) || R % 2 !== 0 || R < 2 || R > Dh)
    throw new ShapeError(
      op,
      'cos must be [T, R] or [B, 1, T, R] with R even and at most Dh',
      `[${T}, R] or [${B}, 1, ${T}, R], R ≤ ${Dh}`,
      formatShape(cos.shape),
    );
  if (sin.shape.join() !== cos.shape.join()) throw new ShapeError(op, 'sin must have the shape of cos', formatShape(cos.shape), formatShape(sin.shape));
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
  if (isGradEnabled() && [q, k, v, mask].some((t) => t.requiresGrad))
    throw new StateError(op, 'the op has no gradient; expected it under noGrad() (generation), got gradients recorded');
  return runOp(op, [q, k, v, mask], { scale });
}
