import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { DTypeError, ShapeError, ValueError } from '../errors';
import { nextSeed } from '../random';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { quantSpec } from '../quantize';
import { assertFloat, assertSameDType, assertTensor } from './helpers';
import { checkPacked } from './quantized';
import { reshape } from './layout';

// Gradients: ops/gradients.ts.

export interface LoraLinearOptions {
  /** Multiplies the low-rank branch: `alpha / rank` in PEFT, `scale` in MLX. */
  scale: number;
  /** `[out]`, added to the output. */
  bias?: Tensor;
  /** Dropout probability on the LoRA branch's input, in [0, 1). Default 0. */
  dropout?: number;
  /**
   * Seed of the dropout mask (a pure function of seed and element index, regenerated in backward).
   * Default: drawn from the global generator on each call.
   */
  seed?: number;
  /**
   * The base is MLX affine-quantized (QLoRA): `weight` holds its packed int32 words
   * `[out, in·bits/32]` and these its scales and biases `[out, in/groupSize]` (constants, in the
   * activations' dtype). W is read from its packed words by the kernels, never made whole.
   */
  quant?: { scales: Tensor; biases: Tensor; bits: number; groupSize: number };
}

/**
 * The LoRA linear layer as one op: `y = x·Wᵀ + bias + scale·(dropout(x)·Aᵀ)·Bᵀ`.
 * x: `[..., in]`, weight: `[out, in]`, loraA: `[rank, in]`, loraB: `[out, rank]` → `[..., out]`.
 * Backends register fused kernels for it; the CPU reference is the unfused composition. The
 * low-rank product `dropout(x)·Aᵀ` is kept for the backward pass, which computes dx, dA, dB (and
 * dWeight, dBias when they require grad) in one `loraLinearBackward` op.
 *
 * @example
 * const y = loraLinear(x, w, a, b, { scale: 16 / 8, dropout: 0.05 });
 * // A 4-bit base (QLoRA): w the packed words of `quantize(...)`.
 * const yq = loraLinear(x, q.weight, a, b, { scale: 2, quant: { scales: q.scales, biases: q.biases, bits: 4, groupSize: 64 } });
 */
export function loraLinear(x: Tensor, weight: Tensor, loraA: Tensor, loraB: Tensor, options: LoraLinearOptions): Tensor {
  const op = 'loraLinear';
  assertTensor(op, x, 'x');
  assertTensor(op, weight, 'weight');
  assertTensor(op, loraA, 'loraA');
  assertTensor(op, loraB, 'loraB');
  const { scale, bias } = options;
  const dropout = options.dropout ?? 0;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new ValueError(op, 'scale must be a finite number', 'e.g. alpha / rank', String(scale));
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1))
    throw new ValueError(op, 'dropout out of range', 'a probability in [0, 1)', String(dropout));
  const quant = options.quant;
  if (quant) {
    assertTensor(op, quant.scales, 'quant.scales');
    assertTensor(op, quant.biases, 'quant.biases');
  } else if (weight.dtype === 'int32')
    throw new DTypeError(
      op,
      'weight holds packed words but no quant was given (a quantized base needs options.quant: its scales, biases, bits and group size)',
      x.dtype,
      'int32',
    );
  const float = [x, loraA, loraB, ...(bias ? [assertTensor(op, bias, 'bias')] : []), ...(quant ? [quant.scales, quant.biases] : [weight])];
  assertSameDType(op, float, ['x', 'loraA', 'loraB', ...(bias ? ['bias'] : []), ...(quant ? ['scales', 'biases'] : ['weight'])]);
  assertFloat(op, x, 'x');
  let outF: number;
  let inF: number;
  const spec = quant ? quantSpec(op, quant) : null;
  if (quant && spec) {
    ({ rows: outF, cols: inF } = checkPacked(op, weight, quant.scales, quant.biases, spec));
    if (weight.requiresGrad || quant.scales.requiresGrad || quant.biases.requiresGrad)
      throw new ValueError(op, 'a quantized base is constant', 'weight, scales and biases without requiresGrad (freeze them)', 'one requiring grad');
  } else {
    if (weight.rank !== 2) throw new ShapeError(op, 'weight must be [out, in]', 'rank 2', formatShape(weight.shape));
    [outF, inF] = weight.shape;
  }
  if (x.rank < 1 || x.shape[x.rank - 1] !== inF)
    throw new ShapeError(op, "x's last dimension must equal weight's in-features", `[..., ${inF}]`, formatShape(x.shape));
  if (loraA.rank !== 2 || loraA.shape[1] !== inF || loraA.shape[0] < 1)
    throw new ShapeError(op, 'loraA must be [rank, in]', `[rank, ${inF}]`, formatShape(loraA.shape));
  const rank = loraA.shape[0];
  if (loraB.rank !== 2 || loraB.shape[0] !== outF || loraB.shape[1] !== rank)
    throw new ShapeError(op, 'loraB must be [out, rank]', `[${outF}, ${rank}]`, formatShape(loraB.shape));
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outF)) throw new ShapeError(op, 'bias must be [out]', `[${outF}]`, formatShape(bias.shape));
  const seed = dropout > 0 ? (options.seed ?? nextSeed()) >>> 0 : 0;
  const lead = x.shape.slice(0, -1);
  const x2 = reshape(x, [-1, inF]);
  const parts = quant ? [quant.scales, quant.biases] : [];
  const attrs = { scale, dropout, seed, hasBias: !!bias, quant: spec };
  const { y: y2, t } = runOp(op, [x2, weight, loraA, loraB, ...(bias ? [bias] : []), ...parts], attrs);
  const y = reshape(y2, [...lead, outF]);
  y2.dispose();
  const inputs = bias ? [x, weight, loraA, loraB, bias] : [x, weight, loraA, loraB];
  const needs = inputs.map((i) => i.requiresGrad);
  const result = recordOp(op, y, inputs, { scale, dropout, seed, needs, xShape: x.shape, outFeatures: outF, quant: spec }, [
    x2,
    weight,
    loraA,
    loraB,
    t,
    ...parts,
  ]);
  x2.dispose();
  t.dispose();
  return result;
}
