/** The portable matrix-vector kernel (gemv.wgsl): few rows of any layout, K or batch, through the split-K workspace, or straight into C when unsplit with no bias or β. */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { enableFor, shader, uniform } from '../kernels/common';
import gemvSource from '../wgsl/gemv.wgsl';
import type { GemmOperands, GemmShape, GemmTarget, GemmType, GemvConfig } from './types';

/** Records one gemv dispatch of `shape` into the workspace `target.out`. */
export function recordGemv(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands, cfg: GemvConfig, t: GemmType, target: GemmTarget): void {
  if (!(cfg.lanes >= 1 && cfg.lanes <= 256 && Number.isInteger(Math.log2(cfg.lanes)))) {
    throw new ValueError('matmul', `${cfg.name}: lanes per column must be a power of two from 1 to 256`, 'lanes in {1, 2, 4, …, 256}', String(cfg.lanes));
  }
  const { M, N, K, batch } = shape;
  // Without the workspace the kernel stores α·acc into C in C's type; into the workspace, acc (α = 1) in f32.
  const direct = !target.split;
  const { key, source } = shader('gemv', gemvSource, { ENABLE: enableFor(t), T: t, OUT: direct ? t : 'f32', MR: String(cfg.mr), LANES: String(cfg.lanes) });
  const cols = 256 / cfg.lanes;
  backend.dispatch({
    key,
    source,
    constants: { TRANS_A: shape.transA ? 1 : 0, TRANS_B: shape.transB ? 1 : 0 },
    buffers: [ops.a, ops.b, target.out],
    uniform: uniform([M, N, K, target.kChunk, target.splits, ops.aBatchStride, ops.bBatchStride, { f32: direct ? ops.alpha : 1 }]),
    workgroups: [Math.ceil(N / cols), target.splits, batch],
    label: cfg.name,
  });
}
