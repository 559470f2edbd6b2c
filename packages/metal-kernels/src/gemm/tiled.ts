/** The register-blocked tiled kernel (gemm-tiled.wgsl): any size, layout and batch. */
import type { WebGPUBackend } from '../backend';
import { dummy, enableFor, shader, uniform } from '../kernels/common';
import tiledSource from '../wgsl/gemm-tiled.wgsl';
import type { GemmOperands, GemmShape, GemmTarget, GemmType, TiledConfig } from './types';

/** Records one tiled dispatch of `shape` into `target`. */
export function recordTiled(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands, cfg: TiledConfig, t: GemmType, target: GemmTarget): void {
  const { M, N, K, batch } = shape;
  const { key, source } = shader('gemm-tiled', tiledSource, {
    ENABLE: enableFor(t),
    T: t,
    TC: target.split ? 'f32' : t,
    TM: String(cfg.tm),
    TN: String(cfg.tn),
    TK: String(cfg.tk),
    WGX: String(cfg.wgx),
    WGY: String(cfg.wgy),
  });
  const bm = cfg.wgy * cfg.tm;
  const bn = cfg.wgx * cfg.tn;
  backend.dispatch({
    key,
    source,
    constants: {
      TRANS_A: shape.transA ? 1 : 0,
      TRANS_B: shape.transB ? 1 : 0,
      HAS_BIAS: ops.bias ? 1 : 0,
      ACCUMULATE: ops.beta !== 0 ? 1 : 0,
      SPLIT: target.split ? 1 : 0,
    },
    buffers: [ops.a, ops.b, ops.bias ?? dummy(backend), target.out],
    uniform: uniform([
      M,
      N,
      K,
      batch,
      ops.aBatchStride,
      ops.bBatchStride,
      target.split ? target.kChunk : K,
      target.splits,
      { f32: ops.alpha },
      { f32: ops.beta },
    ]),
    workgroups: [Math.ceil(N / bn), Math.ceil(M / bm), batch * target.splits],
    label: cfg.name,
  });
}
