/**
 * The subgroup-matrix GEMM (gemm-sgmat.wgsl): Apple's simdgroup matrices as Dawn and browsers
 * expose them (`chromium-experimental-subgroup-matrix`, f32 and f16 8×8×8). It is chosen from the
 * configurations the adapter reports, and used only when the backend opts in
 * (`WebGPUBackend.subgroupMatrix`) until it has run on an adapter with a float configuration
 * (lavapipe has none); its tests run wherever the feature exists.
 */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from './backend';
import type { AdapterReport } from './device';
import type { GemmShape } from './gemm';
import { dummy, enableFor, shader, uniform } from './kernels/common';
import sgmatSource from './wgsl/gemm-sgmat.wgsl';

export interface SgmatConfig {
  kind: 'sgmat';
  name: string;
  /** The matrices' component type; results are always f32. */
  component: 'f32' | 'f16';
  sm: number;
  sn: number;
  sk: number;
  /** The adapter's (fixed) subgroup size. */
  subgroupSize: number;
  splits: 1;
}

type Report = Pick<AdapterReport, 'features' | 'shaderF16' | 'subgroupMatrixConfigs' | 'subgroupMinSize' | 'subgroupMaxSize'>;

/**
 * The configuration gemm-sgmat.wgsl would use on an adapter for operands of `dtype`, or null: a
 * float configuration with f32 results and dims of at most 16, on an adapter whose subgroup size
 * is fixed and divides 128 into at most 16 subgroups. f32 operands need f32 components (f16 ones
 * would round them); f16 operands prefer f16 components (exact for them) and take f32 ones
 * otherwise.
 */
export function subgroupMatrixChoice(report: Report, dtype: 'float32' | 'float16'): SgmatConfig | null {
  if (!report.features.includes('chromium-experimental-subgroup-matrix')) return null;
  const size = report.subgroupMinSize;
  if (size === undefined || size !== report.subgroupMaxSize || size < 8 || size > 128 || 128 % size !== 0) return null;
  const usable = (component: string) =>
    report.subgroupMatrixConfigs.find(
      (c) => c.componentType === component && c.resultComponentType === 'f32' && [c.M, c.N, c.K].every((d) => d >= 1 && d <= 16),
    );
  const components: ('f32' | 'f16')[] = dtype === 'float16' && report.shaderF16 ? ['f16', 'f32'] : ['f32'];
  for (const component of components) {
    const c = usable(component);
    if (c)
      return {
        kind: 'sgmat',
        name: `sgmat-${4 * c.M}x${4 * c.N} ${component} ${c.M}x${c.N}x${c.K}`,
        component,
        sm: c.M,
        sn: c.N,
        sk: c.K,
        subgroupSize: size,
        splits: 1,
      };
  }
  return null;
}

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
  });
}

/** Records C = α·op(A)·op(B) + β·C + bias on the subgroup-matrix kernel; throws where the adapter cannot run `cfg`. */
export function recordSgmat(
  backend: WebGPUBackend,
  shape: GemmShape,
  ops: { a: GPUBuffer; b: GPUBuffer; c: GPUBuffer; bias?: GPUBuffer; aBatchStride: number; bBatchStride: number; alpha: number; beta: number },
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
  if (!same && !widened) {
    const configs = report.subgroupMatrixConfigs.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ');
    throw new ValueError(
      'matmul',
      `${cfg.name} needs the adapter's subgroup-matrix configuration`,
      `chromium-experimental-subgroup-matrix with ${cfg.component}->f32 ${cfg.sm}x${cfg.sn}x${cfg.sk} and a fixed subgroup size of ${cfg.subgroupSize}`,
      `${report.features.includes('chromium-experimental-subgroup-matrix') ? configs || 'no configurations' : 'no such feature'}, subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`,
    );
  }
  const { key, source } = sgmatShader(cfg, t);
  const { M, N, K, batch } = shape;
  backend.dispatch({
    key,
    source,
    constants: { TRANS_A: shape.transA ? 1 : 0, TRANS_B: shape.transB ? 1 : 0, HAS_BIAS: ops.bias ? 1 : 0, ACCUMULATE: ops.beta !== 0 ? 1 : 0 },
    buffers: [ops.a, ops.b, ops.bias ?? dummy(backend), ops.c],
    uniform: uniform([M, N, K, batch, ops.aBatchStride, ops.bBatchStride, 0, 0, { f32: ops.alpha }, { f32: ops.beta }]),
    workgroups: [Math.ceil(N / (4 * cfg.sn)), Math.ceil(M / (4 * cfg.sm)), batch],
    label: cfg.name,
  });
}
