import {
  cast,
  type DType,
  equal,
  linearCrossEntropy,
  mean,
  mul,
  neg,
  type QuantizedHead,
  reshape,
  softmaxCrossEntropy,
  sub,
  sum,
  Tensor,
  ValueError,
} from '@metal-lora/tensor';

/** 1 where `t != value`, else 0, as `dtype`. */
function notEqualMask(t: Tensor, value: number, dtype: DType): Tensor {
  return neg(cast(equal(t, value), dtype)).add(1);
}

export interface CrossEntropyOptions {
  /** Targets equal to it do not count (default -100, as PyTorch). */
  ignoreIndex?: number;
  /** Counts only where non-zero (`[...]` like the targets). */
  mask?: Tensor;
}

/** The targets flattened `[N]` and each one's weight (0 where ignored or masked), checked against `V` classes. */
function targetWeights(op: string, targets: Tensor, lead: readonly number[], V: number, dtype: DType, options: CrossEntropyOptions): [Tensor, Tensor] {
  if (targets.dtype !== 'int32') throw new ValueError(op, 'targets must be int32 token ids', 'int32', targets.dtype);
  if (targets.shape.join() !== lead.join()) throw new ValueError(op, 'targets do not match the logits', `[${lead}]`, `[${targets.shape}]`);
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
  const t = reshape(targets, [-1]);
  let weight = notEqualMask(t, ignore, dtype);
  if (options.mask) weight = mul(weight, cast(reshape(options.mask, [-1]), dtype));
  return [t, weight];
}

/**
 * Cross-entropy of logits `[..., V]` against int32 targets `[...]`, averaged over the targets that
 * count: those different from `ignoreIndex` (default -100, as PyTorch) and, when given, where
 * `mask` is non-zero. Every other target must be a class (`0 <= t < V`): on backends that hold
 * data on the host (cpu) one outside that range throws a `ValueError`; on the GPU, where checking
 * would wait for the device, it makes the loss NaN instead of a silently smaller number.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const V = logits.shape[logits.rank - 1];
  const [t, weight] = targetWeights('crossEntropy', targets, logits.shape.slice(0, -1), V, logits.dtype, options);
  // One fused op: no log-probabilities or one-hot [N, V] are formed, and a target outside the
  // classes in a counted row makes its loss NaN (the GPU cannot throw without waiting for the device).
  return sum(softmaxCrossEntropy(reshape(logits, [-1, V]), t, weight)).div(sum(weight));
}

/**
 * `crossEntropy(hidden·headᵀ, targets)` for hidden states `[..., D]` and an LM head weight
 * `[V, D]` (or an MLX-quantized one: `{ weight, scales, biases, bits, groupSize }`), without ever
 * holding the `[N, V]` logits whole (`linearCrossEntropy`: chunks of rows,
 * each chunk's gradient folded into the hidden rows as it is computed). Same options and checks as
 * `crossEntropy`.
 */
export function headCrossEntropy(hidden: Tensor, head: Tensor | QuantizedHead, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const quantized = !(head instanceof Tensor) && typeof head === 'object' && head !== null && head.scales instanceof Tensor;
  if (!quantized && (!(head instanceof Tensor) || head.rank !== 2))
    throw new ValueError(
      'headCrossEntropy',
      'head must be a weight [V, D]',
      'a rank-2 Tensor or a quantized head',
      head instanceof Tensor ? `rank ${head.rank}` : typeof head,
    );
  const D = hidden.shape[hidden.rank - 1];
  const vocab = head instanceof Tensor ? head.shape[0] : head.scales.shape[0];
  const [t, weight] = targetWeights('headCrossEntropy', targets, hidden.shape.slice(0, -1), vocab, hidden.dtype, options);
  return sum(linearCrossEntropy(reshape(hidden, [-1, D]), head, t, weight)).div(sum(weight));
}

/** Mean squared error. */
export function mse(prediction: Tensor, target: Tensor): Tensor {
  const d = sub(prediction, target);
  return mean(mul(d, d));
}
