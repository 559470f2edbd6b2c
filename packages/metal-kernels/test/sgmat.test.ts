import * as T from '@metal-lora/tensor';
import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { type AdapterReport, type GemmOverrides, type GemmShape, selectGemm, subgroupMatrixPath, type WebGPUBackend } from '../src/index';
import {
  LORA_TILE,
  quantConfig,
  type SgmatConfig,
  selectLoraBackward,
  selectQLoraForward,
  sgmatConfig,
  sgmatPrefetches,
  sgmatQuantApplies,
  sgmatShader,
  sgmatStorageBytes,
  subgroupMatrixChoice,
  subgroupMatrixMajorness,
} from '../src/internal';
import { checkMatmul, type Stored } from './gemm-check';
import { clearOverrides, gpuIt, withDispatchLabels } from '../../../test-support/gpu';

afterEach(clearOverrides);

type Report = Pick<AdapterReport, 'features' | 'shaderF16' | 'subgroupMatrixConfigs' | 'subgroupMinSize' | 'subgroupMaxSize'>;
const config = (componentType: string, resultComponentType: string, M: number, N: number, K: number) => ({ componentType, resultComponentType, M, N, K });
/** What an Apple GPU reports through Dawn (Metal simdgroup matrices). */
const apple: Report = {
  features: ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'],
  shaderF16: true,
  subgroupMatrixConfigs: [config('f32', 'f32', 8, 8, 8), config('f16', 'f16', 8, 8, 8)],
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
};
/** What the H100 reports through Dawn/Vulkan. */
const h100: Report = { ...apple, shaderF16: false, subgroupMatrixConfigs: [config('i8', 'i32', 16, 16, 32), config('u8', 'u32', 16, 16, 32)] };
/** What the H200 reports through Dawn/Vulkan with `f16OnNvidia` (2026-12-03). */
const h200: Report = {
  ...apple,
  subgroupMatrixConfigs: [
    config('f16', 'f16', 16, 16, 16),
    config('f16', 'f16', 16, 8, 16),
    config('f16', 'f32', 16, 16, 16),
    config('f16', 'f32', 16, 8, 16),
    config('f16', 'f32', 16, 8, 8),
    config('i8', 'i32', 16, 16, 32),
  ],
};

describe('subgroupMatrixChoice and the selector (pure)', () => {
  it('takes the f32 8×8×8 configuration of an Apple GPU for f32 and, lacking f16→f32, for f16 operands', () => {
    expect(subgroupMatrixChoice(apple, 'float32')).toMatchObject({
      kind: 'sgmat',
      component: 'f32',
      sm: 8,
      sn: 8,
      sk: 8,
      subgroupSize: 32,
      rm: 4,
      rn: 4,
      name: 'sgmat-64x64 f32 8x8x8',
    });
    expect(subgroupMatrixChoice(apple, 'float16')?.component).toBe('f32');
    const mixed = { ...apple, subgroupMatrixConfigs: [...apple.subgroupMatrixConfigs, config('f16', 'f32', 8, 8, 8)] };
    expect(subgroupMatrixChoice(mixed, 'float16')?.component).toBe('f16');
    expect(subgroupMatrixChoice(mixed, 'float32')?.component).toBe('f32');
  });
  it('takes f16→f32 16×16×16 on an H200 for f16 operands only (f32 operands would be rounded)', () => {
    expect(subgroupMatrixChoice(h200, 'float16')).toMatchObject({
      component: 'f16',
      sm: 16,
      sn: 16,
      sk: 16,
      rm: 4,
      rn: 4,
      prefetch: true,
      name: 'sgmat-128x128/prefetch f16 16x16x16',
    });
    expect(subgroupMatrixChoice(h200, 'float32')).toBeNull();
    expect(subgroupMatrixChoice({ ...h200, shaderF16: false }, 'float16')).toBeNull();
  });
  it('refuses integer-only configurations, varying subgroup sizes and adapters without the feature', () => {
    expect(subgroupMatrixChoice(h100, 'float32')).toBeNull();
    expect(subgroupMatrixChoice({ ...apple, subgroupMinSize: 16, subgroupMaxSize: 32 }, 'float32')).toBeNull();
    expect(subgroupMatrixChoice({ ...apple, features: ['subgroups'] }, 'float32')).toBeNull();
    expect(subgroupMatrixChoice({ ...apple, subgroupMatrixConfigs: [config('f32', 'f32', 32, 32, 8)] }, 'float32')).toBeNull();
    expect(subgroupMatrixChoice({ ...apple, subgroupMinSize: 128, subgroupMaxSize: 128 }, 'float32')).toBeNull();
  });
  it('sends big products to it when the backend opts in, and keeps decode- and rank-shaped ones elsewhere', () => {
    const sgmat = subgroupMatrixChoice(apple, 'float32');
    const device = { maxWorkgroupStorage: 16384, maxInvocations: 256, sgmat };
    const shape = (M: number, N: number, K: number, transB = true): GemmShape => ({ M, N, K, batch: 1, transA: false, transB });
    expect(selectGemm(shape(2048, 4096, 4096), device).name).toBe('sgmat-64x64 f32 8x8x8');
    expect(selectGemm(shape(300, 300, 300, false), device).kind).toBe('sgmat');
    expect(selectGemm(shape(1, 4096, 4096), device).name).toBe('gemv-rows1');
    expect(selectGemm(shape(2048, 16, 4096), device).kind).toBe('gemv-rows');
    expect(selectGemm(shape(2048, 4096, 4096), { ...device, sgmat: null }).name).toBe('vec4-128x128');
  });
  it('sends a prefetching configuration only products whose every workgroup prefetches', () => {
    const sgmat = subgroupMatrixChoice(h200, 'float16');
    const device = { maxWorkgroupStorage: 49152, maxInvocations: 1024, sgmat };
    const pick = (M: number, N: number, K: number, transB: boolean, transA = false, batch = 1) => selectGemm({ M, N, K, batch, transA, transB }, device).kind;
    // Llama-3.2-1B's projections at 4 × 512 tokens, both directions.
    expect(pick(2048, 2048, 2048, true)).toBe('sgmat');
    expect(pick(2048, 512, 2048, true)).toBe('sgmat');
    expect(pick(2048, 2048, 8192, false)).toBe('sgmat');
    expect(pick(2048, 512, 2048, false, false, 2)).toBe('sgmat');
    // SmolLM2's products with its hidden size 576 on N: a column of edge workgroups.
    expect(pick(2048, 576, 576, true)).not.toBe('sgmat');
    expect(pick(2048, 1536, 576, true)).toBe('sgmat');
    expect(pick(2000, 1536, 576, true)).not.toBe('sgmat');
    // Qwen2.5-0.5B's head backward dlogits·W in a chunk of 512 rows: 4 × 7 workgroups over K =
    // 151,936, faster there than the portable kernels' K split (19.7 against 30.1 ms a step).
    expect(pick(512, 896, 151936, false)).toBe('sgmat');
    // Shapes whose tiles would all be staged element by element.
    expect(pick(2048, 2048, 2048, false, true)).not.toBe('sgmat');
    expect(pick(2048, 2048, 2056, true)).not.toBe('sgmat');
    expect(sgmatPrefetches({ M: 8, N: 8, K: 64, batch: 1, transA: false, transB: true }, sgmat!)).toBe(true);
    expect(sgmatPrefetches({ M: 8, N: 8, K: 64, batch: 1, transA: false, transB: true }, { ...sgmat!, prefetch: false })).toBe(false);
    // A configuration that stages anyway (Apple's 8 × 8) takes every such product, as before.
    const apple32 = { ...device, sgmat: subgroupMatrixChoice(apple, 'float32') };
    expect(selectGemm({ M: 2048, N: 576, K: 49152, batch: 1, transA: false, transB: false }, apple32).kind).toBe('sgmat');
  });
  it('takes a quantized B (QLoRA) only where every workgroup prefetches whole 32-value chunks of W', () => {
    const sgmat = subgroupMatrixChoice(h200, 'float16')!;
    const device = { maxWorkgroupStorage: 49152, maxInvocations: 1024, sgmat };
    const shape = (M: number, N: number, K: number, transB: boolean, extra: Partial<GemmShape> = {}): GemmShape => ({
      M,
      N,
      K,
      batch: 1,
      transA: false,
      transB,
      dtype: 'float16',
      ...extra,
    });
    const q4 = { bits: 4, groupSize: 64 };
    // Llama-3.2-1B's base products at 4 × 512 tokens, both directions, and its tied head's chunk.
    for (const s of [shape(2048, 2048, 2048, true), shape(2048, 512, 2048, true), shape(2048, 2048, 8192, false), shape(512, 128256, 2048, true)]) {
      expect(sgmatQuantApplies(s, sgmat, q4)).toBe(true);
      expect(quantConfig(s, device, q4).kind).toBe('sgmat');
    }
    // Not: f32 operands, A transposed, batches, edge tiles (SmolLM2's 576), dy·W whose K (W's
    // rows, out_features) is not a whole number of 32-deep tiles.
    for (const s of [
      shape(2048, 2048, 2048, true, { dtype: 'float32' }),
      shape(2048, 2048, 2048, true, { transA: true }),
      shape(2048, 2048, 2048, true, { batch: 2 }),
      shape(2048, 576, 576, true),
      shape(2000, 1536, 576, true),
      shape(2048, 2048, 2056, false),
    ]) {
      expect(sgmatQuantApplies(s, sgmat, q4)).toBe(false);
      expect(quantConfig(s, device, q4).kind).not.toBe('sgmat');
    }
    expect(sgmatQuantApplies(shape(2048, 2048, 2048, true), { ...sgmat, prefetch: false }, q4)).toBe(false);
    // Without the backend's configuration, or where its tiles exceed the workgroup memory, the vec4
    // kernel's QUANT section takes it, as before.
    expect(quantConfig(shape(2048, 2048, 2048, true), { ...device, sgmat: null }, q4).name).toBe('qmm-vec4-128x128');
    expect(quantConfig(shape(2048, 2048, 2048, true), { ...device, maxWorkgroupStorage: 16384 }, q4).name).toBe('qmm-vec4-128x128');
    // A 16-deep tile (the 16 × 8 × 8 configuration) holds no 32-value chunk along K; along N (dy·W) it does.
    const shallow = sgmatConfig('f16', 16, 8, 8, 32, 4, 4, true);
    expect(sgmatQuantApplies(shape(2048, 2048, 2048, true), shallow, q4)).toBe(false);
    expect(sgmatQuantApplies(shape(2048, 2048, 2048, false), shallow, q4)).toBe(true);
  });
  it('plans QLoRA: the LoRA term its own product on matrix units, the vec4 prologue elsewhere', () => {
    const sgmat = subgroupMatrixChoice(h200, 'float16')!;
    const device = { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32, sgmat };
    const portable = { ...device, sgmat: null };
    const q4 = { bits: 4, groupSize: 64 };
    const needs = { needX: true, needA: true, needB: true, needWeight: false, needBias: false };
    const named = (p: { config: { name: string } } | null | undefined) => p?.config.name ?? null;
    type Row = [string, [number, number, number, number], typeof device | typeof portable, GemmOverrides, string, string | null, string | null];
    // model, [M, in, out, r], device, overrides, forward kind, y's base config (fused: the LoRA
    // tile), dx's base config (null: fused, U·A the prologue)
    const rows: Row[] = [
      ['Llama q_proj', [2048, 2048, 2048, 8], device, {}, 'composed', 'sgmat-128x128/prefetch f16 16x16x16', 'sgmat-128x128/prefetch f16 16x16x16'],
      ['Llama down_proj', [2048, 8192, 2048, 8], device, {}, 'composed', 'sgmat-128x128/prefetch f16 16x16x16', 'sgmat-128x128/prefetch f16 16x16x16'],
      ['Llama q_proj, portable', [2048, 2048, 2048, 8], portable, {}, 'fused', 'vec4-128x128', null],
      ['SmolLM2 q_proj (576: edge tiles)', [2048, 576, 576, 8], device, {}, 'fused', 'vec4-128x128', null],
      ['forced composed', [2048, 2048, 2048, 8], portable, { loraPlan: 'composed' }, 'composed', 'qmm-vec4-128x128', 'qmm-vec4-128x128'],
      ['rank 6', [2048, 2048, 2048, 6], portable, {}, 'composed', 'qmm-vec4-128x128', 'qmm-vec4-128x128'],
      ['decode', [8, 2048, 2048, 8], device, {}, 'composed', 'qmm-8x64', 'qmm-8x64'],
    ];
    for (const [what, [M, inF, outF, r], dev, overrides, kind, y, dx] of rows) {
      const dims = { M, inF, outF, r, dtype: 'float16' as const };
      const forward = selectQLoraForward(dims, dev, q4, overrides);
      expect([forward.kind, named(forward.y)], what).toEqual([kind, y]);
      expect(forward.t.shape, what).toMatchObject({ M, N: r, K: inF });
      if (forward.kind === 'composed') expect(forward.term.shape, what).toMatchObject({ M, N: outF, K: r });
      const backward = selectLoraBackward(dims, needs, dev, overrides, q4);
      const plan = backward.dx!;
      expect('fused' in plan ? null : named(plan.base), what).toBe(dx);
      if ('fused' in plan) expect(plan.fused.config, what).toBe(LORA_TILE);
      else
        expect([plan.base.shape, plan.term.shape], what).toMatchObject([
          { M, N: inF, K: outF, transB: false },
          { M, N: inF, K: r },
        ]);
    }
    // Only what is asked for is planned.
    expect(selectLoraBackward({ M: 2048, inF: 2048, outF: 2048, r: 8, dtype: 'float16' }, { ...needs, needX: false }, device, {}, q4).dx).toBeNull();
  });
  it('stages a quantized B from its packed words: 16 bytes a load at 4 and 8 bits, words across boundaries at 3 bits', () => {
    const cfg = sgmatConfig('f16', 16, 16, 16, 32, 4, 4, true);
    const q4 = sgmatShader(cfg, 'f16', { bits: 4, groupSize: 64 }).source;
    expect(q4).toContain('@group(0) @binding(8) var<storage, read> scales: array<f16>;');
    expect(q4).toContain('@group(0) @binding(10) var<uniform> p: Params;');
    // One 16-byte load of 32 values per thread (128 rows × 32 over 128 threads), and no element-wise fallback.
    expect(q4).toContain('var gq0_0: vec4<u32>;');
    expect(q4).not.toContain('gq0_1');
    expect(q4).not.toMatch(/fn stage\(|stage_vec4\(/);
    // Each thread's chunk of 32 values: row t of W [N, K] (Wᵀ), or row t / 4, chunk t % 4 of W [K, N];
    // its words, group, and place in the padded staged tile.
    for (const line of [
      '{ let o = (col0 + (t + 0u) / 1u) * kw + (0u / 32u + (t + 0u) % 1u) * BITS; gq0_0 = b16[o / 4u + 0u]; let gi = (col0 + (t + 0u) / 1u) * (p.K / GROUP) + (0u + ((t + 0u) % 1u) * 32u) / GROUP;',
      '{ let o = (0u + (t + 0u) / 4u) * nw + (col0 / 32u + (t + 0u) % 4u) * BITS; gq0_0 = b16[o / 4u + 0u]; let gi = (0u + (t + 0u) / 4u) * (p.N / GROUP) + (col0 + ((t + 0u) % 4u) * 32u) / GROUP;',
      'let o = ((t + 0u) / 1u) * 40u + ((t + 0u) % 1u) * 32u;',
      'let o = ((t + 0u) / 4u) * 136u + ((t + 0u) % 4u) * 32u;',
      'let kw = p.K / 32u * BITS;',
      'let nw = p.N / 32u * BITS;',
    ])
      expect(q4).toContain(line);
    // Value 7 of a word is its top four bits: no mask needed.
    expect(q4).toContain('(gq0_0.x >> 28u))');
    expect(sgmatShader(cfg, 'f16', { bits: 8, groupSize: 32 }).source).toContain('var gq0_1: vec4<u32>;');
    // 3 bits: three scalar words; value 10 spans bits 30..32, so it takes word 0's top two bits and word 1's lowest.
    const q3 = sgmatShader(cfg, 'f16', { bits: 3, groupSize: 128 }).source;
    expect(q3).toContain('var gw0_2: u32;');
    expect(q3).toContain('((gw0_0 >> 30u) | (gw0_1 << 2u)) & 7u');
    // Each variant its own shader; f32 operands on an f16 configuration are refused.
    expect(sgmatShader(cfg, 'f16', { bits: 4, groupSize: 32 }).key).not.toBe(sgmatShader(cfg, 'f16', { bits: 4, groupSize: 64 }).key);
    expect(() => sgmatShader(cfg, 'f32', { bits: 4, groupSize: 64 })).toThrow(/matmul: .* takes a quantized B only where it prefetches/);
  });
  it('keeps a configuration whose staged tiles exceed the workgroup memory off the matrix units', () => {
    const wide = sgmatConfig('f32', 16, 16, 16, 32, 4, 4, false);
    expect(sgmatStorageBytes(wide)).toBe((128 + 128) * 32 * 4 + 4 * 16 * 16 * 4);
    const shape: GemmShape = { M: 2048, N: 4096, K: 4096, batch: 1, transA: false, transB: true };
    expect(selectGemm(shape, { maxWorkgroupStorage: 16384, maxInvocations: 256, sgmat: wide }).kind).not.toBe('sgmat');
    expect(selectGemm(shape, { maxWorkgroupStorage: 65536, maxInvocations: 256, sgmat: wide }).kind).toBe('sgmat');
    // Prefetching pads each staged row by 16 bytes; B's tile is the larger of [BN][BK + 8] and [BK][BN + 8].
    expect(sgmatStorageBytes(sgmatConfig('f16', 16, 16, 16, 32, 4, 4, true))).toBe((128 * 40 + 128 * 40) * 2 + 4 * 16 * 16 * 4);
    expect(sgmatStorageBytes(sgmatConfig('f16', 16, 16, 16, 32, 1, 4, true))).toBe((32 * 40 + Math.max(128 * 40, 32 * 136)) * 2 + 4 * 16 * 16 * 4);
  });
  it('writes each tile as its own variable: an array of subgroup matrices was kept in memory on the H200 (33 against 565 TFLOP/s)', () => {
    for (const prefetch of [false, true]) {
      const { source } = sgmatShader(sgmatConfig('f16', 16, 16, 16, 32, 4, 4, prefetch), 'f16');
      expect(source).not.toMatch(/array<subgroup_matrix/);
      for (const name of ['acc_0_0', 'acc_3_3', 'l3']) expect(source).toContain(`var ${name}`);
      // The staged loop's step, and prefetch's two K steps of a 32-deep tile unrolled.
      expect(source.match(/subgroupMatrixMultiplyAccumulate/g)?.length).toBe(prefetch ? 48 : 16);
    }
  });
  it("loads and stores in the compiler's form: the layout a template argument, or (older Dawn) a bool argument", () => {
    for (const prefetch of [false, true]) {
      const cfg = sgmatConfig('f16', 16, 16, 16, 32, 4, 4, prefetch);
      const template = sgmatShader(cfg, 'f16');
      const argument = sgmatShader(cfg, 'f16', null, 'argument');
      expect(template.key).not.toBe(argument.key);
      // A transposed B is read column-major, the rest row-major; C's tiles are stored row-major.
      expect(template.source).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&Bs, ');
      expect(template.source).toContain('subgroupMatrixStore<row_major>(&Cs, sg * SM * SN, acc_3_3, SN);');
      expect(template.source).not.toMatch(/subgroupMatrix(Load<[^>]*>>|Store)\(/);
      expect(argument.source).toContain('subgroupMatrixStore(&Cs, sg * SM * SN, acc_3_3, false, SN);');
      expect(argument.source).not.toMatch(/_major/);
      // The same calls otherwise.
      expect(template.source.match(/subgroupMatrixLoad/g)?.length).toBe(argument.source.match(/subgroupMatrixLoad/g)?.length);
    }
  });
  it("'auto' takes the configurations that prefetch (NVIDIA's 16-wide), not Apple's unmeasured 8 × 8; true and false force", () => {
    const on = (report: Report, subgroupMatrix: boolean | 'auto', dtype: 'float32' | 'float16') =>
      subgroupMatrixPath({ subgroupMatrix, context: { report } } as unknown as WebGPUBackend, dtype);
    expect(on(h200, 'auto', 'float16')).toBe('sgmat-128x128/prefetch f16 16x16x16');
    expect(on(h200, 'auto', 'float32')).toBe('portable');
    expect(on(h200, false, 'float16')).toBe('portable');
    expect(on(apple, 'auto', 'float32')).toBe('portable');
    expect(on(apple, true, 'float32')).toBe('sgmat-64x64 f32 8x8x8');
  });
  it('prefetches through 16-byte views bound after the vec4 ones, into rows padded by 16 bytes', () => {
    const { source } = sgmatShader(sgmatConfig('f16', 16, 16, 16, 32, 4, 4, true), 'f16');
    expect(source).toContain('@group(0) @binding(6) var<storage, read> a16: array<vec4<u32>>;');
    expect(source).toContain('@group(0) @binding(8) var<uniform> p: Params;');
    expect(source).toContain('var<workgroup> As: array<f16, 5120>;');
    // Four 16-byte loads of A and of B per thread (128 × 32 halves over 128 threads), named, not an array.
    for (const v of ['ga0', 'ga3', 'gb3']) expect(source).toContain(`var ${v}: vec4<u32>;`);
    expect(source).not.toContain('ga4');
    // A's rows are 40 halves apart, B's 40 (transposed) or 136.
    expect(source).toContain('subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&As, (tm0 + 1u) * 640u + 16u, 40u)');
    expect(source).toContain('subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, row_major>(&Bs, 2176u + (tn0 + 2u) * SN, 136u)');
    // Without prefetch (or with f16 operands on an f32 component) the views are not declared and the uniform is binding 6.
    for (const [cfg, t] of [
      [sgmatConfig('f16', 16, 16, 16, 32, 4, 4, false), 'f16'],
      [sgmatConfig('f32', 8, 8, 8, 32, 4, 4, true), 'f16'],
    ] as const) {
      const other = sgmatShader(cfg, t).source;
      expect(other).not.toContain('var<storage, read> a16');
      expect(other).toContain('@group(0) @binding(6) var<uniform> p: Params;');
    }
    // f32 operands unpack four floats a load (Apple's f32 8 × 8 × 8 with prefetch: 64 × 16 floats over 128 threads, two loads each).
    const f32 = sgmatShader(sgmatConfig('f32', 8, 8, 8, 32, 4, 4, true), 'f32').source;
    expect(f32).toContain('bitcast<vec4<f32>>(ga1)');
    expect(f32).not.toContain('ga2');
  });
});

/** matmul through the forced subgroup-matrix config against float64 (the shared GEMM check), the selector restored after. */
async function check(backend: WebGPUBackend, cfg: SgmatConfig, dtype: Stored, aShape: number[], bShape: number[], options: T.MatmulOptions): Promise<void> {
  backend.overrides.gemm = cfg;
  try {
    await checkMatmul(backend, aShape, bShape, options, cfg.name, dtype);
  } finally {
    backend.overrides = {};
  }
}

describe('webgpu subgroup-matrix GEMM', () => {
  gpuIt(
    'against float64 on awkward shapes, every transpose, batches, blockings and f16 storage (where the adapter offers a float configuration)',
    async (backend, ctx) => {
      const report = backend.context.report;
      // f32 operands where an f32 configuration exists (Apple), else f16 ones (NVIDIA's f16→f32 with the f16 toggle).
      const f32 = subgroupMatrixChoice(report, 'float32');
      const f16 = report.shaderF16 ? subgroupMatrixChoice(report, 'float16') : null;
      const [dtype, cfg] = f32 ? (['float32', f32] as const) : (['float16', f16] as const);
      if (!cfg) {
        ctx.skip(`no float subgroup-matrix configuration on ${report.description || 'this adapter'}`);
        return;
      }
      const [M, N, K] = [70, 45, 101];
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const) {
        await check(backend, cfg, dtype, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb });
      }
      await check(backend, cfg, dtype, [3, 33, 40], [40, 37], {});
      await check(backend, cfg, dtype, [2, 65, 17], [2, 17, 130], {});
      await check(backend, cfg, dtype, [1, 1], [1, 1], {});
      for (const [rm, rn, prefetch] of [
        [1, 1, false],
        [2, 4, false],
        [2, 2, true],
        [1, 4, true],
      ] as const) {
        const blocked = sgmatConfig(cfg.component, cfg.sm, cfg.sn, cfg.sk, cfg.subgroupSize, rm, rn, prefetch);
        await check(backend, blocked, dtype, [300, 130], [300, 200], { transposeA: true });
        // Interior tiles (prefetched where chosen) and edge ones in one product, both layouts of B.
        await check(backend, blocked, dtype, [200, 256], [136, 256], { transposeB: true });
        await check(backend, blocked, dtype, [200, 256], [256, 136], {});
        await check(backend, blocked, dtype, [256, 200], [256, 136], { transposeA: true });
      }
      // The choice itself on whole interior workgroups (prefetched, or vec4 staging): batched, and both operands transposed.
      await check(backend, cfg, dtype, [2, 256, 256], [2, 256, 256], {});
      await check(backend, cfg, dtype, [256, 260], [260, 256], { transposeA: true, transposeB: true });
      await check(backend, { ...cfg, prefetch: !cfg.prefetch }, dtype, [2, 256, 256], [2, 256, 256], { transposeB: true });
      // Interior workgroups that cannot prefetch: K not a whole tile, and rows not on 16 bytes.
      await check(backend, cfg, dtype, [256, 264], [256, 264], { transposeB: true });
      await check(backend, cfg, dtype, [256, 132], [132, 260], {});
      if (f32 && f16) await check(backend, f16, 'float16', [67, 36], [29, 36], { transposeB: true });
      backend.subgroupMatrix = true;
      try {
        // Through the selector, with bias (an epilogue) in a linear layer's shape.
        const x = T.tensor(randomValues(130 * 96, 63), [130, 96], { dtype, backend });
        const w = T.tensor(randomValues(100 * 96, 64), [100, 96], { dtype, backend });
        const bias = T.tensor(randomValues(100, 65), [100], { dtype, backend });
        const y = T.add(T.matmul(x, w, { transposeB: true }), bias);
        const ref = T.add(
          T.matmul(
            T.tensor(randomValues(130 * 96, 63), [130, 96], { dtype: 'float64' }),
            T.tensor(randomValues(100 * 96, 64), [100, 96], { dtype: 'float64' }),
            { transposeB: true },
          ),
          T.tensor(randomValues(100, 65), [100], { dtype: 'float64' }),
        ).dataSync();
        const tol = dtype === 'float16' ? scaledTolerance(TOLERANCES.float16, ref, 1e-3) : scaledTolerance(TOLERANCES.float32Gemm, ref);
        assertClose(await y.data(), ref, tol, 'sgmat through the selector');
      } finally {
        backend.subgroupMatrix = 'auto';
      }
    },
  );
  gpuIt('QLoRA on it: quantizedMatmul both ways and loraLinear forward and backward over a quantized f16 base, against float64', async (backend, ctx) => {
    const cfg = subgroupMatrixChoice(backend.context.report, 'float16');
    if (!backend.context.report.shaderF16 || !cfg?.prefetch) {
      ctx.skip(`no prefetching f16 subgroup-matrix configuration on ${backend.context.report.description || 'this adapter'}`);
      return;
    }
    const [m, inF, outF, r] = [256, 512, 384, 8];
    const half = (v: Float64Array) => Float64Array.from(v, (x) => T.float16BitsToFloat32(T.float32ToFloat16Bits(x)));
    for (const [bits, groupSize, p] of [
      [4, 64, 0.1],
      [3, 32, 0],
      [8, 128, 0],
    ] as const) {
      const q = T.quantize(T.tensor(randomValues(outF * inF, bits, 0.4), [outF, inF], { dtype: 'float16', backend: T.cpuBackend }), { bits, groupSize });
      const parts = [q.weight, q.scales, q.biases].map((t) => T.tensor(t.dataSync(), [...t.shape], { dtype: t.dtype, backend }));
      const values = {
        x: half(randomValues(m * inF, 1)),
        a: half(randomValues(r * inF, 2, 0.2)),
        b: half(randomValues(outF * r, 3, 0.2)),
        dy: half(randomValues(m * outF, 5)),
      };
      const run = async (be: T.Backend, [weight, scales, biases]: T.Tensor[], dtype: 'float16' | 'float64') => {
        const make = (v: Float64Array, shape: number[], grad = false) => T.tensor(v, shape, { dtype, backend: be, requiresGrad: grad });
        const x = make(values.x, [m, inF], true);
        const a = make(values.a, [r, inF], true);
        const lb = make(values.b, [outF, r], true);
        const cast = (t: T.Tensor) => (dtype === 'float64' ? t.cast('float64') : t);
        const quant = { scales: cast(scales), biases: cast(biases), bits, groupSize };
        const y = T.loraLinear(x, weight, a, lb, { scale: 1.5, dropout: p, seed: 7, quant });
        T.sum(T.mul(y, make(values.dy, [m, outF]))).backward();
        return Promise.all([y, x.grad!, a.grad!, lb.grad!].map((t) => t.data()));
      };
      backend.poisonOutputs = true;
      try {
        const want = await run(T.cpuBackend, [q.weight, q.scales, q.biases], 'float64');
        const { result: got, labels } = await withDispatchLabels(backend, () => run(backend, parts, 'float16'));
        // y = x·Wᵀ and dx's dy·W on the matrix units (the LoRA term a product of its own), not the vec4 tile.
        expect(labels.filter((l) => l === cfg.name).length).toBe(2);
        expect(labels.filter((l) => /^qmm-/.test(l) || l === 'vec4-128x128')).toEqual([]);
        for (const [i, name] of ['y', 'dx', 'dA', 'dB'].entries())
          assertClose(got[i], want[i], scaledTolerance(TOLERANCES.float16, want[i], 1e-3), `q${bits}/${groupSize} ${name}`);
      } finally {
        backend.poisonOutputs = false;
        for (const t of [...parts, q.weight, q.scales, q.biases]) t.dispose();
      }
    }
  });
  gpuIt('a typed error where the adapter cannot run it, and the selector does not pick it', async (backend, ctx) => {
    if (subgroupMatrixChoice(backend.context.report, 'float32')) {
      ctx.skip('this adapter offers a float subgroup-matrix configuration: the other test runs it');
      return;
    }
    const apple32 = subgroupMatrixChoice(apple, 'float32')!;
    backend.overrides.gemm = apple32;
    expect(() =>
      T.matmul(T.tensor(randomValues(64, 1), [8, 8], { dtype: 'float32', backend }), T.tensor(randomValues(64, 2), [8, 8], { dtype: 'float32', backend })),
    ).toThrow(
      /matmul: sgmat-64x64 f32 8x8x8 needs the adapter's subgroup-matrix configuration; expected chromium-experimental-subgroup-matrix with f32->f32 8x8x8/,
    );
    backend.overrides.gemm = { ...apple32, rm: 0 };
    expect(() =>
      T.matmul(T.tensor(randomValues(64, 1), [8, 8], { dtype: 'float32', backend }), T.tensor(randomValues(64, 2), [8, 8], { dtype: 'float32', backend })),
    ).toThrow(/matmul: sgmat-64x64 f32 8x8x8: rm must be an integer in 1\.\.8; expected 1\.\.8, got 0/);
    backend.overrides = {};
    backend.subgroupMatrix = true;
    try {
      const y = T.matmul(
        T.tensor(randomValues(200 * 96, 3), [200, 96], { dtype: 'float32', backend }),
        T.tensor(randomValues(96 * 100, 4), [96, 100], { dtype: 'float32', backend }),
      );
      const want = T.matmul(
        T.tensor(randomValues(200 * 96, 3), [200, 96], { dtype: 'float64' }),
        T.tensor(randomValues(96 * 100, 4), [96, 100], { dtype: 'float64' }),
      ).dataSync();
      assertClose(await y.data(), want, scaledTolerance(TOLERANCES.float32Gemm, want), 'opted in without a configuration: the usual kernels');
    } finally {
      backend.subgroupMatrix = 'auto';
    }
  });
});

/** Dawn's instance for the null backend, kept referenced for the process's life (CONVENTIONS: Dawn aborts if it is collected while a device lives). */
let nullInstance: GPU | undefined;

/**
 * A device of Dawn's null backend, which offers every feature (subgroup matrices and f16 among
 * them) and runs nothing: where no adapter here has subgroup matrices, it still validates their
 * WGSL as Dawn compiles it. Null where the `webgpu` package does not load.
 */
async function nullDevice(): Promise<GPUDevice | null> {
  let dawn: typeof import('webgpu');
  try {
    dawn = await import('webgpu');
  } catch {
    return null;
  }
  Object.assign(globalThis, dawn.globals);
  nullInstance ??= dawn.create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await nullInstance.requestAdapter();
  if (!adapter?.features.has('chromium-experimental-subgroup-matrix')) return null;
  return adapter.requestDevice({ requiredFeatures: ['chromium-experimental-subgroup-matrix', 'shader-f16', 'subgroups'] as GPUFeatureName[] });
}

/**
 * The compiler's messages on `code` and the module's validation error, if any (no pipeline: the
 * null device's 16 KiB of workgroup memory are less than the big tiles take).
 */
async function compile(device: GPUDevice, code: string): Promise<{ messages: string[]; error: string | undefined }> {
  device.pushErrorScope('validation');
  const info = await device.createShaderModule({ code }).getCompilationInfo();
  const error = await device.popErrorScope();
  return { messages: info.messages.map((m) => `${m.type}: ${m.message}`), error: error?.message };
}

describe("gemm-sgmat.wgsl as Dawn compiles it (the null backend's device: no GPU)", () => {
  it('every configuration, QLoRA sections included, compiles without a message in the template form, which the probe finds', async (ctx) => {
    // Not destroyed: destroying it crashed the test's process (Dawn 0.6.2).
    const device = await nullDevice();
    if (!device) return ctx.skip();
    expect(await subgroupMatrixMajorness(device, [config('f16', 'f32', 16, 16, 16)])).toBe('template');
    const cases: [SgmatConfig, 'f32' | 'f16', { bits: number; groupSize: number } | null][] = [
      [sgmatConfig('f16', 16, 16, 16, 32, 4, 4, true), 'f16', null],
      [sgmatConfig('f16', 16, 16, 16, 32, 4, 4, false), 'f16', null],
      [sgmatConfig('f16', 16, 8, 16, 32, 4, 4, true), 'f16', null],
      [sgmatConfig('f32', 8, 8, 8, 32, 4, 4, false), 'f32', null],
      [sgmatConfig('f32', 8, 8, 8, 32, 4, 4, true), 'f32', null],
      [sgmatConfig('f32', 8, 8, 8, 32, 4, 4, true), 'f16', null],
      ...[2, 3, 4, 5, 6, 8].map((bits, i): [SgmatConfig, 'f16', { bits: number; groupSize: number }] => [
        sgmatConfig('f16', 16, 16, 16, 32, 4, 4, true),
        'f16',
        { bits, groupSize: [32, 64, 128][i % 3] },
      ]),
    ];
    for (const [cfg, t, quant] of cases) {
      const what = `${cfg.name} on ${t}${quant ? ` q${quant.bits}/g${quant.groupSize}` : ''}`;
      expect(await compile(device, sgmatShader(cfg, t, quant).source), what).toEqual({ messages: [], error: undefined });
    }
    // The bool form compiles too (older compilers take only it), with a warning at each call.
    const old = await compile(device, sgmatShader(cases[0][0], 'f16', null, 'argument').source);
    expect(old.error).toBeUndefined();
    expect(old.messages.length).toBeGreaterThan(0);
    expect(old.messages.every((m) => m === 'warning: use of deprecated builtin')).toBe(true);
  });
});
