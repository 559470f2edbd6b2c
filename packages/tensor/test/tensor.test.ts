import { describe, expect, it } from 'vitest';
import { arange, float16BitsToFloat32, float32ToFloat16Bits, full, manualSeed, ones, rand, randn, scalar, tensor, zeros } from '../src/index';

describe('creation', () => {
  it('infers shapes from nested arrays and dtypes from typed arrays', () => {
    const t = tensor([
      [1, 2, 3],
      [4, 5, 6],
    ]);
    expect(t.shape).toEqual([2, 3]);
    expect(t.dtype).toBe('float32');
    expect(tensor(new Int32Array([1, 2])).dtype).toBe('int32');
    expect(tensor(new Float64Array([1, 2])).dtype).toBe('float64');
    expect(tensor(7).shape).toEqual([]);
    expect(scalar(2).itemSync()).toBe(2);
  });
  it('copies typed input so later edits of the source do not leak in', () => {
    const src = new Float32Array([1, 2]);
    const t = tensor(src);
    src[0] = 99;
    expect(t.toArraySync()).toEqual([1, 2]);
  });
  it('zeros, ones, full, arange', () => {
    expect(zeros([2, 2]).toArraySync()).toEqual([
      [0, 0],
      [0, 0],
    ]);
    expect(ones([3]).toArraySync()).toEqual([1, 1, 1]);
    expect(full([2], 7, { dtype: 'int32' }).toArraySync()).toEqual([7, 7]);
    expect(arange(5).toArraySync()).toEqual([0, 1, 2, 3, 4]);
    expect(arange(1, 2, 0.25).toArraySync()).toEqual([1, 1.25, 1.5, 1.75]);
    expect(arange(5, 0, -2).toArraySync()).toEqual([5, 3, 1]);
  });
  it('async reads: data, toArray, item', async () => {
    const t = tensor([[1, 2]]);
    expect(Array.from(await t.data())).toEqual([1, 2]);
    expect(await t.toArray()).toEqual([[1, 2]]);
    expect(await tensor([4]).item()).toBe(4);
  });
});

describe('seeded random numbers', () => {
  it('same seed, same numbers; different seeds differ', () => {
    const a = randn([1000], { seed: 42 }).dataSync();
    const b = randn([1000], { seed: 42 }).dataSync();
    const c = randn([1000], { seed: 43 }).dataSync();
    expect(Array.from(a)).toEqual(Array.from(b));
    expect(Array.from(a)).not.toEqual(Array.from(c));
  });
  it('the n-th number does not depend on how many are drawn', () => {
    const short = rand([10], { seed: 5 }).dataSync();
    const long = rand([1000], { seed: 5 }).dataSync();
    expect(Array.from(long.slice(0, 10))).toEqual(Array.from(short));
  });
  it('the global generator is reproducible after manualSeed', () => {
    manualSeed(7);
    const a = rand([4]).dataSync();
    manualSeed(7);
    expect(Array.from(rand([4]).dataSync())).toEqual(Array.from(a));
  });
  it('moments match the distributions', () => {
    const n = 20000;
    const u = rand([n], { seed: 1, low: -1, high: 3 }).dataSync();
    const g = randn([n], { seed: 2, mean: 1, std: 2 }).dataSync();
    const meanOf = (v: ArrayLike<number>) => Array.from(v).reduce((s, x) => s + x, 0) / v.length;
    const varOf = (v: ArrayLike<number>) => {
      const m = meanOf(v);
      return Array.from(v).reduce((s, x) => s + (x - m) ** 2, 0) / v.length;
    };
    expect(Math.min(...u)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...u)).toBeLessThan(3);
    expect(meanOf(u)).toBeCloseTo(1, 1);
    expect(meanOf(g)).toBeCloseTo(1, 1);
    expect(varOf(g)).toBeCloseTo(4, 0);
  });
});

describe('float16 storage', () => {
  it('rounds to nearest even and decodes subnormals, infinities', () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00);
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // rounds up to infinity
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even (up)
    expect(float16BitsToFloat32(0x0001)).toBe(2 ** -24);
    expect(float16BitsToFloat32(0xfc00)).toBe(Number.NEGATIVE_INFINITY);
    expect(Number.isNaN(float16BitsToFloat32(0x7e00))).toBe(true);
  });
  it('float16 tensors compute in f32 and store halves', () => {
    const h = tensor([1, 2, 3], undefined, { dtype: 'float16' });
    const y = h.mul(h);
    expect(y.dtype).toBe('float16');
    expect(Array.from(y.dataSync())).toEqual([1, 4, 9]);
  });
});
