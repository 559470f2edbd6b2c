import { cast, type DType, equal, mean, mul, neg, reshape, softmaxCrossEntropy, sub, sum, type Tensor, ValueError } from '@metal-lora/tensor';

/** 1 where `t != value`, else 0, as `dtype`. */
function notEqualMask(t: Tensor, value: number, dtype: DType): Tensor {
  return neg(cast(equal(t, value), dtype)).add(1);
}

/**
 * Cross-entropy of logits `[..., V]` against int32 targets `[...]`, averaged over the targets that
 * count: those different from `ignoreIndex` (default -100, as PyTorch) and, when given, where
 * `mask` is non-zero. Every other target must be a class (`0 <= t < V`): on backends that hold
 * data on the host (cpu) one outside that range throws a `ValueError`; on the GPU, where checking
 * would wait for the device, it makes the loss NaN instead of a silently smaller number.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: { ignoreIndex?: number; mask?: Tensor } = {}): Tensor {
  const op = 'crossEntropy';
  const V = logits.shape[logits.rank - 1];
  if (targets.dtype !== 'int32') throw new ValueError(op, 'targets must be int32 token ids', 'int32', targets.dtype);
  if (targets.shape.join() !== logits.shape.slice(0, -1).join())
    throw new ValueError(op, 'targets do not match the logits', `[${logits.shape.slice(0, -1)}]`, `[${targets.shape}]`);
  const ignore = options.ignoreIndex ?? -100;
  if (targets.backend.readSync) {
    const v = targets.dataSync();
    for (let i = 0; i < v.length; i++) {
      if (v[i] !== ignore && (v[i] < 0 || v[i] >= V))
        throw new ValueError(
          op,
          `target ${v[i]} at position ${i} is not a class of the ${V} logits`,
          `0 <= target < ${V} or the ignore index ${ignore}`,
          String(v[i]),
        );
    }
  }
  const flat = reshape(logits, [-1, V]);
  const t = reshape(targets, [-1]);
  let weight = notEqualMask(t, ignore, logits.dtype);
  if (options.mask) weight = mul(weight, cast(reshape(options.mask, [-1]), logits.dtype));
  // One fused op: no log-probabilities or one-hot [N, V] are formed, and a target outside the
  // classes in a counted row makes its loss NaN (the GPU cannot throw without waiting for the device).
  return sum(softmaxCrossEntropy(flat, t, weight)).div(sum(weight));
}

/** Mean squared error. */
export function mse(prediction: Tensor, target: Tensor): Tensor {
  const d = sub(prediction, target);
  return mean(mul(d, d));
}
