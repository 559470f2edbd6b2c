/** The split-K reduction (gemm-splitk-reduce.wgsl): sums a workspace's splits into C with α, β and bias. */
import type { WebGPUBackend } from '../backend';
import { dummy, enableFor, grid1d, shader, uniform } from '../kernels/common';
import splitkSource from '../wgsl/gemm-splitk-reduce.wgsl';
import type { GemmOperands, GemmShape, GemmType } from './types';
import { epilogueConstants } from './uniform';

/**
 * Records the reduction of `ws` ([entries·splits, M, NT]) into C; with a pair its second entry
 * goes to `pair.cT` transposed, with appended rows their columns go to `concatN.c`.
 */
export function recordSplitKReduce(
  backend: WebGPUBackend,
  shape: Pick<GemmShape, 'M' | 'N' | 'batch'>,
  ops: Pick<GemmOperands, 'c' | 'bias' | 'alpha' | 'beta' | 'pair' | 'concatN'>,
  t: GemmType,
  ws: GPUBuffer,
  splits: number,
  label: string,
): void {
  const { M, N } = shape;
  const { pair, concatN } = ops;
  const entries = pair ? 2 : shape.batch;
  const NT = N + (concatN?.rows ?? 0);
  const n = entries * M * NT;
  const { workgroups, gridX } = grid1d(n);
  const second = pair?.cT ?? concatN?.c;
  const { key, source } = shader('gemm-splitk-reduce', splitkSource, {
    ENABLE: enableFor(t),
    T: t,
    TWO_OUT: second ? '1' : '0',
    PAIR_T: pair ? '1' : '0',
    CONCAT_C: concatN ? '1' : '0',
  });
  const bias = ops.bias ?? dummy(backend);
  backend.dispatch({
    key,
    source,
    constants: epilogueConstants(ops),
    buffers: second ? [ws, bias, ops.c, second] : [ws, bias, ops.c],
    uniform: uniform([n, M * NT, NT, splits, gridX, 0, { f32: ops.alpha }, { f32: ops.beta }, { f32: pair?.alpha ?? 0 }, N]),
    workgroups,
    label,
  });
}
