import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { ShapeError } from '../errors';
import { broadcastShapes, formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertSameDType, assertTensor } from './helpers';

// Gradients: ops/gradients.ts.

export interface MatmulOptions {
  /** Use aᵀ (its last two dims swapped). */
  transposeA?: boolean;
  /** Use bᵀ (its last two dims swapped): `matmul(x, w, { transposeB: true })` is `x·Wᵀ`. */
  transposeB?: boolean;
}

/**
 * Batched matrix product `op(a)·op(b)` over the last two dims; leading dims broadcast.
 * a: `[..., M, K]` (or `[..., K, M]` with transposeA), b: `[..., K, N]` (or `[..., N, K]`).
 *
 * @example
 * const y = matmul(x, weight, { transposeB: true }); // x [B, in], weight [out, in] → [B, out]
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  assertTensor('matmul', a, 'a');
  assertTensor('matmul', b, 'b');
  const transposeA = options.transposeA ?? false;
  const transposeB = options.transposeB ?? false;
  if (a.rank < 2 || b.rank < 2) {
    throw new ShapeError('matmul', 'operands must have rank >= 2', 'matrices or batches of matrices', `${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  }
  assertSameDType('matmul', [a, b], ['a', 'b']);
  assertFloat('matmul', a, 'a');
  const ka = transposeA ? a.shape[a.rank - 2] : a.shape[a.rank - 1];
  const kb = transposeB ? b.shape[b.rank - 1] : b.shape[b.rank - 2];
  if (ka !== kb) {
    throw new ShapeError(
      'matmul',
      'inner dimensions differ',
      `a's ${transposeA ? 'rows' : 'columns'} (${ka}) to equal b's ${transposeB ? 'columns' : 'rows'}`,
      `${formatShape(a.shape)}${transposeA ? 'ᵀ' : ''} · ${formatShape(b.shape)}${transposeB ? 'ᵀ' : ''} (${ka} vs ${kb})`,
    );
  }
  broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  const y = runOp('matmul', [a, b], { transposeA, transposeB });
  const context = { transposeA, transposeB, aShape: a.shape, bShape: b.shape, needA: a.requiresGrad, needB: b.requiresGrad };
  return recordOp('matmul', y, [a, b], context, [a, b]);
}
