/** The register-blocked tiled kernel (gemm-tiled.wgsl): any size, layout and batch, and quantized B (`ops.quant`). */
import type { WebGPUBackend } from '../backend';
import { dummy, enableFor, shader, uniform } from '../kernels/common';
import tiledSource from '../wgsl/gemm-tiled.wgsl';
import type { GemmOperands, GemmShape, GemmTarget, GemmType, TiledConfig } from './types';
import { gemmConstants, gemmUniformHead } from './uniform';

/** Records one tiled dispatch of `shape` into `target`. */
export function recordTiled(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands, cfg: TiledConfig, t: GemmType, target: GemmTarget): void {
  const { M, N, K, batch } = shape;
  const { quant } = ops;
  const { key, source } = shader('gemm-tiled', tiledSource, {
    ENABLE: enableFor(t),
    T: t,
    QUANT: quant ? '1' : '0',
    ...(quant ? { BITS: String(quant.bits), GROUP: String(quant.groupSize), QS: '4', QB: '5' } : {}),
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
    constants: gemmConstants(shape, ops, target.split),
    buffers: [ops.a, ops.b, ops.bias ?? dummy(backend), target.out, ...(quant ? [quant.scales, quant.biases] : [])],
    uniform: uniform(gemmUniformHead({ M, N, K, entries: batch }, ops, target.split ? target.kChunk : K, target.splits)),
    workgroups: [Math.ceil(N / bn), Math.ceil(M / bm), batch * target.splits],
    label: cfg.name,
  });
}
