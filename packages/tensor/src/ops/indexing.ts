import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { DTypeError, ValueError } from '../errors';
import { formatShape, normalizeAxis } from '../shape';
import type { Tensor } from '../tensor';
import { assertTensor } from './helpers';

// Gradients: ops/gradients.ts.

function checkIndices(op: string, indices: Tensor, bound: number): void {
  if (indices.dtype !== 'int32') throw new DTypeError(op, 'indices must be int32', 'int32', indices.dtype);
  // Backends that hold data on the host check every index; GPU kernels clamp instead of reading out of bounds.
  if (indices.backend.readSync) {
    const v = indices.dataSync();
    for (let i = 0; i < v.length; i++) {
      if (v[i] < 0 || v[i] >= bound) throw new ValueError(op, `index ${v[i]} at position ${i} is out of range`, `0 <= index < ${bound}`, String(v[i]));
    }
  }
}

/**
 * Picks slices of `table` along `axis` by integer `indices` (embedding lookup when axis = 0).
 * Output shape: `table.shape[:axis] + indices.shape + table.shape[axis+1:]`.
 *
 * @example
 * const h = gather(embeddings, tokenIds); // [vocab, dim] and [B, T] int32 → [B, T, dim]
 */
export function gather(table: Tensor, indices: Tensor, axis = 0): Tensor {
  assertTensor('gather', table, 'table');
  assertTensor('gather', indices, 'indices');
  const a = normalizeAxis('gather', axis, table.rank);
  checkIndices('gather', indices, table.shape[a]);
  const y = runOp('gather', [table, indices], { axis: a });
  return recordOp('gather', y, [table, indices], { axis: a, shape: [...table.shape] }, [indices]);
}

/**
 * Zeros of `shape` with `updates` added at `indices` along `axis` (repeated indices accumulate):
 * the adjoint of {@link gather}.
 */
export function scatterAdd(indices: Tensor, updates: Tensor, shape: readonly number[], axis = 0): Tensor {
  assertTensor('scatterAdd', indices, 'indices');
  assertTensor('scatterAdd', updates, 'updates');
  const a = normalizeAxis('scatterAdd', axis, shape.length);
  checkIndices('scatterAdd', indices, shape[a]);
  const expected = [...shape.slice(0, a), ...indices.shape, ...shape.slice(a + 1)];
  if (expected.join() !== updates.shape.join()) {
    throw new ValueError('scatterAdd', 'updates do not match indices and shape', formatShape(expected), formatShape(updates.shape));
  }
  const y = runOp('scatterAdd', [indices, updates], { axis: a, shape: [...shape] });
  return recordOp('scatterAdd', y, [indices, updates], { axis: a }, [indices]);
}
