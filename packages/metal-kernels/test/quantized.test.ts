import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';
import type { WebGPUBackend } from '../src/index';

/** A random weight quantized on the host, as CPU tensors (the reference) and on the GPU. */
function quantized(b: WebGPUBackend, rows: number, cols: number, bits: number, groupSize: number, seed: number, dtype: 'float32' | 'float16' = 'float32') {
  const w = T.tensor(randomValues(rows * cols, seed, 0.4), [rows, cols], { dtype, backend: cpuBackend });
  const q = T.quantize(w, { bits, groupSize });
  const gpu = [q.weight, q.scales, q.biases].map((t) => T.tensor(t.dataSync(), [...t.shape], { dtype: t.dtype, backend: b }));
  // The float64 matrix the packed one stands for.
  const ref = T.dequantize(q.weight, q.scales.cast('float64'), q.biases.cast('float64'), { bits, groupSize });
  return { cpu: q, gpu: { weight: gpu[0], scales: gpu[1], biases: gpu[2] }, ref };
}

describe('webgpu quantized weights (MLX affine)', () => {
  // Every bit width, every group size, awkward row counts; rows of x from 1 (decode) to past a tile.
  const cases: [number, number, number, number, number][] = [
    // bits, groupSize, W rows, groups per row, x rows
    [4, 64, 67, 3, 1],
    [4, 32, 33, 5, 70],
    [8, 128, 17, 2, 9],
    [3, 32, 45, 3, 5],
    [2, 64, 70, 2, 33],
    [6, 32, 19, 4, 3],
    [5, 128, 9, 1, 66],
    // The vec4 GEMM's QUANT section (M ≥ 64, aligned): both directions, word-aligned and straddling bits.
    [4, 32, 64, 4, 100],
    [8, 64, 96, 2, 130],
    [3, 32, 32, 3, 65],
    // The decode kernel (2, 4 and 8 bits, up to eight rows): awkward row counts of W.
    [8, 32, 33, 2, 4],
    [2, 128, 13, 1, 8],
    [4, 64, 250, 2, 2],
    [4, 32, 40, 2, 16],
  ];
  for (const [bits, groupSize, rows, groups, m] of cases) {
    gpuIt(`${bits} bits, groups of ${groupSize}: dequantize, x·Wᵀ and dy·W against float64 ([${rows}, ${groups * groupSize}], ${m} rows)`, async (b) => {
      b.poisonOutputs = true;
      try {
        const cols = groups * groupSize;
        const { gpu, ref } = quantized(b, rows, cols, bits, groupSize, bits * 31 + m);
        const spec = { bits, groupSize };
        const deq = T.dequantize(gpu.weight, gpu.scales, gpu.biases, spec);
        assertClose(await deq.data(), ref.dataSync(), TOLERANCES.float32, 'dequantize');
        const xv = randomValues(m * cols, 5 + m);
        const x = T.tensor(xv, [m, cols], { dtype: 'float32', backend: b });
        const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true });
        assertClose(await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, spec).data(), want.dataSync(), TOLERANCES.float32, 'x·Wᵀ');
        const dv = randomValues(m * rows, 9 + m);
        const dy = T.tensor(dv, [1, m, rows], { dtype: 'float32', backend: b });
        const back = T.quantizedMatmul(dy, gpu.weight, gpu.scales, gpu.biases, { ...spec, transpose: false });
        expect(back.shape).toEqual([1, m, cols]);
        const wantBack = T.matmul(T.tensor(dv, [m, rows], { dtype: 'float64', backend: cpuBackend }), ref);
        assertClose(await back.data(), wantBack.dataSync(), TOLERANCES.float32, 'dy·W');
      } finally {
        b.poisonOutputs = false;
      }
    });
  }

  gpuIt('float16 scales and activations: the product within f16 tolerance of float64', async (b, ctx) => {
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    const { gpu, ref } = quantized(b, 40, 128, 4, 64, 3, 'float16');
    const xv = Float64Array.from(randomValues(12 * 128, 4), (v) => T.float16BitsToFloat32(T.float32ToFloat16Bits(v)));
    const x: Tensor = T.tensor(xv, [12, 128], { dtype: 'float16', backend: b });
    const want = T.matmul(T.tensor(xv, [12, 128], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true });
    assertClose(await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, { bits: 4, groupSize: 64 }).data(), want.dataSync(), TOLERANCES.float16);
  });

  gpuIt('the gradient in x through the GPU kernels equals the CPU float64 one', async (b) => {
    const { cpu, gpu } = quantized(b, 24, 64, 4, 32, 8);
    const xv = randomValues(5 * 64, 6);
    const grad = async (backend: T.Backend, q: { weight: Tensor; scales: Tensor; biases: Tensor }, dtype: 'float32' | 'float64') => {
      const x = T.tensor(xv, [5, 64], { dtype, backend, requiresGrad: true });
      const [scales, biases] = dtype === 'float64' ? [q.scales.cast('float64'), q.biases.cast('float64')] : [q.scales, q.biases];
      const loss = T.sum(
        T.mul(
          T.quantizedMatmul(x, q.weight, scales, biases, { bits: 4, groupSize: 32 }),
          T.quantizedMatmul(x, q.weight, scales, biases, { bits: 4, groupSize: 32 }),
        ),
      );
      loss.backward();
      return x.grad!.data();
    };
    assertClose(await grad(b, gpu, 'float32'), await grad(cpuBackend, cpu, 'float64'), TOLERANCES.float32);
  });
});
