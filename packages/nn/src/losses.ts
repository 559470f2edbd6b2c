import { cast, type DType, equal, logSoftmax, mean, mul, neg, reshape, sub, sum, type Tensor, tensor, ValueError } from '@metal-lora/tensor';

/** 1 where `t != value`, else 0, as `dtype`. */
function notEqualMask(t: Tensor, value: number, dtype: DType): Tensor {
  return neg(cast(equal(t, value), dtype)).add(1);
}

/**
 * Cross-entropy of logits `[..., V]` against int32 targets `[...]`, averaged over the targets that
 * count: those different from `ignoreIndex` (default -100, as PyTorch) and, when given, where
 * `mask` is non-zero.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: { ignoreIndex?: number; mask?: Tensor } = {}): Tensor {
  const op = 'crossEntropy';
  const V = logits.shape[logits.rank - 1];
  if (targets.dtype !== 'int32') throw new ValueError(op, 'targets must be int32 token ids', 'int32', targets.dtype);
  if (targets.shape.join() !== logits.shape.slice(0, -1).join()) throw new ValueError(op, 'targets do not match the logits', `[${logits.shape.slice(0, -1)}]`, `[${targets.shape}]`);
  const ignore = options.ignoreIndex ?? -100;
  const flat = reshape(logits, [-1, V]);
  const t = reshape(targets, [-1]);
  const logp = logSoftmax(flat, -1);
  // One-hot of the targets (ignored targets match no class), contracted with the log-probabilities.
  const classes = tensor(Int32Array.from({ length: V }, (_, i) => i), [1, V], { backend: logits.backend });
  const onehot = cast(equal(reshape(t, [-1, 1]), classes), logits.dtype);
  const picked = sum(mul(logp, onehot), -1);
  let weight = notEqualMask(t, ignore, logits.dtype);
  if (options.mask) weight = mul(weight, cast(reshape(options.mask, [-1]), logits.dtype));
  const count = sum(weight);
  return neg(sum(mul(picked, weight))).div(count);
}

/** Mean squared error. */
export function mse(prediction: Tensor, target: Tensor): Tensor {
  const d = sub(prediction, target);
  return mean(mul(d, d));
}
