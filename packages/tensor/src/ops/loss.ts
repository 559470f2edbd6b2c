import { runOp } from '../dispatch';
import { isGradEnabled, noGrad, recordOp } from '../engine';
import { DTypeError, ShapeError, ValueError } from '../errors';
import { formatShape } from '../shape';
import { full, Tensor } from '../tensor';
import { assertFloat, assertTensor } from './helpers';
import { concat, slice } from './layout';
import { matmul } from './matmul';
import { type QuantizedWeight, quantizedMatmul } from './quantized';

// Gradients: ops/gradients.ts.

/** Targets int32 `[N]` and weights `[N]` of the logits' dtype. */
function checkTargets(op: string, N: number, dtype: string, targets: Tensor, weights: Tensor, like: string): void {
  assertTensor(op, targets, 'targets');
  assertTensor(op, weights, 'weights');
  if (targets.dtype !== 'int32') throw new DTypeError(op, 'targets must be int32 class ids', 'int32', targets.dtype);
  if (targets.rank !== 1 || targets.shape[0] !== N) throw new ShapeError(op, 'targets must be [N]', `[${N}]`, formatShape(targets.shape));
  if (weights.dtype !== dtype) throw new DTypeError(op, `weights must have the dtype of ${like}`, dtype, weights.dtype);
  if (weights.rank !== 1 || weights.shape[0] !== N) throw new ShapeError(op, 'weights must be [N]', `[${N}]`, formatShape(weights.shape));
  if (weights.requiresGrad && isGradEnabled())
    throw new ValueError(op, 'the row weights are constants', 'weights without requiresGrad', 'weights requiring grad');
}

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
  assertFloat(op, logits, 'logits');
  if (logits.rank !== 2) throw new ShapeError(op, 'logits must be [N, V]', 'rank 2', formatShape(logits.shape));
  const [N] = logits.shape;
  checkTargets(op, N, logits.dtype, targets, weights, 'logits');
  const { loss, logsumexp: lse } = runOp(op, [logits, targets, weights], {});
  const result = recordOp(op, loss, [logits, targets, weights], {}, [logits, targets, weights, lse]);
  lse.dispose();
  return result;
}

/**
 * Rows per chunk of `linearCrossEntropy`: logits of at most 64 Mi elements (256 MB in f32), in
 * multiples of 128 rows and at least 512, so each chunk's products stay large enough for the big
 * GEMM tiles (smaller chunks fell to slow small tiles).
 */
function chunkRowsFor(V: number): number {
  return Math.max(512, Math.floor((64 * 1024 * 1024) / Math.max(V, 1) / 128) * 128);
}

/** An MLX affine-quantized LM head (`quantize`'s parts and their spec): a frozen head read by `quantizedMatmul`. */
export interface QuantizedHead extends QuantizedWeight {
  bits: number;
  groupSize: number;
}

/**
 * The LM head and its cross-entropy as one op, in chunks of rows, so the `[N, V]` logits are never
 * held whole: `loss[i] = softmaxCrossEntropy(h·weightᵀ, targets, weights)[i]` for hidden states h
 * `[N, D]` and a head weight `[V, D]` (or a quantized one, read by `quantizedMatmul`). When h
 * requires grad, each chunk's gradient `dlogits·weight` is formed as the chunk is computed (the
 * loss's own gradient is known then up to each row's upstream factor), so backward only scales the
 * saved `[N, D]` rows: no logits are kept and none recomputed. A head weight that requires grad
 * (full fine-tuning) goes through the unchunked composition instead. `chunkRows` overrides the
 * rows per chunk.
 */
export function linearCrossEntropy(h: Tensor, head: Tensor | QuantizedHead, targets: Tensor, weights: Tensor, options: { chunkRows?: number } = {}): Tensor {
  const op = 'linearCrossEntropy';
  assertTensor(op, h, 'h');
  assertFloat(op, h, 'h');
  if (h.rank !== 2) throw new ShapeError(op, 'h must be [N, D]', 'rank 2', formatShape(h.shape));
  const [N, D] = h.shape;
  const quantized = head instanceof Tensor ? null : head;
  const weight = quantized ? quantized.scales : (head as Tensor);
  assertTensor(op, weight, quantized ? 'head.scales' : 'weight');
  // The head's rows and what one chunk of h times it (and its gradient times it back) are.
  const V = weight.shape[0];
  const forward = (x: Tensor) =>
    quantized ? quantizedMatmul(x, quantized.weight, quantized.scales, quantized.biases, quantized) : matmul(x, weight, { transposeB: true });
  const backward = (dy: Tensor) =>
    quantized ? quantizedMatmul(dy, quantized.weight, quantized.scales, quantized.biases, { ...quantized, transpose: false }) : matmul(dy, weight);
  if (quantized) {
    const width = quantized.scales.shape[1] * quantized.groupSize;
    if (width !== D) throw new ShapeError(op, "the quantized head's input dimension must match h", `${D} columns`, `${width}`);
    if (quantized.scales.dtype !== h.dtype) throw new DTypeError(op, "the quantized head's scales must have the dtype of h", h.dtype, quantized.scales.dtype);
  } else {
    if (weight.rank !== 2 || weight.shape[1] !== D) throw new ShapeError(op, 'weight must be [V, D]', `[V, ${D}]`, formatShape(weight.shape));
    if (weight.dtype !== h.dtype) throw new DTypeError(op, 'weight must have the dtype of h', h.dtype, weight.dtype);
  }
  checkTargets(op, N, h.dtype, targets, weights, 'h');
  const rows = options.chunkRows ?? chunkRowsFor(V);
  if (!Number.isInteger(rows) || rows < 1) throw new ValueError(op, 'chunkRows must be a positive integer', 'e.g. 256', String(rows));
  if ((!quantized && weight.requiresGrad && isGradEnabled()) || N === 0) {
    // A trained head needs its own gradient: the plain composition (its logits kept for backward).
    const logits = forward(h);
    const loss = softmaxCrossEntropy(logits, targets, weights);
    logits.dispose();
    return loss;
  }
  const wantGrad = isGradEnabled() && h.requiresGrad;
  const losses: Tensor[] = [];
  const grads: Tensor[] = [];
  noGrad(() => {
    for (let start = 0; start < N; start += rows) {
      const n = Math.min(rows, N - start);
      const hc = n === N ? h.share() : slice(h, [start, 0], [start + n, D]);
      const tc = n === N ? targets.share() : slice(targets, [start], [start + n]);
      const wc = n === N ? weights.share() : slice(weights, [start], [start + n]);
      const logits = forward(hc);
      const { loss, logsumexp: lse } = runOp('softmaxCrossEntropy', [logits, tc, wc], {});
      losses.push(loss);
      if (wantGrad) {
        // The loss's gradient in these logits for an upstream factor of 1, folded into h's rows now.
        const ones = full([n], 1, { dtype: h.dtype, backend: h.backend });
        const dlogits = runOp('softmaxCrossEntropyBackward', [logits, tc, wc, lse, ones], {});
        grads.push(backward(dlogits));
        for (const t of [ones, dlogits]) t.dispose();
      }
      for (const t of [hc, tc, wc, logits, lse]) t.dispose();
    }
  });
  const loss = losses.length === 1 ? losses[0] : noGrad(() => concat(losses, 0));
  if (losses.length > 1) for (const t of losses) t.dispose();
  if (!wantGrad) return loss;
  const g = grads.length === 1 ? grads[0] : noGrad(() => concat(grads, 0));
  if (grads.length > 1) for (const t of grads) t.dispose();
  const result = recordOp(op, loss, [h], {}, [g]);
  g.dispose();
  return result;
}
