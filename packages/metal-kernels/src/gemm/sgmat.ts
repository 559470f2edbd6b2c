/**
 * The subgroup-matrix GEMM (gemm-sgmat.wgsl): Apple's simdgroup matrices as Dawn and browsers
 * expose them (`chromium-experimental-subgroup-matrix`; f32 and f16 8×8×8 on Apple, f16 16×16×16
 * and others on NVIDIA). Its config comes from the adapter's report (`subgroupMatrixChoice` in
 * select.ts), and the selector takes it only where the backend opts in (`WebGPUBackend.subgroupMatrix`).
 */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { subgroupMatrixConfigsText } from '../device';
import { dummy, enableFor, shader, uniform } from '../kernels/common';
import sgmatSource from '../wgsl/gemm-sgmat.wgsl';
import { subgroupMatrixChoice } from './select';
import type { GemmOperands, GemmShape, SgmatConfig } from './types';
import { gemmConstants, gemmUniformHead } from './uniform';

/** The WGSL of `cfg` for operands of type `t` (benchmarks compile it on adapters that cannot run it, to validate it). */
export function sgmatShader(cfg: SgmatConfig, t: 'f32' | 'f16'): { key: string; source: string } {
  return shader('gemm-sgmat', sgmatSource, {
    ENABLE: enableFor(t, cfg.component),
    T: t,
    MT: cfg.component,
    SM: String(cfg.sm),
    SN: String(cfg.sn),
    SK: String(cfg.sk),
    SG: String(cfg.subgroupSize),
    RM: String(cfg.rm),
    RN: String(cfg.rn),
    DIRECT: cfg.direct && t === cfg.component ? '1' : '0',
  });
}

/** Records C = α·op(A)·op(B) + β·C + bias on the subgroup-matrix kernel; throws where the adapter cannot run `cfg`. */
export function recordSgmat(
  backend: WebGPUBackend,
  shape: GemmShape,
  ops: Pick<GemmOperands, 'a' | 'b' | 'c' | 'bias' | 'aBatchStride' | 'bBatchStride' | 'alpha' | 'beta'>,
  t: 'f32' | 'f16',
  cfg: SgmatConfig,
): void {
  const report = backend.context.report;
  const offered = subgroupMatrixChoice(report, t === 'f16' ? 'float16' : 'float32');
  const same =
    offered &&
    offered.component === cfg.component &&
    offered.sm === cfg.sm &&
    offered.sn === cfg.sn &&
    offered.sk === cfg.sk &&
    offered.subgroupSize === cfg.subgroupSize;
  // An f32 component also serves f16 operands (widened as they are staged).
  const widened = t === 'f16' && cfg.component === 'f32' && subgroupMatrixChoice(report, 'float32')?.sm === cfg.sm;
  for (const [key, v] of [
    ['rm', cfg.rm],
    ['rn', cfg.rn],
  ] as const)
    if (!Number.isInteger(v) || v < 1 || v > 8) throw new ValueError('matmul', `${cfg.name}: ${key} must be an integer in 1..8`, '1..8', String(v));
  if (!same && !widened) {
    const configs = subgroupMatrixConfigsText(report);
    throw new ValueError(
      'matmul',
      `${cfg.name} needs the adapter's subgroup-matrix configuration`,
      `chromium-experimental-subgroup-matrix with ${cfg.component}->f32 ${cfg.sm}x${cfg.sn}x${cfg.sk} and a fixed subgroup size of ${cfg.subgroupSize}`,
      `${report.features.includes('chromium-experimental-subgroup-matrix') ? configs || 'no configurations' : 'no such feature'}, subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`,
    );
  }
  // Loading matrices straight from storage makes Dawn require bindings of at least one matrix
  // (16 × 16 halves: 512 bytes); smaller operands take the staged form, which has no such minimum.
  const matrixBytes = Math.max(cfg.sm, cfg.sn) * cfg.sk * (t === 'f16' ? 2 : 4);
  const direct = cfg.direct && ops.a.size >= matrixBytes && ops.b.size >= matrixBytes;
  const { key, source } = sgmatShader(direct ? cfg : { ...cfg, direct: false }, t);
  const { M, N, K, batch } = shape;
  backend.dispatch({
    key,
    source,
    constants: gemmConstants(shape, ops),
    buffers: [ops.a, ops.b, ops.bias ?? dummy(backend), ops.c],
    uniform: uniform(gemmUniformHead({ M, N, K, entries: batch }, ops, 0, 0)),
    workgroups: [Math.ceil(N / (2 * cfg.rn * cfg.sn)), Math.ceil(M / (2 * cfg.rm * cfg.sm)), batch],
    label: cfg.name,
  });
}
