import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { ShapeError, ValueError } from '../errors';
import { broadcastShapes, formatShape, normalizeAxes, normalizeAxis, reducedShape, sameShape } from '../shape';
import type { Tensor } from '../tensor';
import { div } from './elementwise';
import { assertFloat, assertTensor } from './helpers';
import { reshape } from './layout';

// Gradients: ops/gradients.ts.

/** Repeats `x` along broadcast dimensions to `shape` (NumPy rules). */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  assertTensor('broadcastTo', x, 'x');
  const target = [...shape];
  if (!sameShape(broadcastShapes('broadcastTo', x.shape, target), target)) {
    throw new ShapeError('broadcastTo', 'cannot broadcast to a smaller shape', `a shape that ${formatShape(x.shape)} broadcasts to`, formatShape(shape));
  }
  if (sameShape(x.shape, target)) return recordOp('broadcastTo', x.share(), [x], { shape: x.shape });
  const y = runOp('broadcastTo', [x], { shape: target });
  return recordOp('broadcastTo', y, [x], { shape: x.shape });
}

/**
 * Sums a broadcast gradient back to `shape` (the inverse of broadcasting). With `owned`, `g` is
 * disposed when a new tensor replaces it.
 */
export function sumToShape(g: Tensor, shape: readonly number[], owned = false): Tensor {
  if (sameShape(g.shape, shape)) return g;
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  const summed = sum(g, axes, true);
  const out = reshape(summed, shape);
  summed.dispose();
  if (owned) g.dispose();
  return out;
}

function reduce(op: 'sum' | 'max', x: Tensor, axes: number | readonly number[] | undefined, keepDims: boolean): [Tensor, number[]] {
  assertTensor(op, x, 'x');
  const list = normalizeAxes(op, axes, x.rank);
  // The maximum of nothing has no value (-Inf would be a silently wrong answer); a sum of nothing is 0.
  if (op === 'max' && list.some((a) => x.shape[a] === 0)) {
    throw new ValueError(op, 'a reduced axis is empty', 'every reduced axis of length ≥ 1', `${formatShape(x.shape)} reduced over [${list.join(', ')}]`);
  }
  const y = runOp(op, [x], { axes: list, keepDims });
  return [y, list];
}

/**
 * Sum over `axes` (all when omitted).
 * @example sum(tensor([[1, 2], [3, 4]]), 1) // [3, 7]
 */
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const [y, list] = reduce('sum', x, axes, keepDims);
  return recordOp('sum', y, [x], { shape: x.shape, kept: reducedShape(x.shape, list, true) });
}

/** Arithmetic mean over `axes` (all when omitted). */
export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  assertFloat('mean', x);
  const list = normalizeAxes('mean', axes, x.rank);
  const count = list.reduce((n, a) => n * x.shape[a], 1);
  const s = sum(x, list, keepDims);
  const y = div(s, count);
  s.dispose();
  return y;
}

/** Maximum over `axes`. The gradient is split evenly between tied maxima (as PyTorch's amax). */
export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const [y, list] = reduce('max', x, axes, keepDims);
  return recordOp('max', y, [x], { axes: list, kept: reducedShape(x.shape, list, true) }, [x, y]);
}

/** Softmax along `axis` (numerically stable). */
export function softmax(x: Tensor, axis = -1): Tensor {
  assertTensor('softmax', x, 'x');
  assertFloat('softmax', x);
  const a = normalizeAxis('softmax', axis, x.rank);
  const y = runOp('softmax', [x], { axis: a });
  return recordOp('softmax', y, [x], { axis: a }, [y]);
}

/** log(softmax(x)) along `axis`, computed without forming the softmax. */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  assertTensor('logSoftmax', x, 'x');
  assertFloat('logSoftmax', x);
  const a = normalizeAxis('logSoftmax', axis, x.rank);
  const y = runOp('logSoftmax', [x], { axis: a });
  return recordOp('logSoftmax', y, [x], { axis: a }, [y]);
}
