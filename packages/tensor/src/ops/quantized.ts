import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { DTypeError, ShapeError, ValueError } from '../errors';
import { checkQuantColumns, packedWords, type QuantizeOptions, type QuantSpec, quantizeAffine, quantSpec } from '../quantize';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertTensor } from './helpers';

// Gradients: ops/gradients.ts.

/** A quantized weight as MLX stores it: packed int32 words, and a scale and bias per group. */
export interface QuantizedWeight {
  /** int32 `[rows, cols·bits/32]`: the q values packed LSB-first (the file's U32 bits). */
  weight: Tensor;
  /** `[rows, cols/groupSize]`, the model's float dtype. */
  scales: Tensor;
  /** Same shape and dtype as `scales`. */
  biases: Tensor;
}

/** Checks a packed weight against its spec; returns its rows and unpacked columns. */
export function checkPacked(op: string, weight: Tensor, scales: Tensor, biases: Tensor, spec: QuantSpec): { rows: number; cols: number } {
  assertTensor(op, weight, 'weight');
  assertTensor(op, scales, 'scales');
  assertTensor(op, biases, 'biases');
  if (weight.dtype !== 'int32') throw new DTypeError(op, 'weight must hold packed int32 words', 'int32', weight.dtype);
  assertFloat(op, scales, 'scales');
  if (biases.dtype !== scales.dtype) throw new DTypeError(op, "biases must be in scales' dtype", scales.dtype, biases.dtype);
  if (weight.rank !== 2) throw new ShapeError(op, 'weight must be a matrix of packed rows', '[rows, words]', formatShape(weight.shape));
  const [rows, words] = weight.shape;
  if (scales.rank !== 2 || scales.shape[0] !== rows)
    throw new ShapeError(op, 'scales must have one row per weight row', `[${rows}, groups]`, formatShape(scales.shape));
  if (biases.shape.join() !== scales.shape.join())
    throw new ShapeError(op, 'biases must have the shape of scales', formatShape(scales.shape), formatShape(biases.shape));
  const cols = scales.shape[1] * spec.groupSize;
  checkQuantColumns(op, cols, spec);
  if (words !== packedWords(cols, spec.bits))
    throw new ShapeError(
      op,
      `weight's packed width does not match ${scales.shape[1]} groups of ${spec.groupSize} at ${spec.bits} bits`,
      `[${rows}, ${packedWords(cols, spec.bits)}]`,
      formatShape(weight.shape),
    );
  return { rows, cols };
}

/** The constants must not ask for gradients: nothing can train packed integers. */
function refuseGrad(op: string, weight: Tensor, scales: Tensor, biases: Tensor): void {
  if (weight.requiresGrad || scales.requiresGrad || biases.requiresGrad)
    throw new ValueError(op, 'the quantized weight, scales and biases are constants', 'tensors without requiresGrad (freeze them)', 'one requiring grad');
}

/**
 * The float weights `[rows, cols]` of an MLX affine-quantized matrix (`mx.dequantize`): for each
 * group of `groupSize` columns, `scale·q + bias`, in scales' dtype.
 */
export function dequantize(weight: Tensor, scales: Tensor, biases: Tensor, options: QuantizeOptions = {}): Tensor {
  const op = 'dequantize';
  const spec = quantSpec(op, options);
  checkPacked(op, weight, scales, biases, spec);
  refuseGrad(op, weight, scales, biases);
  return runOp(op, [weight, scales, biases], spec);
}

/**
 * `x·Wᵀ` (`transpose`, the default: a Linear layer, W `[out, in]`, x `[..., in]`) or `x·W` (x
 * `[..., out]`: the gradient's direction) with W an MLX affine-quantized matrix, dequantized as it
 * is read (`mx.quantized_matmul`); x in scales' dtype. Differentiable in x.
 */
export function quantizedMatmul(x: Tensor, weight: Tensor, scales: Tensor, biases: Tensor, options: QuantizeOptions & { transpose?: boolean } = {}): Tensor {
  const op = 'quantizedMatmul';
  const spec = quantSpec(op, options);
  const transpose = options.transpose ?? true;
  assertTensor(op, x, 'x');
  const { rows, cols } = checkPacked(op, weight, scales, biases, spec);
  refuseGrad(op, weight, scales, biases);
  if (x.dtype !== scales.dtype) throw new DTypeError(op, "x must be in scales' dtype", scales.dtype, x.dtype);
  if (x.rank < 1) throw new ShapeError(op, 'x must have a feature axis', '[..., features]', formatShape(x.shape));
  const features = transpose ? cols : rows;
  if (x.shape[x.rank - 1] !== features)
    throw new ShapeError(op, `x's last axis must match the weight's ${transpose ? 'input' : 'output'} dimension`, `[..., ${features}]`, formatShape(x.shape));
  const attrs = { ...spec, transpose };
  const y = runOp(op, [x, weight, scales, biases], attrs);
  return recordOp(op, y, [x, weight, scales, biases], attrs, [weight, scales, biases]);
}

/**
 * MLX's affine quantization of a float matrix `[rows, cols]` (`mx.quantize`): packed int32 words
 * and scales and biases in w's dtype, on w's backend (the `quantize` kernel: f32 arithmetic). For
 * backends that read synchronously (the CPU backend); {@link quantizeAsync} works on every backend.
 */
export function quantize(w: Tensor, options: QuantizeOptions = {}): QuantizedWeight {
  const op = 'quantize';
  checkQuantizable(op, w, options);
  if (!w.backend.readSync) throw new ValueError(op, 'this backend reads asynchronously', 'quantizeAsync on webgpu', 'a synchronous call');
  return runOp(op, [w], quantSpec(op, options));
}

/**
 * {@link quantize} for every backend: on webgpu the weight is quantized where it is, on the GPU
 * (nothing is read back but the scales, to report a value that is not finite).
 */
export async function quantizeAsync(w: Tensor, options: QuantizeOptions = {}): Promise<QuantizedWeight> {
  const op = 'quantize';
  checkQuantizable(op, w, options);
  const spec = quantSpec(op, options);
  const q = runOp(op, [w], spec);
  if (w.backend.readSync) return q;
  // A GPU kernel cannot throw: a group holding a value that is not finite, or whose range float32
  // cannot hold, got a NaN scale. The host quantization then names the value or the group.
  if (!(await q.scales.data()).every((v) => !Number.isNaN(v))) {
    try {
      quantizeAffine(await w.data(), w.shape[0], w.shape[1], spec);
    } catch (e) {
      for (const t of [q.weight, q.scales, q.biases]) t.dispose();
      throw e;
    }
  }
  return q;
}

function checkQuantizable(op: string, w: Tensor, options: QuantizeOptions): void {
  assertTensor(op, w, 'w');
  assertFloat(op, w, 'w');
  if (w.rank !== 2) throw new ShapeError(op, 'w must be a matrix', '[rows, cols]', formatShape(w.shape));
  checkQuantColumns(op, w.shape[1], quantSpec(op, options));
}
