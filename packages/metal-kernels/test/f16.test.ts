import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect } from 'vitest';
import type { WebGPUBackend } from '../src/index';
import { gpuIt } from './gpu-env';

/** float16 storage, f32 arithmetic: compare with the float64 reference of the f16-rounded inputs. */
async function f16AgainstReference(backend: WebGPUBackend, fn: (...xs: Tensor[]) => Tensor, shapes: number[][], label: string): Promise<void> {
  if (!backend.context.report.shaderF16) return;
  const data = shapes.map((s, i) => randomValues(s.reduce((a, b) => a * b, 1), 300 + i));
  const gpuIn = data.map((d, i) => T.tensor(d, shapes[i], { dtype: 'float16', backend }));
  // The reference sees exactly the halves the GPU sees.
  const refIn = await Promise.all(gpuIn.map(async (t, i) => T.tensor(Float64Array.from(await t.data()), shapes[i], { dtype: 'float64', backend: cpuBackend })));
  const got = T.noGrad(() => fn(...gpuIn));
  expect(got.dtype).toBe('float16');
  const expected = T.noGrad(() => fn(...refIn)).dataSync();
  assertClose(await got.data(), expected, scaledTolerance(TOLERANCES.float16, expected, 1e-3), label);
}

describe('float16 storage with f32 arithmetic (where shader-f16 exists)', () => {
  gpuIt('elementwise, broadcasting, reductions and softmax', async (b) => {
    await f16AgainstReference(b, (x) => T.gelu(x), [[3, 67]], 'gelu');
    await f16AgainstReference(b, T.mul, [[4, 1, 9], [3, 1]], 'mul');
    await f16AgainstReference(b, (x) => T.sum(x, 1), [[5, 301]], 'sum');
    await f16AgainstReference(b, (x) => T.softmax(x), [[5, 33]], 'softmax');
    await f16AgainstReference(b, (x) => T.transpose(x), [[7, 5]], 'transpose');
  });
  gpuIt('GEMM: tiled and gemv variants', async (b) => {
    await f16AgainstReference(b, (x, y) => T.matmul(x, y, { transposeB: true }), [[37, 101], [19, 101]], 'tiled x·Wᵀ');
    await f16AgainstReference(b, (x, y) => T.matmul(x, y), [[3, 301], [301, 77]], 'gemv x·W');
  });
  gpuIt('loraLinear forward (composed plan)', async (b) => {
    await f16AgainstReference(b, (x, w, la, lb, bias) => T.loraLinear(x, w, la, lb, { scale: 2, bias }), [[65, 36], [20, 36], [8, 36], [20, 8], [20]], 'loraLinear');
  });
  gpuIt('loraLinear backward: dx, dA, dB in float16 storage against float64', async (b) => {
    if (!b.context.report.shaderF16) return;
    const shapes = [[65, 36], [20, 36], [8, 36], [20, 8], [65, 20]];
    const gpuIn = shapes.map((s, i) => T.tensor(randomValues(s[0] * s[1], 320 + i), s, { dtype: 'float16', backend: b }));
    const refIn = await Promise.all(gpuIn.map(async (t, i) => T.tensor(Float64Array.from(await t.data()), shapes[i], { dtype: 'float64', backend: cpuBackend })));
    const gradsOf = ([x, w, la, lb, dy]: Tensor[]) => {
      const leaves = [x, la, lb].map((t) => {
        const leaf = t.detach();
        leaf.requiresGrad = true;
        return leaf;
      });
      const loss = T.sum(T.mul(T.loraLinear(leaves[0], w, leaves[1], leaves[2], { scale: 2 }), dy));
      return T.grad(loss, leaves);
    };
    const got = gradsOf(gpuIn);
    const want = gradsOf(refIn);
    for (const [i, name] of ['dx', 'dA', 'dB'].entries()) {
      expect(got[i].dtype).toBe('float16');
      const expected = want[i].dataSync();
      assertClose(await got[i].data(), expected, scaledTolerance(TOLERANCES.float16, expected, 1e-3), `loraLinear f16 ${name}`);
    }
  });
  gpuIt('float16 is refused with a typed error where the adapter lacks shader-f16', async (b) => {
    if (b.context.report.shaderF16) {
      expect(b.context.report.features).toContain('shader-f16');
      return;
    }
    expect(() => T.exp(T.tensor([1, 2], undefined, { dtype: 'float16', backend: b }))).toThrow(/needs the 'shader-f16' feature/);
  });
});
