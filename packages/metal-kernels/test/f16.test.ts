import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect } from 'vitest';
import { gemmDevice, loraPlan, type WebGPUBackend } from '../src/index';
import { gpuIt, withDispatchLabels } from '../../../test-support/gpu';

/** float16 storage, f32 arithmetic: compare with the float64 reference of the f16-rounded inputs. */
async function f16AgainstReference(backend: WebGPUBackend, fn: (...xs: Tensor[]) => Tensor, shapes: number[][], label: string): Promise<void> {
  if (!backend.context.report.shaderF16) return;
  const data = shapes.map((s, i) =>
    randomValues(
      s.reduce((a, b) => a * b, 1),
      300 + i,
    ),
  );
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
    await f16AgainstReference(
      b,
      T.mul,
      [
        [4, 1, 9],
        [3, 1],
      ],
      'mul',
    );
    await f16AgainstReference(b, (x) => T.sum(x, 1), [[5, 301]], 'sum');
    await f16AgainstReference(b, (x) => T.softmax(x), [[5, 33]], 'softmax');
    await f16AgainstReference(b, (x) => T.transpose(x), [[7, 5]], 'transpose');
  });
  gpuIt('GEMM through the selector: tiled, vec4, gemv-rows and gemv-cols (every variant forced: gemm.test.ts)', async (b) => {
    await f16AgainstReference(
      b,
      (x, y) => T.matmul(x, y, { transposeB: true }),
      [
        [37, 101],
        [19, 101],
      ],
      'tiled x·Wᵀ',
    );
    await f16AgainstReference(
      b,
      (x, y) => T.matmul(x, y, { transposeB: true }),
      [
        [130, 68],
        [72, 68],
      ],
      'vec4 x·Wᵀ',
    );
    await f16AgainstReference(
      b,
      (x, y) => T.matmul(x, y, { transposeB: true }),
      [
        [2, 300],
        [70, 300],
      ],
      'gemv-rows decode',
    );
    await f16AgainstReference(
      b,
      (x, y) => T.matmul(x, y),
      [
        [3, 301],
        [301, 77],
      ],
      'gemv x·W',
    );
    await f16AgainstReference(
      b,
      (x, y) => T.matmul(x, y),
      [
        [3, 300],
        [300, 76],
      ],
      'gemv-cols x·W',
    );
  });
  // The fused plans (vec4 prologue for M > 16, gemv-rows epilogue for decode) and the composed
  // one (odd sizes), forward and every gradient, with dropout and bias in some.
  const loraCases = [
    { M: 65, inF: 36, outF: 20, r: 8, dropout: 0, bias: true, plan: 'fused', kernel: 'vec4-128x128' },
    { M: 40, inF: 36, outF: 44, r: 12, dropout: 0.2, bias: false, plan: 'fused', kernel: 'vec4-128x128' },
    { M: 3, inF: 68, outF: 132, r: 8, dropout: 0, bias: true, plan: 'fused', kernel: 'gemv-rows4+concat' },
    { M: 33, inF: 37, outF: 20, r: 5, dropout: 0.1, bias: true, plan: 'composed', kernel: 'tile32x32' },
  ] as const;
  for (const c of loraCases) {
    gpuIt(`loraLinear forward and backward (${c.plan} plan, M=${c.M} r=${c.r} dropout=${c.dropout}) in float16 storage against float64`, async (b) => {
      if (!b.context.report.shaderF16) return;
      expect(loraPlan({ ...c, dtype: 'float16' }, gemmDevice(b))).toBe(c.plan);
      const shapes = [[c.M, c.inF], [c.outF, c.inF], [c.r, c.inF], [c.outF, c.r], [c.outF], [c.M, c.outF]];
      const gpuIn = shapes.map((s, i) =>
        T.tensor(
          randomValues(
            s.reduce((p, q) => p * q, 1),
            320 + i,
          ),
          s,
          { dtype: 'float16', backend: b },
        ),
      );
      const refIn = await Promise.all(
        gpuIn.map(async (t, i) => T.tensor(Float64Array.from(await t.data()), shapes[i], { dtype: 'float64', backend: cpuBackend })),
      );
      const run = ([x, w, la, lb, bias, dy]: Tensor[]) => {
        const leaves = (c.bias ? [x, la, lb, bias] : [x, la, lb]).map((t) => {
          const leaf = t.detach();
          leaf.requiresGrad = true;
          return leaf;
        });
        const y = T.loraLinear(leaves[0], w, leaves[1], leaves[2], { scale: 2, bias: leaves[3], dropout: c.dropout, seed: 77 });
        return [y, ...T.grad(T.sum(T.mul(y, dy)), leaves)];
      };
      const { result: got, labels } = await withDispatchLabels(b, () => run(gpuIn));
      expect(labels).toContain(c.kernel);
      const want = run(refIn);
      for (const [i, name] of ['y', 'dx', 'dA', 'dB', 'dbias'].slice(0, want.length).entries()) {
        expect(got[i].dtype).toBe('float16');
        const expected = want[i].dataSync();
        assertClose(await got[i].data(), expected, scaledTolerance(TOLERANCES.float16, expected, 1e-3), `loraLinear f16 ${name} ${JSON.stringify(c)}`);
      }
    });
  }
  gpuIt('float16 is refused with a typed error where the adapter lacks shader-f16', async (b) => {
    if (b.context.report.shaderF16) {
      expect(b.context.report.features).toContain('shader-f16');
      return;
    }
    expect(() => T.exp(T.tensor([1, 2], undefined, { dtype: 'float16', backend: b }))).toThrow(/needs the 'shader-f16' feature/);
  });
});
