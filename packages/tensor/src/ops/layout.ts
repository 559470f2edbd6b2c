import { runOp } from '../dispatch';
import { isGradEnabled, recordOp } from '../engine';
import { DTypeError, ShapeError, StateError, ValueError } from '../errors';
import { formatShape, normalizeAxis, sizeOf } from '../shape';
import type { Tensor } from '../tensor';
import { assertSameDType, assertTensor } from './helpers';

// Gradients: ops/gradients.ts.

/** The same data with a new shape (no copy). One dimension may be -1 (inferred). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  assertTensor('reshape', x, 'x');
  const inferred = [...shape];
  const unknown = inferred.indexOf(-1);
  if (inferred.some((d, i) => !Number.isInteger(d) || d < -1 || (d === -1 && i !== unknown))) {
    throw new ShapeError('reshape', 'invalid target shape', 'non-negative integers and at most one -1', formatShape(shape));
  }
  if (unknown >= 0) {
    const known = sizeOf(inferred.filter((_, i) => i !== unknown));
    if (known === 0 || x.size % known !== 0)
      throw new ShapeError('reshape', `cannot infer -1 for ${x.size} elements`, `a shape whose known dims divide ${x.size}`, formatShape(shape));
    inferred[unknown] = x.size / known;
  }
  if (sizeOf(inferred) !== x.size)
    throw new ShapeError(
      'reshape',
      'element count differs',
      `a shape of ${x.size} elements (from ${formatShape(x.shape)})`,
      `${formatShape(shape)} (${sizeOf(inferred)} elements)`,
    );
  return recordOp('reshape', x.withShape(inferred), [x], { shape: x.shape });
}

/** Permutes dimensions (default: reverses them). Copies the data. */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  assertTensor('transpose', x, 'x');
  const rank = x.rank;
  const p = perm ? perm.map((a) => normalizeAxis('transpose', a, rank)) : Array.from({ length: rank }, (_, i) => rank - 1 - i);
  if (p.length !== rank || new Set(p).size !== rank) {
    throw new ValueError('transpose', 'perm is not a permutation of the axes', `a permutation of [0..${rank - 1}]`, JSON.stringify(perm));
  }
  // Moving only axes of size 1 (a decode step's [B, 1, H, D] → [B, H, 1, D]) keeps the data's
  // order: a reshape, with no kernel.
  const moved = p.filter((a) => x.shape[a] !== 1);
  if (moved.every((a, i) => i === 0 || a > moved[i - 1]))
    return reshape(
      x,
      p.map((a) => x.shape[a]),
    );
  const y = runOp('transpose', [x], { perm: p });
  const inverse = new Array<number>(rank);
  p.forEach((axis, i) => {
    inverse[axis] = i;
  });
  return recordOp('transpose', y, [x], { inverse });
}

/** Alias of {@link transpose} with an explicit permutation, as in PyTorch. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  return transpose(x, perm);
}

/** Swaps the last two dimensions. */
export function transposeLast(x: Tensor): Tensor {
  const perm = Array.from({ length: x.rank }, (_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1], perm[x.rank - 2]];
  return transpose(x, perm);
}

/**
 * `x[begin[0]:end[0], begin[1]:end[1], ...]` with Python semantics: negative indices count from
 * the end, bounds clamp, missing axes are taken whole.
 */
export function slice(x: Tensor, begin: readonly number[], end?: readonly number[]): Tensor {
  assertTensor('slice', x, 'x');
  if (begin.length > x.rank || (end && end.length > x.rank)) {
    throw new ShapeError('slice', 'more bounds than dimensions', `at most ${x.rank}`, String(Math.max(begin.length, end?.length ?? 0)));
  }
  const start: number[] = [];
  const size: number[] = [];
  x.shape.forEach((dim, d) => {
    const clamp = (v: number) => Math.min(dim, Math.max(0, v < 0 ? v + dim : v));
    const b = clamp(begin[d] ?? 0);
    const e = clamp(end?.[d] ?? dim);
    if (!Number.isInteger(begin[d] ?? 0) || !Number.isInteger(end?.[d] ?? 0))
      throw new ValueError('slice', `bound of axis ${d} is not an integer`, 'integers', `${begin[d]}:${end?.[d]}`);
    start.push(b);
    size.push(Math.max(0, e - b));
  });
  const y = runOp('slice', [x], { begin: start, size });
  const paddings = x.shape.map((dim, d): [number, number] => [start[d], dim - start[d] - size[d]]);
  return recordOp('slice', y, [x], { paddings });
}

/** Pads each axis with `[before, after]` elements of `value`. */
export function pad(x: Tensor, paddings: readonly (readonly [number, number])[], value = 0): Tensor {
  assertTensor('pad', x, 'x');
  if (paddings.length !== x.rank || paddings.some((p) => p.length !== 2 || p.some((v) => !Number.isInteger(v) || v < 0))) {
    throw new ValueError('pad', 'invalid paddings', `${x.rank} pairs of non-negative integers`, JSON.stringify(paddings));
  }
  const pairs = paddings.map(([a, b]): [number, number] => [a, b]);
  const y = runOp('pad', [x], { paddings: pairs, value });
  return recordOp('pad', y, [x], { begin: pairs.map(([a]) => a), end: x.shape.map((d, i) => pairs[i][0] + d) });
}

/** Joins tensors along `axis`; all other dimensions must match. */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (!tensors?.length) throw new ValueError('concat', 'nothing to concatenate', 'a non-empty array of tensors', String(tensors));
  tensors.forEach((t, i) => {
    assertTensor('concat', t, `tensors[${i}]`);
  });
  const first = tensors[0];
  const a = normalizeAxis('concat', axis, first.rank);
  assertSameDType(
    'concat',
    tensors,
    tensors.map((_, i) => `tensors[${i}]`),
  );
  tensors.forEach((t, i) => {
    if (t.rank !== first.rank || t.shape.some((d, j) => j !== a && d !== first.shape[j])) {
      throw new ShapeError(
        'concat',
        `tensors[${i}] does not match tensors[0] outside axis ${a}`,
        formatShape(first.shape.map((d, j) => (j === a ? t.shape[j] : d))),
        formatShape(t.shape),
      );
    }
  });
  const y = runOp('concat', tensors, { axis: a });
  return recordOp('concat', y, tensors, { axis: a });
}

/**
 * Writes `values` into `target` in place along `axis`, from the index that `start` (an int32
 * tensor of one element) holds where the kernel runs: `target[…, start + i, …] = values[…, i, …]`;
 * every other dimension must match. The target's storage keeps its place (on the GPU, the same
 * buffer), so a recorded step that reads it stays valid, and the start can change between steps
 * without a new dispatch: how a KV cache of fixed capacity takes each step's keys. The CPU refuses
 * a start that puts the slice past the end; the GPU cannot report it and writes only the part
 * that fits. Every handle on `target`'s storage sees the new values. Not recorded by autograd:
 * refused while gradients are recorded for either tensor.
 */
export function writeSlice(target: Tensor, values: Tensor, start: Tensor, axis: number): void {
  const op = 'writeSlice';
  assertTensor(op, target, 'target');
  assertTensor(op, values, 'values');
  assertTensor(op, start, 'start');
  assertSameDType(op, [target, values], ['target', 'values']);
  const a = normalizeAxis(op, axis, target.rank);
  if (values.rank !== target.rank || values.shape.some((d, j) => (j === a ? d > target.shape[j] : d !== target.shape[j])))
    throw new ShapeError(
      op,
      `values must match target outside axis ${a} and fit along it`,
      `[${target.shape.map((d, j) => (j === a ? `≤ ${d}` : d)).join(', ')}]`,
      formatShape(values.shape),
    );
  if (start.dtype !== 'int32') throw new DTypeError(op, 'start must hold an int32 index', 'int32', start.dtype);
  if (start.size !== 1) throw new ShapeError(op, 'start must have one element', '[1]', formatShape(start.shape));
  if (isGradEnabled() && (target.requiresGrad || values.requiresGrad))
    throw new StateError(op, 'a tensor requires grad and gradients are being recorded; expected the write under noGrad(), got it outside');
  if (target.ref(op).data === values.ref(op).data) throw new ValueError(op, 'target and values must not share storage', 'two distinct storages', 'one storage');
  runOp(op, [target, values, start], { axis: a });
}

/** Inserts a dimension of size 1 at `axis`. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normalizeAxis('unsqueeze', axis, x.rank + 1);
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

/** Removes dimensions of size 1 (all of them, or those in `axes`). */
export function squeeze(x: Tensor, axes?: number | readonly number[]): Tensor {
  const list =
    axes === undefined
      ? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)
      : (typeof axes === 'number' ? [axes] : [...axes]).map((a) => normalizeAxis('squeeze', a, x.rank));
  for (const a of list) if (x.shape[a] !== 1) throw new ShapeError('squeeze', `axis ${a} has size ${x.shape[a]}`, 'size 1', formatShape(x.shape));
  return reshape(
    x,
    x.shape.filter((_, i) => !list.includes(i)),
  );
}
