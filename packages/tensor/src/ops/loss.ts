import { record, runOp } from '../engine';
import { DTypeError, ShapeError } from '../errors';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertTensor } from './helpers';

/**
 * Weighted softmax cross-entropy of each row as one op: `loss[i] = weights[i]·(logsumexp(logits[i]) −
 * logits[i, targets[i]])` for logits `[N, V]`, int32 targets `[N]` and weights `[N]` (logits' dtype).
 * A row of weight 0 gives 0 whatever its target (ignored positions, padding); a target outside
 * `[0, V)` in a row of non-zero weight gives NaN, never a silently smaller loss. Neither the
 * log-probabilities nor a one-hot `[N, V]` are formed; backward (`softmaxCrossEntropyBackward`)
 * recomputes the softmax from the logits and the saved log-sum-exp. Differentiable in `logits` only.
 *
 * @example
 * const perRow = softmaxCrossEntropy(logits, targets, weights); // [N]
 * const loss = sum(perRow).div(sum(weights));
 */
export function softmaxCrossEntropy(logits: Tensor, targets: Tensor, weights: Tensor): Tensor {
  const op = 'softmaxCrossEntropy';
  assertTensor(op, logits, 'logits');
  assertTensor(op, targets, 'targets');
  assertTensor(op, weights, 'weights');
  assertFloat(op, logits, 'logits');
  if (logits.rank !== 2) throw new ShapeError(op, 'logits must be [N, V]', 'rank 2', formatShape(logits.shape));
  const [N] = logits.shape;
  if (targets.dtype !== 'int32') throw new DTypeError(op, 'targets must be int32 class ids', 'int32', targets.dtype);
  if (targets.rank !== 1 || targets.shape[0] !== N) throw new ShapeError(op, 'targets must be [N]', `[${N}]`, formatShape(targets.shape));
  if (weights.dtype !== logits.dtype) throw new DTypeError(op, 'weights must have the dtype of logits', logits.dtype, weights.dtype);
  if (weights.rank !== 1 || weights.shape[0] !== N) throw new ShapeError(op, 'weights must be [N]', `[${N}]`, formatShape(weights.shape));
  const [loss, lse] = runOp(op, [logits, targets, weights], {});
  const result = record(
    loss,
    [logits, targets, weights],
    op,
    (dy, [xs, ts, ws, lses]) => {
      const [dx] = runOp('softmaxCrossEntropyBackward', [xs, ts, ws, lses, dy], {});
      return [dx, null, null];
    },
    [logits, targets, weights, lse],
  );
  lse.dispose();
  return result;
}
