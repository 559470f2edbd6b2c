/** The float64 checks the GEMM and gemv test files share: random operands, the reference product, the epilogue. */
import * as T from '@metal-lora/tensor';
import { cpuBackend, fromStorage, type Tensor, toStorage } from '@metal-lora/tensor';
import { assertClose, gemmTolerance, randomValues, storedValues } from '@metal-lora/tensor/testing';
import { expect } from 'vitest';
import type { GemmShape, WebGPUBackend } from '../src/index';
import { type GemmConfig, recordGemm } from '../src/internal';

export const shape = (M: number, N: number, K: number, extra: Partial<GemmShape> = {}): GemmShape => ({
  M,
  N,
  K,
  batch: 1,
  transA: false,
  transB: false,
  ...extra,
});

export function random(shape: number[], seed: number, backend: T.Backend, dtype: 'float32' | 'float64'): Tensor {
  return T.tensor(
    randomValues(
      shape.reduce((a, b) => a * b, 1),
      seed,
    ),
    shape,
    { dtype, backend },
  );
}

export type Stored = 'float32' | 'float16';

export async function checkMatmul(
  backend: WebGPUBackend,
  aShape: number[],
  bShape: number[],
  options: T.MatmulOptions,
  label: string,
  dtype: Stored = 'float32',
): Promise<void> {
  const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
  const [a, b] = [storedValues(size(aShape), 1, dtype), storedValues(size(bShape), 2, dtype)];
  const ref = T.matmul(T.tensor(a, aShape, { dtype: 'float64', backend: cpuBackend }), T.tensor(b, bShape, { dtype: 'float64', backend: cpuBackend }), options);
  const got = T.matmul(T.tensor(a, aShape, { dtype, backend }), T.tensor(b, bShape, { dtype, backend }), options);
  expect(got.shape).toEqual(ref.shape);
  expect(got.dtype).toBe(dtype);
  const expected = ref.dataSync();
  assertClose(await got.data(), expected, gemmTolerance(dtype, expected), `${label} ${dtype}`);
  got.dispose();
}

/** A float64 array uploaded as `dtype` (f32 by default); the raw buffer. */
export function upload(backend: WebGPUBackend, values: Float64Array, dtype: Stored = 'float32'): GPUBuffer {
  return (backend.upload(toStorage(values, dtype), dtype) as { buffer: GPUBuffer }).buffer;
}

/**
 * C = α·op(A)·op(B) + β·C₀ + bias through recordGemm with a forced config, C₀ random: the
 * epilogue paths (bias column, accumulate, α) of a kernel against float64 on the host.
 */
export async function checkEpilogue(backend: WebGPUBackend, cfg: GemmConfig, s: GemmShape, dtype: Stored = 'float32'): Promise<void> {
  const { M, N, K } = s;
  const a = storedValues(M * K, 31, dtype);
  const b = storedValues(K * N, 32, dtype);
  const c0 = storedValues(M * N, 33, dtype);
  const bias = storedValues(N, 34, dtype);
  const [alpha, beta] = [0.75, -1.5];
  const [ab, bb, cb, biasb] = [a, b, c0, bias].map((v) => upload(backend, v, dtype));
  recordGemm(backend, { ...s, dtype }, { a: ab, b: bb, c: cb, bias: biasb, aBatchStride: 0, bBatchStride: 0, alpha, beta, dtype }, cfg);
  const got = fromStorage(await backend.read({ buffer: cb, bytes: M * N * (dtype === 'float16' ? 2 : 4) }, dtype, M * N), dtype);
  const want = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let dot = 0;
      for (let k = 0; k < K; k++) dot += (s.transA ? a[k * M + m] : a[m * K + k]) * (s.transB ? b[n * K + k] : b[k * N + n]);
      want[m * N + n] = alpha * dot + beta * c0[m * N + n] + bias[n];
    }
  }
  for (const buffer of [ab, bb, cb, biasb]) backend.release(buffer);
  assertClose(got, want, gemmTolerance(dtype, want), `${cfg.name} epilogue ${JSON.stringify(s)} ${dtype}`);
}
