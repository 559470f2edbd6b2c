import { describe, expect, it } from 'vitest';
import {
  abs,
  add,
  arange,
  broadcastTo,
  cast,
  concat,
  div,
  equal,
  erf,
  exp,
  gather,
  gelu,
  greater,
  less,
  log,
  logSoftmax,
  matmul,
  max,
  maximum,
  mean,
  mul,
  neg,
  pad,
  pow,
  relu,
  reshape,
  scatterAdd,
  sigmoid,
  silu,
  slice,
  softmax,
  sqrt,
  squeeze,
  sub,
  sum,
  tanh,
  tensor,
  transpose,
  unsqueeze,
  where,
  writeSlice,
  noGrad,
  randn,
  zeros,
} from '../src/index';
import { assertClose, gradCheck, randomTensor, TOLERANCES } from '../src/testing';

const f32 = TOLERANCES.float32;
const close = (t: { dataSync(): ArrayLike<number> }, expected: number[]) => assertClose(t.dataSync(), expected, f32);

describe('elementwise, hand-computed', () => {
  const x = tensor([-2, -0.5, 0, 0.5, 3]);
  it.each([
    ['neg', neg, [2, 0.5, -0, -0.5, -3]],
    ['exp', exp, [Math.exp(-2), Math.exp(-0.5), 1, Math.exp(0.5), Math.exp(3)]],
    ['tanh', tanh, [Math.tanh(-2), Math.tanh(-0.5), 0, Math.tanh(0.5), Math.tanh(3)]],
    ['sigmoid', sigmoid, [0.11920292202, 0.37754066879, 0.5, 0.6224593312, 0.95257412682]],
    ['silu', silu, [-0.23840584404, -0.18877033439, 0, 0.3112296656, 2.85772238047]],
    ['relu', relu, [0, 0, 0, 0.5, 3]],
    ['abs', abs, [2, 0.5, 0, 0.5, 3]],
    ['erf', erf, [-0.99532226501, -0.52049987781, 0, 0.52049987781, 0.9999779095]],
    ['gelu', (t: ReturnType<typeof tensor>) => gelu(t), [-0.0455002639, -0.15426876936, 0, 0.34573123063, 2.99595031903]],
    ['gelu tanh', (t: ReturnType<typeof tensor>) => gelu(t, { approximate: 'tanh' }), [-0.04540230591, -0.15428599017, 0, 0.34571400982, 2.99636353479]],
  ] as const)('%s', (_name, fn, expected) => {
    close(fn(x), [...expected]);
  });
  it('log and sqrt of positives', () => {
    const p = tensor([0.25, 1, 4]);
    close(log(p), [Math.log(0.25), 0, Math.log(4)]);
    close(sqrt(p), [0.5, 1, 2]);
  });
  it('erf is accurate across the series/continued-fraction seam', () => {
    const t = tensor([2.4999, 2.5, 2.5001, 4, 6.5], undefined, { dtype: 'float64' });
    assertClose(erf(t).dataSync(), [0.9995928300996666, 0.999593047982555, 0.9995932657565293, 0.9999999845827421, 1], { rtol: 1e-13, atol: 0 });
  });
});

describe('binary ops and broadcasting', () => {
  it('adds a row vector to every row', () => {
    close(
      add(
        tensor([
          [1, 2, 3],
          [4, 5, 6],
        ]),
        tensor([10, 20, 30]),
      ),
      [11, 22, 33, 14, 25, 36],
    );
  });
  it('broadcasts a column against a row into a matrix', () => {
    const y = mul(tensor([[1], [2]]), tensor([[10, 20, 30]]));
    expect(y.shape).toEqual([2, 3]);
    close(y, [10, 20, 30, 20, 40, 60]);
  });
  it('broadcasts scalars, rank-0 tensors and numbers on either side', () => {
    close(sub(5, tensor([1, 2])), [4, 3]);
    close(div(tensor([1, 2]), 4), [0.25, 0.5]);
    close(add(tensor(3), tensor([[1, 2]])), [4, 5]);
  });
  it('broadcasts size-1 middle dims in rank 4', () => {
    const a = arange(6).reshape([2, 1, 3, 1]);
    const b = arange(8).reshape([1, 4, 1, 2]);
    const y = add(a, b);
    expect(y.shape).toEqual([2, 4, 3, 2]);
    const v = y.dataSync();
    // y[i, j, k, l] = a[i, 0, k, 0] + b[0, j, 0, l]
    expect(v[((1 * 4 + 2) * 3 + 1) * 2 + 1]).toBe(1 * 3 + 1 + (2 * 2 + 1));
  });
  it('pow, maximum and comparisons', () => {
    close(pow(tensor([2, 3, 4]), tensor([3, 2, 0.5])), [8, 9, 2]);
    close(maximum(tensor([1, 5, 3]), tensor([4, 2, 3])), [4, 5, 3]);
    expect(equal(tensor([1, 2]), tensor([1, 3])).toArraySync()).toEqual([true, false]);
    expect(greater(tensor([1, 2]), 1.5).toArraySync()).toEqual([false, true]);
    expect(less(tensor([1, 2]), 1.5).dtype).toBe('bool');
  });
  it('where broadcasts condition and branches', () => {
    const y = where(tensor([[1], [0]], undefined, { dtype: 'bool' }), tensor([1, 2, 3]), tensor(-1));
    close(y, [1, 2, 3, -1, -1, -1]);
  });
  it('empty dimensions produce empty results', () => {
    const y = add(tensor(new Float32Array(0), [0, 3]), tensor([1, 2, 3]));
    expect(y.shape).toEqual([0, 3]);
  });
});

describe('reductions and softmax', () => {
  const x = tensor([
    [1, 5, 3],
    [4, 2, 6],
  ]);
  it('sum, mean, max over axes with and without keepDims', () => {
    close(sum(x), [21]);
    close(sum(x, 0), [5, 7, 9]);
    expect(sum(x, 1, true).shape).toEqual([2, 1]);
    close(mean(x, -1), [3, 4]);
    close(max(x, 1), [5, 6]);
    close(max(x, [0, 1]), [6]);
  });
  it('sum over a middle axis of rank 3', () => {
    const t = arange(24).reshape([2, 3, 4]);
    close(sum(t, 1), [12, 15, 18, 21, 48, 51, 54, 57]);
  });
  it('softmax rows sum to one and survive large logits', () => {
    const s = softmax(
      tensor([
        [1000, 1000],
        [0, Math.log(3)],
      ]),
    );
    close(s, [0.5, 0.5, 0.25, 0.75]);
    close(logSoftmax(tensor([0, Math.log(3)])), [Math.log(0.25), Math.log(0.75)]);
  });
  it('softmax along axis 0', () => {
    close(
      softmax(
        tensor([
          [0, 1],
          [0, 1],
        ]),
        0,
      ),
      [0.5, 0.5, 0.5, 0.5],
    );
  });
});

describe('matmul', () => {
  const a = tensor([
    [1, 2, 3],
    [4, 5, 6],
  ]);
  const b = tensor([
    [7, 8],
    [9, 10],
    [11, 12],
  ]);
  it('plain and with every transpose combination', () => {
    const expected = [58, 64, 139, 154];
    close(matmul(a, b), expected);
    close(matmul(transpose(a), b, { transposeA: true }), expected);
    close(matmul(a, transpose(b), { transposeB: true }), expected);
    close(matmul(transpose(a), transpose(b), { transposeA: true, transposeB: true }), expected);
  });
  it('broadcasts batch dimensions', () => {
    const batch = reshape(concat([a, mul(a, 2)]), [2, 2, 3]);
    const y = matmul(batch, b);
    expect(y.shape).toEqual([2, 2, 2]);
    close(y, [58, 64, 139, 154, 116, 128, 278, 308]);
  });
});

describe('layout and indexing', () => {
  const x = arange(6).reshape([2, 3]);
  it('transpose, permute in rank 3, reshape with -1', () => {
    close(transpose(x), [0, 3, 1, 4, 2, 5]);
    const t = arange(24).reshape([2, 3, 4]);
    const p = transpose(t, [2, 0, 1]);
    expect(p.shape).toEqual([4, 2, 3]);
    expect(p.dataSync()[1 * 6 + 1 * 3 + 2]).toBe(1 * 12 + 2 * 4 + 1);
    expect(reshape(x, [-1]).shape).toEqual([6]);
    expect(squeeze(unsqueeze(x, 1)).shape).toEqual([2, 3]);
  });
  it('transpose that moves only axes of size 1 (a reshape) matches the general kernel, value and gradient', () => {
    const t = arange(24).reshape([2, 1, 3, 1, 4]);
    // [0, 3, 2, 1, 4] moves only the size-1 axes; [0, 4, 2, 1, 3] moves the 4 too (the kernel).
    const cheap = transpose(t, [0, 3, 2, 1, 4]);
    expect(cheap.shape).toEqual([2, 1, 3, 1, 4]);
    expect(Array.from(cheap.dataSync())).toEqual(Array.from(t.dataSync()));
    const general = transpose(t, [0, 4, 2, 1, 3]);
    expect(general.shape).toEqual([2, 4, 3, 1, 1]);
    expect(general.dataSync()[1 * 12 + 3 * 3 + 2]).toBe(1 * 12 + 2 * 4 + 3);
    const w = randomTensor([3, 1, 2, 4], 3, { dtype: 'float64' });
    gradCheck((a) => mul(transpose(a, [1, 0, 2, 3]), w), [randomTensor([1, 3, 2, 4], 4, { dtype: 'float64' })]);
  });
  it('slice with negative and clamped bounds', () => {
    close(slice(x, [0, 1]), [1, 2, 4, 5]);
    close(slice(x, [-1, -2], [undefined as unknown as number, 100]), [4, 5]);
    expect(slice(x, [5]).shape).toEqual([0, 3]);
  });
  it('pad, concat, broadcastTo', () => {
    close(
      pad(
        tensor([[1, 2]]),
        [
          [1, 0],
          [0, 1],
        ],
        9,
      ),
      [9, 9, 9, 1, 2, 9],
    );
    close(concat([x, tensor([[6, 7, 8]])], 0), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    close(concat([x, tensor([[9], [9]])], 1), [0, 1, 2, 9, 3, 4, 5, 9]);
    close(broadcastTo(tensor([1, 2]), [2, 2]), [1, 2, 1, 2]);
  });
  it('gather rows and along axis 1; scatterAdd accumulates repeats', () => {
    const table = tensor([
      [1, 2],
      [3, 4],
      [5, 6],
    ]);
    const ids = tensor(
      [
        [2, 0],
        [2, 2],
      ],
      undefined,
      { dtype: 'int32' },
    );
    const g = gather(table, ids);
    expect(g.shape).toEqual([2, 2, 2]);
    close(g, [5, 6, 1, 2, 5, 6, 5, 6]);
    close(gather(table, tensor([1], undefined, { dtype: 'int32' }), 1), [2, 4, 6]);
    close(
      scatterAdd(
        tensor([0, 0, 2], undefined, { dtype: 'int32' }),
        tensor([
          [1, 1],
          [2, 2],
          [3, 3],
        ]),
        [3, 2],
      ),
      [3, 3, 0, 0, 3, 3],
    );
  });
  it('writeSlice writes in place along any axis from the start a tensor holds', () => {
    // Against slice-by-slice copies in float64, on awkward shapes, each axis, several starts.
    for (const [shape, axis, span] of [
      [[3, 5, 7], 1, 2],
      [[2, 3, 9, 5], 2, 4],
      [[7, 3], 0, 7],
      [[4, 6], -1, 1],
    ] as const) {
      const a = (axis + shape.length) % shape.length;
      for (const at of [0, shape[a] - span, Math.floor((shape[a] - span) / 2)]) {
        const target = randn([...shape], { seed: 1, dtype: 'float64' });
        const before = target.dataSync();
        const valuesShape = shape.map((d, j) => (j === a ? span : d));
        const values = randn(valuesShape, { seed: 2, dtype: 'float64' });
        const handle = target.share();
        writeSlice(target, values, tensor([at], [1], { dtype: 'int32' }), axis);
        const want = Float64Array.from(before);
        const v = values.dataSync();
        const inner = shape.slice(a + 1).reduce((x, y) => x * y, 1);
        const outer = shape.slice(0, a).reduce((x, y) => x * y, 1);
        for (let o = 0; o < outer; o++)
          for (let s = 0; s < span; s++) for (let q = 0; q < inner; q++) want[(o * shape[a] + at + s) * inner + q] = v[(o * span + s) * inner + q];
        expect(Array.from(target.dataSync())).toEqual(Array.from(want));
        expect(Array.from(handle.dataSync())).toEqual(Array.from(want)); // every handle on the storage
      }
    }
  });
  it('writeSlice refuses what it cannot do', () => {
    const target = zeros([2, 4, 3]);
    const at = (n: number) => tensor([n], [1], { dtype: 'int32' });
    expect(() => writeSlice(target, zeros([2, 5, 3]), at(0), 1)).toThrow(
      'writeSlice: values must match target outside axis 1 and fit along it; expected [2, ≤ 4, 3], got [2, 5, 3]',
    );
    expect(() => writeSlice(target, zeros([2, 1, 2]), at(0), 1)).toThrow('writeSlice: values must match target outside axis 1');
    expect(() => writeSlice(target, zeros([2, 2, 3]), at(3), 1)).toThrow(
      'writeSlice: start puts the slice past the end of target; expected a start in 0..2, got 3',
    );
    expect(() => writeSlice(target, zeros([2, 2, 3]), at(-1), 1)).toThrow('writeSlice: start puts the slice past the end');
    expect(() => writeSlice(target, zeros([2, 2, 3]), tensor([1]), 1)).toThrow('writeSlice: start must hold an int32 index; expected int32, got float32');
    expect(() => writeSlice(target, zeros([2, 2, 3]), tensor([1, 2], [2], { dtype: 'int32' }), 1)).toThrow('writeSlice: start must have one element');
    expect(() => writeSlice(target, zeros([2, 2, 3], { dtype: 'float64' }), at(0), 1)).toThrow('writeSlice');
    expect(() => writeSlice(target, target.share(), at(0), 1)).toThrow('writeSlice: target and values must not share storage');
    const param = zeros([2, 4, 3], { requiresGrad: true });
    expect(() => writeSlice(param, zeros([2, 1, 3]), at(0), 1)).toThrow('writeSlice: a tensor requires grad and gradients are being recorded');
    noGrad(() => writeSlice(param, zeros([2, 1, 3]), at(0), 1));
  });
  it('write overwrites every value in place, in any dtype', () => {
    const t = tensor([1, 2, 3, 4], [2, 2]);
    const handle = t.share();
    t.write([5, 6.5, -7, 8]);
    expect(Array.from(handle.dataSync())).toEqual([5, 6.5, -7, 8]);
    const half = tensor([1, 2], [2], { dtype: 'float16' });
    half.write(Float32Array.from([0.5, -3]));
    expect(Array.from(half.dataSync())).toEqual([0.5, -3]);
    const flags = tensor([1, 0, 1], [3], { dtype: 'bool' });
    flags.write([0, 1, 1]);
    expect(Array.from(flags.dataSync())).toEqual([0, 1, 1]);
    const ints = tensor([1, 2], [2], { dtype: 'int32' });
    ints.write(Int32Array.from([-4, 9]));
    expect(Array.from(ints.dataSync())).toEqual([-4, 9]);
    expect(() => t.write([1, 2, 3])).toThrow('write: values must fill the tensor; expected 4 values for [2, 2], got 3');
    expect(() => t.write('abcd' as unknown as number[])).toThrow('write: values must be an array or typed array of numbers');
    const param = zeros([2], { requiresGrad: true });
    expect(() => param.write([1, 2])).toThrow('write: the tensor requires grad and gradients are being recorded');
    t.dispose();
    expect(() => handle.write([1, 2, 3, 4])).not.toThrow();
    handle.dispose();
    expect(() => handle.write([1, 2, 3, 4])).toThrow('write');
  });
  it('cast truncates toward zero and round-trips float16', () => {
    expect(cast(tensor([-1.7, 2.9]), 'int32').toArraySync()).toEqual([-1, 2]);
    expect(cast(tensor([0, 2]), 'bool').toArraySync()).toEqual([false, true]);
    const h = cast(tensor([1 / 3, 65504, 1e-8]), 'float16');
    expect(h.dtype).toBe('float16');
    assertClose(h.dataSync(), [0.333251953125, 65504, 0], { rtol: 0, atol: 0 });
  });
});
