import { describe, expect, it } from 'vitest';
import {
  add,
  dequantize,
  dropoutKeep,
  getKernel,
  loraLinear,
  matmul,
  mul,
  quantize,
  registerKernel,
  sum,
  tensor,
  unregisterKernel,
  type Tensor,
} from '../src/index';
import { assertClose, randomTensor, TOLERANCES } from '../src/testing';

/** y = x·Wᵀ + bias + s·(mask⊙x/(1-p))·Aᵀ·Bᵀ written with separate ops, as the reference. */
function unfused(x: Tensor, w: Tensor, a: Tensor, b: Tensor, scale: number, bias?: Tensor, dropout = 0, seed = 0): Tensor {
  let xd = x;
  if (dropout > 0) {
    const mask = new Float64Array(x.size).map((_, i) => (dropoutKeep(seed, i, dropout) ? 1 / (1 - dropout) : 0));
    xd = mul(x, tensor(mask, [...x.shape], { dtype: x.dtype }));
  }
  const base = matmul(x, w, { transposeB: true });
  const low = matmul(matmul(xd, a, { transposeB: true }), b, { transposeB: true });
  const y = add(base, mul(low, scale));
  return bias ? add(y, bias) : y;
}

describe('loraLinear (CPU reference)', () => {
  it.each([
    [1, 7, 5, 1, false, 0],
    [3, 9, 4, 4, true, 0],
    [17, 13, 11, 8, true, 0.3],
    [2, 33, 6, 16, false, 0.1],
  ])('M=%i in=%i out=%i rank=%i bias=%s dropout=%f matches the unfused composition', (m, inF, outF, r, hasBias, p) => {
    const opts = { dtype: 'float64' as const };
    const x = randomTensor([m, inF], 1, opts);
    const w = randomTensor([outF, inF], 2, opts);
    const a = randomTensor([r, inF], 3, opts);
    const b = randomTensor([outF, r], 4, opts);
    const bias = hasBias ? randomTensor([outF], 5, opts) : undefined;
    const y = loraLinear(x, w, a, b, { scale: 2, bias, dropout: p, seed: 99 });
    assertClose(y.dataSync(), unfused(x, w, a, b, 2, bias, p, 99).dataSync(), TOLERANCES.float64);
  });

  it('keeps leading dims of x', () => {
    const y = loraLinear(randomTensor([2, 3, 4], 1), randomTensor([5, 4], 2), randomTensor([2, 4], 3), randomTensor([5, 2], 4), { scale: 1 });
    expect(y.shape).toEqual([2, 3, 5]);
  });

  it('dropout drops about p of the inputs and the mask is reproducible from the seed', () => {
    let kept = 0;
    for (let i = 0; i < 10000; i++) if (dropoutKeep(7, i, 0.25)) kept++;
    expect(kept / 10000).toBeCloseTo(0.75, 1);
    const x = randomTensor([4, 8], 1);
    const args = [randomTensor([3, 8], 2), randomTensor([2, 8], 3), randomTensor([3, 2], 4)] as const;
    const y1 = loraLinear(x, ...args, { scale: 1, dropout: 0.5, seed: 3 }).dataSync();
    const y2 = loraLinear(x, ...args, { scale: 1, dropout: 0.5, seed: 3 }).dataSync();
    const y3 = loraLinear(x, ...args, { scale: 1, dropout: 0.5, seed: 4 }).dataSync();
    expect(Array.from(y1)).toEqual(Array.from(y2));
    expect(Array.from(y1)).not.toEqual(Array.from(y3));
  });

  it('backward asks only for the gradients that are needed (frozen weight, x without grad)', () => {
    const seen: Record<string, unknown>[] = [];
    const cpuBackward = getKernel('cpu', 'loraLinearBackward');
    unregisterKernel('cpu', 'loraLinearBackward');
    registerKernel('cpu', 'loraLinearBackward', (args) => {
      seen.push({ ...args.attrs });
      return cpuBackward(args);
    });
    try {
      const x = randomTensor([3, 4], 1);
      const w = randomTensor([2, 4], 2);
      const a = randomTensor([2, 4], 3, { requiresGrad: true });
      const b = randomTensor([2, 2], 4, { requiresGrad: true });
      sum(loraLinear(x, w, a, b, { scale: 1 })).backward();
      expect(seen[0]).toMatchObject({ needX: false, needWeight: false, needA: true, needB: true, needBias: false });
      expect(x.grad).toBeNull();
      expect(w.grad).toBeNull();
      expect(a.grad!.shape).toEqual([2, 4]);
      expect(b.grad!.shape).toEqual([2, 2]);
    } finally {
      unregisterKernel('cpu', 'loraLinearBackward');
      registerKernel('cpu', 'loraLinearBackward', cpuBackward);
    }
  });

  it('float16 inputs compute in f32 and return float16', () => {
    const h = { dtype: 'float16' as const };
    const make = (o: { dtype: 'float16' | 'float32' }) =>
      loraLinear(randomTensor([2, 4], 1, o), randomTensor([3, 4], 2, o), randomTensor([2, 4], 3, o), randomTensor([3, 2], 4, o), { scale: 1 });
    const y = make(h);
    expect(y.dtype).toBe('float16');
    expect(y.dataSync()).toBeInstanceOf(Float32Array);
    assertClose(y.dataSync(), make({ dtype: 'float32' }).dataSync(), { rtol: 5e-3, atol: 5e-3 });
  });

  describe('over a quantized base (QLoRA)', () => {
    /** A random W quantized, its float64 parts, and the float64 W they stand for. */
    function base(outF: number, inF: number, bits: number, groupSize: number) {
      const q = quantize(randomTensor([outF, inF], 2), { bits, groupSize });
      const quant = { scales: q.scales.cast('float64'), biases: q.biases.cast('float64'), bits, groupSize };
      return { weight: q.weight, quant, dense: dequantize(q.weight, quant.scales, quant.biases, quant) };
    }

    it.each([
      [5, 64, 9, 4, 4, 32, true, 0],
      [19, 96, 7, 8, 3, 32, false, 0.2],
      [2, 128, 12, 2, 8, 128, true, 0.1],
    ])(
      'M=%i in=%i out=%i rank=%i %i bits, groups of %i, bias=%s dropout=%f: y and every gradient equal those of the dequantized W',
      (m, inF, outF, r, bits, groupSize, hasBias, p) => {
        const opts = { dtype: 'float64' as const };
        const { weight, quant, dense } = base(outF, inF, bits, groupSize);
        const bias = hasBias ? randomTensor([outF], 5, opts) : undefined;
        const run = (w: Tensor, q?: typeof quant) => {
          const x = randomTensor([m, inF], 1, { ...opts, requiresGrad: true });
          const a = randomTensor([r, inF], 3, { ...opts, requiresGrad: true });
          const b = randomTensor([outF, r], 4, { ...opts, requiresGrad: true });
          const y = loraLinear(x, w, a, b, { scale: 2, bias, dropout: p, seed: 5, quant: q });
          sum(mul(y, y)).backward();
          return [y, x.grad!, a.grad!, b.grad!].map((t) => t.dataSync());
        };
        const got = run(weight, quant);
        const want = run(dense);
        for (let i = 0; i < 4; i++) assertClose(got[i], want[i], TOLERANCES.float64, ['y', 'dx', 'dA', 'dB'][i]);
      },
    );

    it('refuses a base that asks for gradients, parts of the wrong shape and a dtype other than the activations', () => {
      const { weight, quant } = base(6, 64, 4, 32);
      const opts = { dtype: 'float64' as const };
      const [x, a, b] = [randomTensor([3, 64], 1, opts), randomTensor([2, 64], 3, opts), randomTensor([6, 2], 4, opts)];
      const frozen = quant.scales;
      quant.scales = randomTensor([6, 2], 7, { ...opts, requiresGrad: true });
      expect(() => loraLinear(x, weight, a, b, { scale: 1, quant })).toThrow('loraLinear: a quantized base is constant');
      quant.scales = frozen;
      expect(() => loraLinear(x, weight, a, b, { scale: 1, quant: { ...quant, groupSize: 64 } })).toThrow(/loraLinear: weight's packed width does not match/);
      expect(() => loraLinear(randomTensor([3, 64], 1), weight, a, b, { scale: 1, quant })).toThrow(/loraLinear: .*dtype/);
      expect(() => loraLinear(x, weight, a, b, { scale: 1, quant: { ...quant, bits: 7 } })).toThrow('loraLinear: unsupported bits');
      expect(() => loraLinear(x, weight, randomTensor([2, 32], 3, opts), b, { scale: 1, quant })).toThrow('loraLinear: loraA must be [rank, in]');
      expect(() => loraLinear(x, weight, a, b, { scale: 1 })).toThrow('loraLinear: weight holds packed words but no quant was given');
      expect(() => loraLinear(x, weight, a, b, { scale: 1, quant: { ...quant, scales: undefined as unknown as Tensor } })).toThrow(/loraLinear: quant\.scales/);
    });
  });
});
