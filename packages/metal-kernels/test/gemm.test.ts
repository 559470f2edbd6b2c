import * as T from '@metal-lora/tensor';
import { fromStorage } from '@metal-lora/tensor';
import { assertClose, gemmTolerance, storedValues } from '@metal-lora/tensor/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_GEMM_DEVICE, type GemmShape, selectGemm } from '../src/index';
import {
  fixedSubgroupSize,
  type GemmConfig,
  gemvChoice,
  type GemvColsConfig,
  type GemvRowsConfig,
  recordGemm,
  TILED_VARIANTS,
  tiledStorageBytes,
  VEC4_32x128,
  VEC4_64x128,
  VEC4_128,
  VEC4_128x32,
  VEC4_128x64,
  VEC4_128x64_T128,
  type Vec4Config,
} from '../src/internal';
import { checkEpilogue, checkMatmul, random, shape, upload } from './gemm-check';
import { clearOverrides, gpuIt } from '../../../test-support/gpu';

// The gemv family (gemv, gemv-rows, gemv-cols) is tested in gemv.test.ts: a file of its own so that
// vitest can compile its shaders beside these on a second worker.

afterEach(clearOverrides);

describe('selectGemm (pure)', () => {
  it.each([
    ['decode x·Wᵀ, M = 1', shape(1, 4096, 4096, { transB: true }), 'gemv-rows1'],
    ['decode x·Wᵀ, small: no K split (a decode step pays for the reduction)', shape(1, 576, 576, { transB: true }), 'gemv-rows1'],
    ['decode x·Wᵀ, few outputs and a long K: K split', shape(1, 128, 16384, { transB: true }), 'gemv-rows1+splitK32'],
    ['decode x·Wᵀ, K odd', shape(1, 4096, 4095, { transB: true }), 'gemv1'],
    ['decode M = 4', shape(4, 4096, 4096, { transB: true }), 'gemv-rows4'],
    ['decode M = 16: x staged 16 vec4 per row in 16 KiB, K split', shape(16, 4096, 4096, { transB: true }), 'gemv-rows16/xk16+splitK8'],
    ['decode M = 9: 16 rows staged', shape(9, 4096, 4096, { transB: true }), 'gemv-rows16/xk16+splitK8'],
    ['decode M = 5..8: 8 rows staged 32 vec4 at a time', shape(8, 4096, 4096, { transB: true }), 'gemv-rows8/xk32+splitK8'],
    ['decode M = 16, f16 storage', shape(16, 4096, 4096, { transB: true, dtype: 'float16' }), 'gemv-rows16/xk16+splitK8'],
    ['decode x·W (B not transposed), M = 3', shape(3, 4096, 4096), 'gemv-cols4+splitK16'],
    ['decode float16 storage: gemv-rows too', shape(1, 4096, 4096, { transB: true, dtype: 'float16' }), 'gemv-rows1'],
    ['decode float16, K odd: portable gemv', shape(1, 4096, 4095, { transB: true, dtype: 'float16' }), 'gemv1'],
    ['big x·Wᵀ (aligned f32: vec4 kernel)', shape(2048, 4096, 4096, { transB: true }), 'vec4-128x128'],
    ['big but K odd: scalar tiles', shape(2048, 4096, 4095, { transB: true }), 'tile128x128'],
    ['big float16 storage, aligned: vec4 kernel', shape(2048, 4096, 4096, { transB: true, dtype: 'float16' }), 'vec4-128x128'],
    ['big float16, K odd: scalar tiles', shape(2048, 4096, 4095, { transB: true, dtype: 'float16' }), 'tile128x128'],
    ['dyᵀ·T float16, N = r = 32', shape(4096, 32, 2048, { transA: true, dtype: 'float16' }), 'vec4-128x32+splitK16'],
    ['x·Aᵀ, N = r = 8 (split K)', shape(2048, 8, 4096, { transB: true }), 'gemv-rows8+splitK8'],
    ['x·Aᵀ, N = r = 64: 128×64 on 128 threads', shape(2048, 64, 4096, { transB: true }), 'vec4-128x64/128t+splitK16'],
    ['x·Aᵀ, N = r = 32: 128×32, K split to 128 per split', shape(2048, 32, 4096, { transB: true }), 'vec4-128x32+splitK32'],
    ['dy·B with B [out, r] as stored, r = 8', shape(2048, 8, 4096), 'vec4-128x32+splitK32'],
    ['dy·B with B [out, r] as stored, r = 64', shape(2048, 64, 4096), 'vec4-128x64/128t+splitK16'],
    ['Uᵀ·x, M = r = 32: 32×128', shape(32, 4096, 2048, { transA: true }), 'vec4-32x128+splitK16'],
    ['dyᵀ·T, N = r = 32', shape(4096, 32, 2048, { transA: true }), 'vec4-128x32+splitK16'],
    ['x·Aᵀ, r = 64 but K odd: scalar tiles', shape(2048, 64, 4095, { transB: true }), 'tile64x64+splitK8'],
    ['Uᵀ·x, M = r = 16, long K', shape(16, 4096, 2048, { transA: true }), 'gemv-cols16+splitK8'],
    ['Uᵀ·x, M = r = 64: half-height vec4 tiles', shape(64, 4096, 2048, { transA: true }), 'vec4-64x128+splitK8'],
    ['dyᵀ·T, N = r = 64', shape(4096, 64, 2048, { transA: true }), 'vec4-128x64/128t+splitK8'],
    ['x·Aᵀ, N = r = 128: 128×128 vec4 tiles, split K', shape(2048, 128, 4096, { transB: true }), 'vec4-128x128+splitK16'],
    ['Uᵀ·x, M = r = 256 (raster groups: Aᵀ)', shape(256, 4096, 2048, { transA: true }), 'vec4-128x128/g4+splitK4'],
    ['big x·W (B as stored): raster groups', shape(2048, 4096, 4096), 'vec4-128x128/g4'],
    ['big dyᵀ·x: raster groups', shape(4096, 4096, 2048, { transA: true }), 'vec4-128x128/g4'],
    ['dyᵀ·T, N = r = 8', shape(4096, 8, 2048, { transA: true }), 'gemv-cols8+splitK8'],
    ['bias gradient onesᵀ·dy', shape(1, 4096, 2048), 'gemv-cols1+splitK8'],
    ['T·Bᵀ, K = r', shape(2048, 4096, 16, { transB: true }), 'vec4-128x128'],
    ['decode LoRA down-projection x·Aᵀ, M = 16, r = 16', shape(16, 16, 4096, { transB: true }), 'gemv16'],
    ['decode LoRA down-projection x·Aᵀ, M = 1, r = 16', shape(1, 16, 4096, { transB: true }), 'gemv1'],
    ['decode LoRA backward U = dy·B (B [out, r] as stored), M = 16, r = 16: 16 lanes per column', shape(16, 16, 4096), 'gemv16/l16'],
    ['decode U = dy·B, M = 1, r = 8: 32 lanes per column', shape(1, 8, 4096), 'gemv1/l32'],
    ['decode U = dy·B, r = 5: 8 columns per workgroup', shape(4, 5, 4096), 'gemv4/l32'],
    ['mid-size', shape(300, 300, 300), 'tile64x64'],
    ['small', shape(33, 17, 9), 'tile32x32'],
    ["batched few rows (a decode step's attention): gemv, B as stored", shape(3, 50, 128, { batch: 4 }), 'gemv4/l4'],
    ['decode attention q·Kᵀ per KV head', shape(3, 384, 64, { batch: 3, transB: true }), 'gemv4'],
    ['decode attention P·V', shape(3, 64, 384, { batch: 3 }), 'gemv4/l4'],
  ])('%s', (_name, s, expected) => {
    expect(selectGemm(s, DEFAULT_GEMM_DEVICE).name).toBe(expected);
  });
  it("splits a decode step's attention over K only past 1024 keys per split", () => {
    expect(selectGemm(shape(3, 64, 384, { batch: 3 }), DEFAULT_GEMM_DEVICE).splits).toBe(1);
    expect(selectGemm(shape(3, 384, 64, { batch: 3, transB: true }), DEFAULT_GEMM_DEVICE).splits).toBe(1);
    expect(selectGemm(shape(3, 64, 4096, { batch: 3 }), DEFAULT_GEMM_DEVICE).splits).toBe(4);
  });
  it('relies on a subgroup size only where it is fixed and WGSL has subgroup_id', () => {
    const report = { subgroups: true, subgroupMinSize: 32, subgroupMaxSize: 32, wgslLanguageFeatures: ['subgroup_id', 'subgroup_uniformity'] };
    expect(fixedSubgroupSize(report)).toBe(32);
    expect(fixedSubgroupSize({ ...report, subgroupMinSize: 16, subgroupMaxSize: 32 })).toBeUndefined();
    expect(fixedSubgroupSize({ ...report, subgroups: false })).toBeUndefined();
    expect(fixedSubgroupSize({ ...report, wgslLanguageFeatures: ['subgroup_uniformity'] })).toBeUndefined();
    expect(fixedSubgroupSize({ ...report, subgroupMinSize: undefined, subgroupMaxSize: undefined })).toBeUndefined();
  });
  it('sets loads in flight and lanes by the rows of the small operand (the H100 sweep)', () => {
    const pick = (s: GemmShape) => selectGemm(s, DEFAULT_GEMM_DEVICE) as GemvRowsConfig | GemvColsConfig;
    expect(gemvChoice(shape(16, 4096, 4096, { transB: true }), DEFAULT_GEMM_DEVICE)).toMatchObject({
      kind: 'gemv-rows',
      lanes: 8,
      rows: 4,
      unroll: 1,
      splits: 8,
      stage: 16,
    });
    // With more than 16 KiB of workgroup memory (the H100 has 48 KiB) 32 vec4 per row are staged.
    expect(gemvChoice(shape(16, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 49152, maxInvocations: 1024 })).toMatchObject({
      name: 'gemv-rows16/xk32p+splitK8',
      stage: 32,
      prefetchX: true,
      stageByK: true,
      fmaChains: true,
    });
    expect(selectGemm(shape(12, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 17920, maxInvocations: 256 }).name).toBe('gemv-rows16/xk32p+splitK8');
    expect(selectGemm(shape(12, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 17919, maxInvocations: 256 }).name).toBe('gemv-rows16/xk16+splitK8');
    // Subgroups of one size that lane groups of 8 fit in: partials summed by shuffles (/sg), whose
    // free workgroup memory leaves 32 vec4 staged within 16 KiB.
    const sg = (subgroupSize: number | undefined, maxWorkgroupStorage = 16384) =>
      selectGemm(shape(16, 4096, 4096, { transB: true }), { maxWorkgroupStorage, maxInvocations: 256, subgroupSize });
    expect(sg(32)).toMatchObject({ name: 'gemv-rows16/xk32p/sg+splitK8', stage: 32, prefetchX: true, subgroupFlush: true });
    expect(sg(8, 49152).name).toBe('gemv-rows16/xk32p/sg+splitK8');
    expect(sg(64, 8191).name).toBe('gemv-rows16/xk16/sg+splitK8');
    // Eight rows: 16 lanes per lane group where the subgroups hold them, K split to 512 workgroups.
    expect(selectGemm(shape(8, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 })).toMatchObject({
      name: 'gemv-rows8/xk32/sg/l16+splitK8',
      lanes: 16,
      subgroupFlush: true,
    });
    expect(selectGemm(shape(8, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 8 })).toMatchObject({
      name: 'gemv-rows8/xk32/sg+splitK8',
      lanes: 8,
      subgroupFlush: true,
    });
    // Subgroups smaller than a lane group, or of no fixed size: the workgroup-memory reduction.
    expect(sg(4)).toMatchObject({ name: 'gemv-rows16/xk16+splitK8' });
    expect(sg(4)).not.toHaveProperty('subgroupFlush');
    expect(sg(undefined).name).toBe('gemv-rows16/xk16+splitK8');
    // The rows of x read from memory (M ≤ 4) keep the workgroup-memory reduction: 32 lanes and one
    // row of W per lane group leave too few partials for the shuffles to pay (M = 4: 0.0296 → 0.0374 ms).
    expect(selectGemm(shape(4, 4096, 4096, { transB: true }), { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 })).not.toHaveProperty(
      'subgroupFlush',
    );
    // The LoRA rank side stays on the cache-read form: x·Aᵀ streams x, not W.
    expect(pick(shape(2048, 16, 4096, { transB: true }))).toMatchObject({ lanes: 16, rows: 2, unroll: 1 });
    expect((pick(shape(2048, 16, 4096, { transB: true })) as GemvRowsConfig).stage).toBeUndefined();
    expect(pick(shape(2048, 8, 4096, { transB: true }))).toMatchObject({ lanes: 16, rows: 2, unroll: 1, splits: 8 });
    expect(pick(shape(4, 4096, 4096, { transB: true }))).toMatchObject({ lanes: 32, rows: 1, unroll: 4 });
    expect((pick(shape(16, 4096, 2048, { transA: true })) as GemvColsConfig).colLanes).toBe(32);
    // The portable gemv with B as stored: the columns side by side, the rest of the threads along K.
    expect(selectGemm(shape(16, 16, 4096), DEFAULT_GEMM_DEVICE)).toMatchObject({ kind: 'gemv', lanes: 16, splits: 32 });
    expect(selectGemm(shape(16, 201, 4096), DEFAULT_GEMM_DEVICE)).toMatchObject({ kind: 'gemv', lanes: 1, name: 'gemv16' });
  });
  it('falls back to the smallest tile when workgroup memory is scarce', () => {
    expect(selectGemm(shape(2048, 2048, 2048), { maxWorkgroupStorage: 4096, maxInvocations: 256 }).name).toBe('tile32x32');
  });
  it('every tiled variant fits the portable workgroup limits', () => {
    for (const v of Object.values(TILED_VARIANTS)) {
      expect(tiledStorageBytes(v)).toBeLessThanOrEqual(16384);
      expect(v.wgx * v.wgy).toBeLessThanOrEqual(256);
    }
  });
});

const forced: GemmConfig[] = [
  ...Object.values(TILED_VARIANTS),
  { ...TILED_VARIANTS.tile64x64, name: 'tile64x64+splitK3', splits: 3 },
  { ...TILED_VARIANTS.skinnyN16, name: 'skinnyN16+splitK5', splits: 5 },
];

describe('webgpu GEMM: every variant against the float64 reference on awkward shapes', () => {
  for (const cfg of forced) {
    gpuIt(`${cfg.name}: all transpose combinations, odd M/N/K`, async (backend) => {
      backend.overrides.gemm = cfg;
      const [M, N, K] = [37, 19, 101];
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const) {
        await checkMatmul(backend, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }, `${cfg.name} ta=${ta} tb=${tb}`);
      }
      await checkMatmul(backend, [3, 5, 33], [33, 6], {}, `${cfg.name} batched, broadcast b`);
      await checkMatmul(backend, [2, 1, 4, 9], [1, 3, 9, 5], {}, `${cfg.name} batch broadcast both`);
      await checkMatmul(backend, [1, 1], [1, 1], {}, `${cfg.name} 1x1x1`);
    });
  }
  // The 128-thread tiles: 8 threads across (columns) or down (rows).
  const narrow: Vec4Config[] = [VEC4_128x32, VEC4_32x128, VEC4_128x64_T128, { kind: 'vec4', name: 'vec4-64x128/128t', splits: 1, bm: 64, bn: 128, wgy: 8 }];
  const vec4Configs: GemmConfig[] = [VEC4_128, VEC4_128x64, VEC4_64x128, ...narrow].flatMap((c) => [c, { ...c, name: `${c.name}+splitK3`, splits: 3 }]);
  for (const cfg of vec4Configs) {
    gpuIt(`${cfg.name}: all transposes on aligned shapes that are not multiples of the tile`, async (backend) => {
      backend.overrides.gemm = cfg;
      const [M, N, K] = [132, 68, 100];
      for (const [ta, tb] of [
        [false, false],
        [true, false],
        [false, true],
        [true, true],
      ] as const) {
        await checkMatmul(backend, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }, `${cfg.name} ta=${ta} tb=${tb}`);
      }
      await checkMatmul(backend, [37, 100], [20, 100], { transposeB: true }, `${cfg.name} odd M`);
      await checkMatmul(backend, [3, 36, 12], [12, 8], {}, `${cfg.name} batched, broadcast b`);
      await checkEpilogue(backend, cfg, { M: 72, N: 68, K: 40, batch: 1, transA: true, transB: false });
      // N odd (a vocabulary-sized projection, say): scalar stores instead of whole vec4s.
      await checkMatmul(backend, [20, 100], [37, 100], { transposeB: true }, `${cfg.name} odd N`);
      await checkEpilogue(backend, cfg, { M: 20, N: 37, K: 40, batch: 1, transA: false, transB: true });
      // float16 storage (f32 arithmetic) where the adapter has shader-f16.
      if (!backend.context.report.shaderF16) return;
      for (const [ta, tb] of [
        [false, true],
        [true, false],
      ] as const) {
        await checkMatmul(backend, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }, `${cfg.name} ta=${ta} tb=${tb}`, 'float16');
      }
      await checkEpilogue(backend, cfg, { M: 72, N: 68, K: 40, batch: 1, transA: false, transB: false }, 'float16');
      await checkEpilogue(backend, cfg, { M: 20, N: 37, K: 40, batch: 1, transA: true, transB: true }, 'float16');
    });
  }
  // Raster orders: G tile rows down before one column across, with a last group of fewer rows.
  for (const cfg of [
    { ...VEC4_128, name: 'vec4-128x128/g2', groupM: 2 },
    { ...VEC4_32x128, name: 'vec4-32x128/g3+splitK2', groupM: 3, splits: 2 },
  ] as Vec4Config[]) {
    gpuIt(`${cfg.name}: every tile once in raster order ${cfg.groupM}`, async (backend) => {
      backend.overrides.gemm = cfg;
      await checkMatmul(backend, [300, 100], [520, 100], { transposeB: true }, `${cfg.name} 3×5 tiles`);
      await checkMatmul(backend, [100, 300], [100, 264], { transposeA: true }, `${cfg.name} Aᵀ`);
      await checkEpilogue(backend, cfg, { M: 260, N: 264, K: 24, batch: 1, transA: false, transB: false });
    });
  }
  // Two products of one shape in one dispatch (the LoRA backward's dA and dBᵀ), the second written transposed.
  for (const cfg of [
    { ...VEC4_64x128, name: 'vec4-64x128+splitK3', splits: 3 },
    { ...VEC4_32x128, name: 'vec4-32x128+splitK2', splits: 2 },
    { ...VEC4_128, name: 'vec4-128x128+splitK2', splits: 2 },
  ] as Vec4Config[]) {
    gpuIt(`${cfg.name}: a pair of Aᵀ·B products, the second transposed into its output`, async (backend) => {
      for (const dtype of ['float32', 'float16'] as const) {
        if (dtype === 'float16' && !backend.context.report.shaderF16) continue;
        const [M, N, K] = [40, 260, 300];
        const [a1, b1, a2, b2] = [
          storedValues(K * M, 71, dtype),
          storedValues(K * N, 72, dtype),
          storedValues(K * M, 73, dtype),
          storedValues(K * N, 74, dtype),
        ];
        const [ab1, bb1, ab2, bb2] = [a1, b1, a2, b2].map((v) => upload(backend, v, dtype));
        const bytes = M * N * (dtype === 'float16' ? 2 : 4);
        const c1 = backend.acquire(bytes, 'pair c1');
        const c2 = backend.acquire(bytes, 'pair c2');
        for (const c of [c1, c2]) backend.device.queue.writeBuffer(c, 0, new Uint8Array(bytes).fill(0xff));
        const shape: GemmShape = { M, N, K, batch: 1, transA: true, transB: false, dtype };
        recordGemm(
          backend,
          shape,
          { a: ab1, b: bb1, c: c1, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, dtype, pair: { a: ab2, b: bb2, cT: c2, alpha: -0.5 } },
          cfg,
        );
        const got1 = fromStorage(await backend.read({ buffer: c1, bytes }, dtype, M * N), dtype);
        const got2 = fromStorage(await backend.read({ buffer: c2, bytes }, dtype, M * N), dtype);
        const want1 = new Float64Array(M * N);
        const want2 = new Float64Array(M * N);
        for (let m = 0; m < M; m++) {
          for (let n = 0; n < N; n++) {
            let [d1, d2] = [0, 0];
            for (let k = 0; k < K; k++) {
              d1 += a1[k * M + m] * b1[k * N + n];
              d2 += a2[k * M + m] * b2[k * N + n];
            }
            want1[m * N + n] = d1;
            want2[n * M + m] = -0.5 * d2;
          }
        }
        for (const buffer of [ab1, bb1, ab2, bb2, c1, c2]) backend.release(buffer);
        assertClose(got1, want1, gemmTolerance(dtype, want1), `${cfg.name} pair, first ${dtype}`);
        assertClose(got2, want2, gemmTolerance(dtype, want2), `${cfg.name} pair, second transposed ${dtype}`);
      }
      // Without a K split there is no reduction to transpose in: a typed refusal.
      const buffers = [0, 1, 2, 3, 4].map(() => backend.acquire(64 * 64 * 4, 'pair refusal'));
      expect(() =>
        recordGemm(
          backend,
          { M: 8, N: 64, K: 8, batch: 1, transA: true, transB: false },
          {
            a: buffers[0],
            b: buffers[1],
            c: buffers[2],
            aBatchStride: 0,
            bBatchStride: 0,
            alpha: 1,
            beta: 0,
            dtype: 'float32',
            pair: { a: buffers[3], b: buffers[4], cT: buffers[2], alpha: 1 },
          },
          { ...cfg, splits: 1 },
        ),
      ).toThrow(/matmul: a pair of products needs the vec4 kernel with K split/);
      for (const buffer of buffers) backend.release(buffer);
    });
  }
  gpuIt('a vec4 workgroup shape that cannot cover its tile is refused with a typed error', async (backend) => {
    backend.overrides.gemm = { kind: 'vec4', name: 'vec4-16x128/8x4', splits: 1, bm: 16, bn: 128, wgx: 8, wgy: 4 };
    expect(() => T.matmul(random([16, 8], 1, backend, 'float32'), random([8, 128], 2, backend, 'float32'))).toThrow(
      /vec4-16x128\/8x4: each thread covers 4 or 8 rows and columns.*expected bm \/ \(4·wgy\)/,
    );
  });
  gpuIt('the selector itself on LoRA-shaped products (scaled down)', async (backend) => {
    await checkMatmul(backend, [257, 300], [8, 300], { transposeB: true }, 'x·Aᵀ');
    await checkMatmul(backend, [257, 300], [300, 12], {}, 'dy·B');
    await checkMatmul(backend, [257, 300], [257, 12], { transposeA: true }, 'dyᵀ·T');
    await checkMatmul(backend, [3, 300], [300, 130], {}, 'decode x·W');
    await checkMatmul(backend, [257, 8], [300, 8], { transposeB: true }, 'T·Bᵀ');
    await checkMatmul(backend, [257, 16], [257, 300], { transposeA: true }, 'Uᵀ·x');
    await checkMatmul(backend, [257, 40], [257, 300], { transposeA: true }, 'Uᵀ·x, r = 40 (half-height vec4 tiles)');
    await checkMatmul(backend, [257, 300], [40, 300], { transposeB: true }, 'x·Aᵀ, r = 40 (half-width vec4 tiles)');
    await checkMatmul(backend, [1100, 36], [1100, 260], { transposeA: true }, 'dyᵀ·T shape, split K');
    await checkMatmul(backend, [1100, 132], [128, 132], { transposeB: true }, 'x·Aᵀ, r = 128 (128×128 vec4 tiles)');
    await checkMatmul(backend, [3, 300], [130, 300], { transposeB: true }, 'decode');
  });
});
