/** What the GEMM kernels' interfaces share: their common overrides, and the uniform fields of the `gemm-uniform` WGSL piece. */
import type { GemmOperands, GemmShape } from './types';

/** The overrides of the `gemm-epilogue` WGSL piece: HAS_BIAS, and ACCUMULATE where β is non-zero. */
export function epilogueConstants(ops: Pick<GemmOperands, 'bias' | 'beta'>): { HAS_BIAS: number; ACCUMULATE: number } {
  return { HAS_BIAS: ops.bias ? 1 : 0, ACCUMULATE: ops.beta !== 0 ? 1 : 0 };
}

/** TRANS_A, TRANS_B, the epilogue's overrides, and SPLIT where the kernel has it (`split` given). */
export function gemmConstants(shape: GemmShape, ops: Pick<GemmOperands, 'bias' | 'beta'>, split?: boolean): Record<string, number> {
  return {
    TRANS_A: shape.transA ? 1 : 0,
    TRANS_B: shape.transB ? 1 : 0,
    ...epilogueConstants(ops),
    ...(split === undefined ? {} : { SPLIT: split ? 1 : 0 }),
  };
}

/**
 * The uniform's first ten fields in the order `wgsl/lib/gemm-uniform.wgsl` declares them: M, N,
 * K, batch entries, the operands' batch strides, the K chunk and split count, α and β.
 */
export function gemmUniformHead(
  dims: { M: number; N: number; K: number; entries: number },
  ops: Pick<GemmOperands, 'aBatchStride' | 'bBatchStride' | 'alpha' | 'beta'>,
  kChunk: number,
  splits: number,
): (number | { f32: number })[] {
  return [dims.M, dims.N, dims.K, dims.entries, ops.aBatchStride, ops.bBatchStride, kChunk, splits, { f32: ops.alpha }, { f32: ops.beta }];
}
