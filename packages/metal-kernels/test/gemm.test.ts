import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { forceGemmConfig, type GemmConfig, type GemmShape, selectGemm, TILED_VARIANTS, tiledStorageBytes, VEC4_128, type WebGPUBackend } from '../src/index';
import { gpuIt } from './gpu-env';

afterEach(() => forceGemmConfig(null));

const shape = (M: number, N: number, K: number, extra: Partial<GemmShape> = {}): GemmShape => ({ M, N, K, batch: 1, transA: false, transB: false, ...extra });

describe('selectGemm (pure)', () => {
  it.each([
    ['decode x·Wᵀ, M = 1', shape(1, 4096, 4096, { transB: true }), 'gemv1-vec4'],
    ['decode x·Wᵀ, K odd', shape(1, 4096, 4095, { transB: true }), 'gemv1'],
    ['decode M = 4', shape(4, 4096, 4096, { transB: true }), 'gemv4-vec4'],
    ['decode M = 16', shape(16, 4096, 4096, { transB: true }), 'gemv16-vec4'],
    ['big x·Wᵀ (aligned f32: vec4 kernel)', shape(2048, 4096, 4096, { transB: true }), 'vec4-128x128'],
    ['big but K odd: scalar tiles', shape(2048, 4096, 4095, { transB: true }), 'tile128x128'],
    ['big float16: scalar tiles', shape(2048, 4096, 4096, { transB: true, dtype: 'float16' }), 'tile128x128'],
    ['x·Aᵀ, N = r = 8 (split K)', shape(2048, 8, 4096, { transB: true }), 'skinnyN16+splitK16'],
    ['dy·B, N = r = 64', shape(2048, 64, 4096), 'tile64x64+splitK8'],
    ['Uᵀ·x, M = r = 16, long K', shape(16, 4096, 2048, { transA: true }), 'gemv16'],
    ['Uᵀ·x, M = r = 64', shape(64, 4096, 2048, { transA: true }), 'tile64x64+splitK4'],
    ['T·Bᵀ, K = r', shape(2048, 4096, 16, { transB: true }), 'vec4-128x128'],
    ['mid-size', shape(300, 300, 300), 'tile64x64'],
    ['small', shape(33, 17, 9), 'tile32x32'],
    ['batched few rows: skinny rows', shape(3, 50, 128, { batch: 4 }), 'skinnyM16'],
  ])('%s', (_name, s, expected) => {
    expect(selectGemm(s).name).toBe(expected);
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

function random(shape: number[], seed: number, backend: T.Backend, dtype: 'float32' | 'float64'): Tensor {
  return T.tensor(randomValues(shape.reduce((a, b) => a * b, 1), seed), shape, { dtype, backend });
}

async function checkMatmul(backend: WebGPUBackend, aShape: number[], bShape: number[], options: T.MatmulOptions, label: string): Promise<void> {
  const ref = T.matmul(random(aShape, 1, cpuBackend, 'float64'), random(bShape, 2, cpuBackend, 'float64'), options);
  const got = T.matmul(random(aShape, 1, backend, 'float32'), random(bShape, 2, backend, 'float32'), options);
  expect(got.shape).toEqual(ref.shape);
  const expected = ref.dataSync();
  assertClose(await got.data(), expected, scaledTolerance(TOLERANCES.float32Gemm, expected), label);
  got.dispose();
}

const forced: GemmConfig[] = [
  ...Object.values(TILED_VARIANTS),
  { ...TILED_VARIANTS.tile64x64, name: 'tile64x64+splitK3', splits: 3 },
  { ...TILED_VARIANTS.skinnyN16, name: 'skinnyN16+splitK5', splits: 5 },
];
const gemvs: GemmConfig[] = [1, 4, 8, 16].map((mr) => ({ kind: 'gemv', name: `gemv${mr}`, mr, lanes: 32, splits: 3 }));

describe('webgpu GEMM: every variant against the float64 reference on awkward shapes', () => {
  for (const cfg of forced) {
    gpuIt(`${cfg.name}: all transpose combinations, odd M/N/K`, async (backend) => {
      forceGemmConfig(cfg);
      const [M, N, K] = [37, 19, 101];
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        await checkMatmul(backend, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }, `${cfg.name} ta=${ta} tb=${tb}`);
      }
      await checkMatmul(backend, [3, 5, 33], [33, 6], {}, `${cfg.name} batched, broadcast b`);
      await checkMatmul(backend, [2, 1, 4, 9], [1, 3, 9, 5], {}, `${cfg.name} batch broadcast both`);
      await checkMatmul(backend, [1, 1], [1, 1], {}, `${cfg.name} 1x1x1`);
    });
  }
  for (const cfg of gemvs) {
    gpuIt(`${cfg.name}: rows up to ${(cfg as { mr: number }).mr}, both layouts of B, K split`, async (backend) => {
      forceGemmConfig(cfg);
      const mr = (cfg as { mr: number }).mr;
      for (const M of [...new Set([1, Math.max(1, mr - 1), mr])]) {
        await checkMatmul(backend, [M, 301], [77, 301], { transposeB: true }, `${cfg.name} M=${M} x·Wᵀ`);
        await checkMatmul(backend, [M, 301], [301, 77], {}, `${cfg.name} M=${M} x·W`);
        await checkMatmul(backend, [301, M], [301, 77], { transposeA: true }, `${cfg.name} M=${M} aᵀ·W`);
      }
    });
  }
  for (const cfg of [VEC4_128, { ...VEC4_128, name: 'vec4-128x128+splitK3', splits: 3 }]) {
    gpuIt(`${cfg.name}: all transposes on aligned shapes that are not multiples of the tile`, async (backend) => {
      forceGemmConfig(cfg);
      const [M, N, K] = [132, 68, 100];
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        await checkMatmul(backend, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }, `${cfg.name} ta=${ta} tb=${tb}`);
      }
      await checkMatmul(backend, [37, 100], [20, 100], { transposeB: true }, `${cfg.name} odd M`);
      await checkMatmul(backend, [3, 36, 12], [12, 8], {}, `${cfg.name} batched, broadcast b`);
    });
  }
  for (const mr of [1, 4, 16]) {
    gpuIt(`gemv${mr}-vec4: x·Wᵀ with K % 4 = 0, K split`, async (backend) => {
      forceGemmConfig({ kind: 'gemv', name: `gemv${mr}-vec4`, mr, lanes: 32, splits: 3, vec4: true });
      for (const M of [...new Set([1, Math.max(1, mr - 1), mr])]) await checkMatmul(backend, [M, 300], [77, 300], { transposeB: true }, `gemv${mr}-vec4 M=${M}`);
    });
  }
  gpuIt('the selector itself on LoRA-shaped products (scaled down)', async (backend) => {
    await checkMatmul(backend, [257, 300], [8, 300], { transposeB: true }, 'x·Aᵀ');
    await checkMatmul(backend, [257, 8], [300, 8], { transposeB: true }, 'T·Bᵀ');
    await checkMatmul(backend, [257, 16], [257, 300], { transposeA: true }, 'Uᵀ·x');
    await checkMatmul(backend, [3, 300], [130, 300], { transposeB: true }, 'decode');
  });
});
