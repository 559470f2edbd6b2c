/** The vec4 kernel (gemm-vec4.wgsl) with its optional LoRA prologue, pair, appended rows and quantized B. */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { dummy, enableFor, shader, uniform } from '../kernels/common';
import vec4Source from '../wgsl/gemm-vec4.wgsl';
import type { GemmOperands, GemmShape, GemmTarget, GemmType, Vec4Config } from './types';
import { gemmConstants, gemmUniformHead } from './uniform';

/**
 * gemm-vec4's LORA_TRANS_B for a LoRA term with lb transposed or not: dx's layout (lb = A as
 * stored) is compiled in as a constant, while the forward's (lb = B) reads the uniform (2), which
 * measured faster for each (RESULTS.md, "LoRA prologue: lb's layout").
 */
function loraLayoutConstant(transB: boolean): number {
  return transB ? 2 : 0;
}

/** Records one vec4 dispatch of `shape` (a pair runs as two batch entries) into `target`. */
export function recordVec4(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands, cfg: Vec4Config, t: GemmType, target: GemmTarget, label: string): void {
  const { M, N, K } = shape;
  const [bm, bn, wgx, wgy] = [cfg.bm ?? 128, cfg.bn ?? 128, cfg.wgx ?? 16, cfg.wgy ?? 16];
  const halves = [bm / (4 * wgy), bn / (4 * wgx)];
  if (!halves.every((h) => h === 1 || h === 2) || wgx * wgy > 256 || Math.max(bm, bn) > wgx * wgy) {
    throw new ValueError(
      'matmul',
      `${cfg.name}: each thread covers 4 or 8 rows and columns and loads at most two vec4 of each tile`,
      'bm / (4·wgy) and bn / (4·wgx) in {1, 2}, wgx·wgy ≤ 256, bm and bn ≤ wgx·wgy',
      `bm ${bm}, bn ${bn}, wgx ${wgx}, wgy ${wgy}`,
    );
  }
  const { lora, pair, concatN, quant } = ops;
  const entries = pair ? 2 : shape.batch;
  const NT = N + (concatN?.rows ?? 0);
  const drop = lora?.dropout && lora.dropout.p > 0 ? lora.dropout : null;
  // The LoRA term is a prologue of the main loop. Its dropout mask (dx with dropout) is code of
  // its own, compiled only where dropout is on (compiled in behind a runtime check it slowed the
  // forward GEMM: RESULTS.md, "The mask's code out of the prologue").
  const mask = lora !== undefined && drop !== null;
  // Whole-vec4 stores where N % 4 = 0 (much faster for the K = r products, even for the rest),
  // except with the masked prologue, which they made slower (RESULTS.md, "Whole-vec4 stores").
  const vecOut = NT % 4 === 0 && !mask;
  const flag = (b: boolean) => (b ? '1' : '0');
  const { key, source } = shader('gemm-vec4', vec4Source, {
    ENABLE: enableFor(t),
    T: t,
    TC: target.split ? 'f32' : t,
    BM: String(bm),
    BN: String(bn),
    WGX: String(wgx),
    WGY: String(wgy),
    A2: flag(2 * bm > wgx * wgy),
    B2: flag(2 * bn > wgx * wgy),
    VEC_OUT: flag(vecOut),
    LORA: flag(!!lora),
    LORA_MASK: flag(mask),
    RASTER: flag(!!cfg.groupM),
    ...(cfg.groupM ? { GROUP_M: String(cfg.groupM) } : {}),
    PAIR: flag(!!pair),
    CONCAT_N: flag(!!concatN),
    QUANT: flag(!!quant),
    ...(quant ? { BITS: String(quant.bits), GROUP: String(quant.groupSize), QS: '6', QB: '7' } : {}),
  });
  backend.dispatch({
    key,
    source,
    constants: { ...gemmConstants(shape, ops, target.split), ...(lora ? { LORA_TRANS_B: loraLayoutConstant(lora.transB) } : {}) },
    buffers: [
      ops.a,
      ops.b,
      ops.bias ?? dummy(backend),
      target.out,
      lora?.la ?? pair?.a ?? null,
      lora?.lb ?? pair?.b ?? concatN?.b ?? null,
      ...(quant ? [quant.scales, quant.biases] : []),
    ],
    uniform: uniform([
      ...gemmUniformHead({ M, N: NT, K, entries }, ops, target.split ? target.kChunk : K, target.splits),
      lora?.r ?? 0,
      lora?.transB ? 1 : 0,
      { f32: lora?.scale ?? 0 },
      drop ? 1 : 0,
      drop ? drop.seed >>> 0 : 0,
      drop ? Math.ceil(drop.p * 2 ** 24) : 0,
      { f32: drop ? 1 / (1 - drop.p) : 1 },
      N,
    ]),
    workgroups: [Math.ceil(NT / bn), Math.ceil(M / bm), entries * target.splits],
    label,
  });
}
