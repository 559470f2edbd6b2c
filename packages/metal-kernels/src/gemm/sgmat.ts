/**
 * The subgroup-matrix GEMM (gemm-sgmat.wgsl): Apple's simdgroup matrices as Dawn and browsers
 * expose them (`chromium-experimental-subgroup-matrix`; f32 and f16 8×8×8 on Apple, f16 16×16×16
 * and others on NVIDIA). Its config comes from the adapter's report (`subgroupMatrixChoice` in
 * select.ts), and the selector takes it only where the backend opts in (`WebGPUBackend.subgroupMatrix`).
 */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { subgroupMatrixConfigsText } from '../device';
import { dummy, enableFor, generatedShader, lines, uniform } from '../kernels/common';
import sgmatSource from '../wgsl/gemm-sgmat.wgsl';
import { subgroupMatrixChoice } from './select';
import type { GemmOperands, GemmShape, SgmatConfig } from './types';
import { gemmConstants, gemmUniformHead } from './uniform';

/**
 * The statements of one K step of `cfg`: the RM left tiles loaded, then each right tile loaded
 * and multiplied into its RM results. `left(i, trans)` and `right(j, trans)` give a load's
 * pointer, offset, column-major flag and stride for each layout.
 */
function step(cfg: SgmatConfig, left: (i: number, trans: boolean) => string, right: (j: number, trans: boolean) => string, indent: string): string {
  const L = `subgroup_matrix_left<${cfg.component}, ${cfg.sk}, ${cfg.sm}>`;
  const R = `subgroup_matrix_right<${cfg.component}, ${cfg.sn}, ${cfg.sk}>`;
  const loads = (trans: boolean) => lines(cfg.rm, (i) => `${indent}  l${i} = subgroupMatrixLoad<${L}>(${left(i, trans)});`);
  const out = [`${indent}if (TRANS_A == 1u) {`, loads(true), `${indent}} else {`, loads(false), `${indent}}`];
  for (let j = 0; j < cfg.rn; j++)
    out.push(
      `${indent}if (TRANS_B == 1u) { right = subgroupMatrixLoad<${R}>(${right(j, true)}); } else { right = subgroupMatrixLoad<${R}>(${right(j, false)}); }`,
      lines(cfg.rm, (i) => `${indent}acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(l${i}, right, acc_${i}_${j});`),
    );
  return out.join('\n');
}

/** The WGSL of `cfg` for operands of type `t` (benchmarks compile it on adapters that cannot run it, to validate it). */
export function sgmatShader(cfg: SgmatConfig, t: 'f32' | 'f16'): { key: string; source: string } {
  const direct = cfg.direct && t === cfg.component;
  const params = { t, mt: cfg.component, sm: cfg.sm, sn: cfg.sn, sk: cfg.sk, sg: cfg.subgroupSize, rm: cfg.rm, rn: cfg.rn, direct: direct ? 1 : 0 };
  // The statements are generated once per configuration (generatedShader), not per dispatch.
  return generatedShader('gemm-sgmat', sgmatSource, params, () => {
    const tiles = Array.from({ length: cfg.rm * cfg.rn }, (_, e) => [Math.floor(e / cfg.rn), e % cfg.rn]);
    const staged = step(
      cfg,
      (i, trans) => (trans ? `&As, ks * BM + (tm0 + ${i}u) * SM, true, BM` : `&As, (tm0 + ${i}u) * SM * BK + ks, false, BK`),
      (j, trans) => (trans ? `&Bs, (tn0 + ${j}u) * SN * BK + ks, true, BK` : `&Bs, ks * BN + (tn0 + ${j}u) * SN, false, BN`),
      '      ',
    );
    const straight = step(
      cfg,
      (i, trans) => (trans ? `&a, a_base + k * p.M + row0 + (tm0 + ${i}u) * SM, true, p.M` : `&a, a_base + (row0 + (tm0 + ${i}u) * SM) * p.K + k, false, p.K`),
      (j, trans) => (trans ? `&b, b_base + (col0 + (tn0 + ${j}u) * SN) * p.K + k, true, p.K` : `&b, b_base + k * p.N + col0 + (tn0 + ${j}u) * SN, false, p.N`),
      '      ',
    );
    return {
      ENABLE: enableFor(t, cfg.component),
      T: t,
      MT: cfg.component,
      SM: String(cfg.sm),
      SN: String(cfg.sn),
      SK: String(cfg.sk),
      SG: String(cfg.subgroupSize),
      RM: String(cfg.rm),
      RN: String(cfg.rn),
      ACC: tiles.map(([i, j]) => `  var acc_${i}_${j} = subgroup_matrix_result<f32, ${cfg.sn}, ${cfg.sm}>();`).join('\n'),
      OPERANDS: [
        lines(cfg.rm, (i) => `  var l${i}: subgroup_matrix_left<${cfg.component}, ${cfg.sk}, ${cfg.sm}>;`),
        `  var right: subgroup_matrix_right<${cfg.component}, ${cfg.sn}, ${cfg.sk}>;`,
      ].join('\n'),
      STAGED_STEP: staged,
      ...(direct ? { DIRECT_STEP: straight } : {}),
      STORE: tiles
        .map(([i, j]) => `  subgroupMatrixStore(&Cs, sg * SM * SN, acc_${i}_${j}, false, SN);\n  write_tile(${i}u, ${j}u, row0, col0, batch, t);`)
        .join('\n'),
      DIRECT: direct ? '1' : '0',
    };
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
    buffers: [ops.a, ops.b, ops.bias ?? dummy(backend), ops.c, ops.a, ops.b],
    uniform: uniform(gemmUniformHead({ M, N, K, entries: batch }, ops, 0, 0)),
    workgroups: [Math.ceil(N / (2 * cfg.rn * cfg.sn)), Math.ceil(M / (2 * cfg.rm * cfg.sm)), batch],
    label: cfg.name,
  });
}
