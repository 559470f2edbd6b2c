import * as T from '@metal-lora/tensor';
import { randomValues, assertClose, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { afterEach, describe, expect } from 'vitest';
import type { GemmShape, WebGPUBackend } from '../src/index';
import { fixedSubgroupSize, type GemmConfig, type GemvColsConfig, type GemvRowsConfig, recordGemm, recordGemvRows, subgroupFlushFits } from '../src/internal';
import { checkEpilogue, checkMatmul, random, upload } from './gemm-check';
import { clearOverrides, gpuIt } from '../../../test-support/gpu';

afterEach(clearOverrides);

/** Whether gemv-rows' subgroup flush runs here for lane groups of `lanes`. */
function flushFitsHere(backend: WebGPUBackend, lanes: number): boolean {
  return subgroupFlushFits(fixedSubgroupSize(backend.context.report), lanes);
}

const gemvs: GemmConfig[] = [
  ...[1, 4, 8, 16].map((mr): GemmConfig => ({ kind: 'gemv', name: `gemv${mr}`, mr, lanes: 32, splits: 3 })),
  // Lanes per column from one (each thread walks its chunk alone) to the whole workgroup.
  { kind: 'gemv', name: 'gemv16/l1', mr: 16, lanes: 1, splits: 2 },
  { kind: 'gemv', name: 'gemv5/l16', mr: 5, lanes: 16, splits: 3 },
  { kind: 'gemv', name: 'gemv1/l256', mr: 1, lanes: 256, splits: 1 },
];

describe('webgpu gemv kernels: every variant against the float64 reference on awkward shapes', () => {
  for (const cfg of gemvs) {
    gpuIt(`${cfg.name}: rows up to ${(cfg as { mr: number }).mr}, both layouts of B, K split`, async (backend) => {
      backend.overrides.gemm = cfg;
      const mr = (cfg as { mr: number }).mr;
      for (const M of [...new Set([1, Math.max(1, mr - 1), mr])]) {
        await checkMatmul(backend, [M, 301], [77, 301], { transposeB: true }, `${cfg.name} M=${M} x·Wᵀ`);
        await checkMatmul(backend, [M, 301], [301, 77], {}, `${cfg.name} M=${M} x·W`);
        await checkMatmul(backend, [301, M], [301, 77], { transposeA: true }, `${cfg.name} M=${M} aᵀ·W`);
        // A rank-sized N (U = dy·B at decode) narrower than the workgroup's columns.
        await checkMatmul(backend, [M, 301], [301, 5], {}, `${cfg.name} M=${M} dy·B, N = 5`);
        // Batched (a decode step's attention per KV head: q·Kᵀ, then P·V), and a broadcast B.
        await checkMatmul(backend, [3, M, 67], [3, 83, 67], { transposeB: true }, `${cfg.name} M=${M} batched q·Kᵀ`);
        await checkMatmul(backend, [2, 3, M, 83], [2, 3, 83, 9], {}, `${cfg.name} M=${M} batched P·V`);
        await checkMatmul(backend, [4, M, 70], [70, 33], {}, `${cfg.name} M=${M} batched, broadcast B`);
        await checkMatmul(backend, [2, 70, M], [2, 70, 33], { transposeA: true }, `${cfg.name} M=${M} batched aᵀ·B`);
      }
    });
  }
  const rowsConfigs: GemvRowsConfig[] = [
    { kind: 'gemv-rows', name: 'gemv-rows l32 r1 mr1 u2', lanes: 32, rows: 1, mr: 1, unroll: 2, splits: 1 },
    { kind: 'gemv-rows', name: 'gemv-rows l8 r4 mr4 u1', lanes: 8, rows: 4, mr: 4, unroll: 1, splits: 1 },
    { kind: 'gemv-rows', name: 'gemv-rows l64 r2 mr3 u3', lanes: 64, rows: 2, mr: 3, unroll: 3, splits: 1 },
    { kind: 'gemv-rows', name: 'gemv-rows l256 r1 mr16 u1', lanes: 256, rows: 1, mr: 16, unroll: 1, splits: 1 },
    { kind: 'gemv-rows', name: 'gemv-rows l16 r2 mr16 u1', lanes: 16, rows: 2, mr: 16, unroll: 1, splits: 1 },
    // x staged in workgroup memory (section XS): K = 300 is 75 vec4s, so several stages and a partial last one.
    // The selector's config where a device has 16 KiB of workgroup memory (gemv-rows16/xs16).
    { kind: 'gemv-rows', name: 'gemv-rows l8 r4 mr16 u1 xs16', lanes: 8, rows: 4, mr: 16, unroll: 1, splits: 1, stage: 16 },
    // The next stage of x loaded into registers while the current one streams (section XP): two
    // vec4s per thread, the second one for only some threads (9 rows × 32 = 288), and one with a
    // partial last stage. (Few accumulators: lavapipe takes a minute to compile 16 rows × 4.)
    { kind: 'gemv-rows', name: 'gemv-rows l8 r1 mr9 u1 xs32 prefetch', lanes: 8, rows: 1, mr: 9, unroll: 1, splits: 1, stage: 32, prefetchX: true },
    { kind: 'gemv-rows', name: 'gemv-rows l8 r2 mr5 u2 xs7 prefetch', lanes: 8, rows: 2, mr: 5, unroll: 2, splits: 1, stage: 7, prefetchX: true },
    // Partials summed by subgroup shuffles (subgroupFlush): 2 × 5 accumulators padded to 16 for
    // 8 lanes, staged and prefetched; 1 × 3 padded to 8 reading x from memory.
    {
      kind: 'gemv-rows',
      name: 'gemv-rows l8 r2 mr5 u1 xs16 prefetch sg',
      lanes: 8,
      rows: 2,
      mr: 5,
      unroll: 1,
      splits: 1,
      stage: 16,
      prefetchX: true,
      subgroupFlush: true,
    },
    { kind: 'gemv-rows', name: 'gemv-rows l8 r1 mr3 u2 sg', lanes: 8, rows: 1, mr: 3, unroll: 2, splits: 1, subgroupFlush: true },
    // x staged by k (section XSK), prefetched across stages or not, with the products as fma
    // chains; and fma chains reading x from memory.
    {
      kind: 'gemv-rows',
      name: 'gemv-rows l8 r2 mr5 u1 xs16 by-k prefetch fma',
      lanes: 8,
      rows: 2,
      mr: 5,
      unroll: 1,
      splits: 1,
      stage: 16,
      prefetchX: true,
      stageByK: true,
      fmaChains: true,
    },
    { kind: 'gemv-rows', name: 'gemv-rows l8 r2 mr5 u3 xs7 by-k', lanes: 8, rows: 2, mr: 5, unroll: 3, splits: 1, stage: 7, stageByK: true },
    { kind: 'gemv-rows', name: 'gemv-rows l32 r2 mr3 u2 fma', lanes: 32, rows: 2, mr: 3, unroll: 2, splits: 1, fmaChains: true },
    // Workgroups of 128 and 64 threads: staged (a stage of 9 × 32 vec4s is 2.25 and 4.5 loads per
    // thread) with the subgroup flush, and reading x from memory with the workgroup-memory one.
    {
      kind: 'gemv-rows',
      name: 'gemv-rows l8 r1 mr9 u1 xs32 prefetch t128 sg',
      lanes: 8,
      rows: 1,
      mr: 9,
      unroll: 1,
      splits: 1,
      stage: 32,
      prefetchX: true,
      threads: 128,
      subgroupFlush: true,
    },
    { kind: 'gemv-rows', name: 'gemv-rows l8 r2 mr5 u1 xs16 by-k t64', lanes: 8, rows: 2, mr: 5, unroll: 1, splits: 1, stage: 16, stageByK: true, threads: 64 },
    { kind: 'gemv-rows', name: 'gemv-rows l16 r2 mr3 u2 t64', lanes: 16, rows: 2, mr: 3, unroll: 2, splits: 1, threads: 64 },
  ];
  for (const base of rowsConfigs) {
    for (const cfg of [base, { ...base, name: `${base.name}+splitK3`, splits: 3 }]) {
      gpuIt(`${cfg.name}: x·Wᵀ streaming either operand, K % 4 = 0 but not a multiple of the step`, async (backend) => {
        backend.overrides.gemm = cfg;
        if (cfg.subgroupFlush && !flushFitsHere(backend, cfg.lanes)) {
          expect(() => T.matmul(random([2, 300], 1, backend, 'float32'), random([77, 300], 2, backend, 'float32'), { transposeB: true })).toThrow(
            /the subgroup flush needs lane groups inside subgroups of one size/,
          );
          return;
        }
        for (const M of [...new Set([1, Math.max(1, cfg.mr - 1), cfg.mr, cfg.mr + 2])])
          await checkMatmul(backend, [M, 300], [77, 300], { transposeB: true }, `${cfg.name} stream W, M=${M}`);
        for (const N of [1, 5, 20]) await checkMatmul(backend, [130, 300], [N, 300], { transposeB: true }, `${cfg.name} stream x, N=${N}`);
        await checkEpilogue(backend, cfg, { M: 3, N: 37, K: 64, batch: 1, transA: false, transB: true });
        await checkEpilogue(backend, cfg, { M: 41, N: 6, K: 64, batch: 1, transA: false, transB: true });
        if (!backend.context.report.shaderF16) return;
        await checkMatmul(backend, [cfg.mr, 300], [77, 300], { transposeB: true }, `${cfg.name} stream W`, 'float16');
        await checkMatmul(backend, [130, 300], [5, 300], { transposeB: true }, `${cfg.name} stream x`, 'float16');
        await checkEpilogue(backend, cfg, { M: 3, N: 37, K: 64, batch: 1, transA: false, transB: true }, 'float16');
      });
    }
  }
  const colsConfigs: GemvColsConfig[] = [
    { kind: 'gemv-cols', name: 'gemv-cols c64 mr1 u4', colLanes: 64, mr: 1, unroll: 4, splits: 1 },
    { kind: 'gemv-cols', name: 'gemv-cols c16 mr4 u1', colLanes: 16, mr: 4, unroll: 1, splits: 1 },
    { kind: 'gemv-cols', name: 'gemv-cols c256 mr5 u2', colLanes: 256, mr: 5, unroll: 2, splits: 1 },
    { kind: 'gemv-cols', name: 'gemv-cols c32 mr16 u1', colLanes: 32, mr: 16, unroll: 1, splits: 1 },
  ];
  for (const base of colsConfigs) {
    for (const cfg of [base, { ...base, name: `${base.name}+splitK3`, splits: 3 }]) {
      gpuIt(`${cfg.name}: reductions over rows, streaming either operand, odd K`, async (backend) => {
        backend.overrides.gemm = cfg;
        for (const M of [...new Set([1, 3, cfg.mr, cfg.mr + 5])]) {
          await checkMatmul(backend, [301, M], [301, 76], { transposeA: true }, `${cfg.name} Uᵀ·x, M=${M}`);
          if (M <= 3) await checkMatmul(backend, [M, 301], [301, 76], {}, `${cfg.name} x·W, M=${M}`);
        }
        for (const N of [1, 7]) {
          await checkMatmul(backend, [301, 132], [301, N], { transposeA: true }, `${cfg.name} dyᵀ·T, N=${N}`);
          await checkMatmul(backend, [301, 132], [N, 301], { transposeA: true, transposeB: true }, `${cfg.name} dyᵀ·Tᵀ, N=${N}`);
        }
        await checkEpilogue(backend, cfg, { M: 3, N: 36, K: 70, batch: 1, transA: true, transB: false });
        await checkEpilogue(backend, cfg, { M: 40, N: 6, K: 70, batch: 1, transA: true, transB: false });
        if (!backend.context.report.shaderF16) return;
        await checkMatmul(backend, [301, cfg.mr], [301, 76], { transposeA: true }, `${cfg.name} Uᵀ·x`, 'float16');
        await checkMatmul(backend, [301, 132], [301, 7], { transposeA: true }, `${cfg.name} dyᵀ·T`, 'float16');
        await checkEpilogue(backend, cfg, { M: 3, N: 36, K: 70, batch: 1, transA: true, transB: false }, 'float16');
      });
    }
  }
  for (const cfg of [rowsConfigs[1], { ...rowsConfigs[1], name: `${rowsConfigs[1].name}+splitK3`, splits: 3 }]) {
    gpuIt(`${cfg.name}: the decode LoRA term (C = α·(x·Wᵀ + s·T·Bᵀ) + β·C + bias), rank below and above the lanes`, async (backend) => {
      for (const r of [5, 19]) await checkDecodeLora(backend, cfg, r);
    });
  }
  async function checkDecodeLora(backend: WebGPUBackend, cfg: GemmConfig, r: number): Promise<void> {
    const [M, N, K] = [3, 37, 68];
    const [x, w, t, lb, c0, bias] = [
      randomValues(M * K, 41),
      randomValues(N * K, 42),
      randomValues(M * r, 43),
      randomValues(N * r, 44),
      randomValues(M * N, 45),
      randomValues(N, 46),
    ];
    const [alpha, beta, scale] = [0.5, 2, 1.25];
    const bufs = [x, w, t, lb, c0, bias].map((v) => upload(backend, v));
    const shape: GemmShape = { M, N, K, batch: 1, transA: false, transB: true };
    recordGemm(
      backend,
      shape,
      {
        a: bufs[0],
        b: bufs[1],
        c: bufs[4],
        bias: bufs[5],
        aBatchStride: 0,
        bBatchStride: 0,
        alpha,
        beta,
        dtype: 'float32',
        lora: { la: bufs[2], lb: bufs[3], r, transB: true, scale },
      },
      cfg,
    );
    const got = await backend.read({ buffer: bufs[4], bytes: M * N * 4 }, 'float32', M * N);
    const want = new Float64Array(M * N);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let dot = 0;
        for (let k = 0; k < K; k++) dot += x[m * K + k] * w[n * K + k];
        let low = 0;
        for (let j = 0; j < r; j++) low += t[m * r + j] * lb[n * r + j];
        want[m * N + n] = alpha * (dot + scale * low) + beta * c0[m * N + n] + bias[n];
      }
    }
    for (const buffer of bufs) backend.release(buffer);
    assertClose(got, want, scaledTolerance(TOLERANCES.float32Gemm, want), `${cfg.name} LoRA term r=${r}`);
    // Where the epilogue cannot apply (streaming x, N = r): a typed refusal.
    expect(() =>
      recordGemm(
        backend,
        { M: 130, N: 5, K, batch: 1, transA: false, transB: true },
        {
          a: bufs[0],
          b: bufs[1],
          c: bufs[4],
          aBatchStride: 0,
          bBatchStride: 0,
          alpha: 1,
          beta: 0,
          dtype: 'float32',
          lora: { la: bufs[2], lb: bufs[3], r, transB: true, scale },
        },
        cfg,
      ),
    ).toThrow(/the fused LoRA term needs/);
  }
  gpuIt('gemv-rows with a second streamed matrix (W2 after W: the decode T riding along)', async (backend) => {
    const [M, N, N2, K] = [5, 36, 12, 300];
    const [x, w, w2] = [randomValues(M * K, 51), randomValues(N * K, 52), randomValues(N2 * K, 53)];
    const [bx, bw, bw2] = [x, w, w2].map((v) => upload(backend, v));
    const prefetched: GemvRowsConfig = {
      kind: 'gemv-rows',
      name: 'gemv-rows l8 r2 mr5 u1 xs16 prefetch',
      lanes: 8,
      rows: 2,
      mr: 5,
      unroll: 1,
      splits: 1,
      stage: 16,
      prefetchX: true,
    };
    const configs = [prefetched];
    if (flushFitsHere(backend, 8)) configs.push({ ...prefetched, name: `${prefetched.name} sg`, subgroupFlush: true });
    for (const cfg of configs) {
      const [c, c2] = [backend.acquire(M * N * 4, 'concat c'), backend.acquire(M * N2 * 4, 'concat c2')];
      // Poisoned: every element must be written.
      backend.device.queue.writeBuffer(c, 0, new Float32Array(M * N).fill(Number.NaN));
      backend.device.queue.writeBuffer(c2, 0, new Float32Array(M * N2).fill(Number.NaN));
      recordGemvRows(
        backend,
        { M, N, K, batch: 1, transA: false, transB: true },
        { a: bx, b: bw, c, alpha: 1, beta: 0, split: false, t: 'f32', concat: { w: bw2, c: c2, rows: N2 } },
        cfg,
        K,
        1,
      );
      const product = (wm: Float64Array, rows: number) => {
        const out = new Float64Array(M * rows);
        for (let m = 0; m < M; m++) for (let n = 0; n < rows; n++) for (let k = 0; k < K; k++) out[m * rows + n] += x[m * K + k] * wm[n * K + k];
        return out;
      };
      const [yw, yw2] = [product(w, N), product(w2, N2)];
      assertClose(await backend.read({ buffer: c, bytes: M * N * 4 }, 'float32', M * N), yw, scaledTolerance(TOLERANCES.float32Gemm, yw), `${cfg.name} x·Wᵀ`);
      assertClose(
        await backend.read({ buffer: c2, bytes: M * N2 * 4 }, 'float32', M * N2),
        yw2,
        scaledTolerance(TOLERANCES.float32Gemm, yw2),
        `${cfg.name} x·W2ᵀ`,
      );
      backend.release(c);
      backend.release(c2);
    }
    for (const buffer of [bx, bw, bw2]) backend.release(buffer);
  });
  gpuIt('the portable gemv refuses lanes per column that are not a power of two up to 256', async (backend) => {
    const [a, b] = [random([3, 64], 1, backend, 'float32'), random([64, 5], 2, backend, 'float32')];
    for (const lanes of [3, 512, 0]) {
      backend.overrides.gemm = { kind: 'gemv', name: `gemv4/l${lanes}`, mr: 4, lanes, splits: 1 };
      const live = backend.memory().liveBytes;
      expect(() => T.matmul(a, b)).toThrow(
        new RegExp(`gemv4/l${lanes}: lanes per column must be a power of two from 1 to 256; expected lanes in \\{1, 2, 4, …, 256\\}, got ${lanes}`),
      );
      // The refused product's workspace and output went back to the pool.
      expect(backend.memory().liveBytes).toBe(live);
    }
    a.dispose();
    b.dispose();
  });
  gpuIt('gemv-rows and gemv-cols refuse layouts they cannot stream, with a typed error', async (backend) => {
    backend.overrides.gemm = rowsConfigs[0];
    expect(() => T.matmul(random([3, 8], 1, backend, 'float32'), random([8, 5], 2, backend, 'float32'))).toThrow(
      /gemv-rows l32 r1 mr1 u2 does not apply to this shape or layout; expected A·Bᵀ/,
    );
    backend.overrides.gemm = colsConfigs[0];
    expect(() => T.matmul(random([3, 8], 1, backend, 'float32'), random([5, 8], 2, backend, 'float32'), { transposeB: true })).toThrow(
      /gemv-cols c64 mr1 u4 does not apply/,
    );
    // A second streamed matrix (the decode T riding along) only without a K split.
    const buffers = [0, 1, 2, 3].map(() => backend.acquire(4096, 'concat refusal'));
    const ops = {
      a: buffers[0],
      b: buffers[1],
      c: buffers[2],
      alpha: 1,
      beta: 0,
      split: false,
      t: 'f32' as const,
      concat: { w: buffers[3], c: buffers[2], rows: 4 },
    };
    expect(() => recordGemvRows(backend, { M: 1, N: 64, K: 64, batch: 1, transA: false, transB: true }, ops, rowsConfigs[0], 32, 2)).toThrow(
      /a second streamed matrix needs W streamed whole/,
    );
    // Staged rows of X beyond the device's workgroup memory, and lane groups the reduction cannot index.
    const plain = { ...ops, concat: undefined };
    const decode = { M: 1, N: 64, K: 64, batch: 1, transA: false, transB: true };
    const limit = backend.device.limits.maxComputeWorkgroupStorageSize;
    expect(() => recordGemvRows(backend, decode, plain, { ...rowsConfigs[0], mr: 16, stage: Math.ceil(limit / 256) }, 64, 1)).toThrow(
      /the staged rows of X do not fit; expected a whole number of vec4s per row, \d+ bytes/,
    );
    expect(() => recordGemvRows(backend, decode, plain, { ...rowsConfigs[0], lanes: 4 }, 64, 1)).toThrow(
      /lanes, rows or mr out of range; expected lanes a power of two in 8..256/,
    );
    // Workgroups of other sizes than 64, 128, 256, or narrower than a lane group.
    expect(() => recordGemvRows(backend, decode, plain, { ...rowsConfigs[0], threads: 96 as 64 }, 64, 1)).toThrow(
      /threads out of range; expected 64, 128 or 256 threads, at least lanes \(32\), got 96 threads/,
    );
    expect(() => recordGemvRows(backend, decode, plain, { ...rowsConfigs[0], lanes: 128, threads: 64 }, 64, 1)).toThrow(
      /threads out of range; expected 64, 128 or 256 threads, at least lanes \(128\), got 64 threads/,
    );
    // A subgroup flush where lane groups would straddle subgroups (or subgroups are off or vary in size).
    const size = fixedSubgroupSize(backend.context.report);
    const straddling = Math.min(256, (size ?? 4) * 2);
    expect(() => recordGemvRows(backend, decode, plain, { ...rowsConfigs[0], lanes: straddling, subgroupFlush: true }, 64, 1)).toThrow(
      /the subgroup flush needs lane groups inside subgroups of one size; expected the subgroups feature with one subgroup size that \d+ lanes divide and that divides 256 threads, and WGSL subgroup_id, got subgroups/,
    );
    for (const buffer of buffers) backend.release(buffer);
  });
});
