import { describe, expect, it } from 'vitest';
import {
  abs,
  add,
  broadcastTo,
  cast,
  concat,
  div,
  erf,
  exp,
  gather,
  gelu,
  log,
  logSoftmax,
  loraLinear,
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
  sub,
  sum,
  type Tensor,
  tanh,
  tensor,
  transpose,
  where,
} from '../src/index';
import { gradCheck, randomTensor } from '../src/testing';

/** Float64 inputs for finite differences, away from kinks (relu/abs at 0, max ties). */
const f64 = (shape: number[], seed: number, shift = 0) => {
  const t = randomTensor(shape, seed, { dtype: 'float64' });
  return shift ? add(t, shift) : t;
};
const positive = (shape: number[], seed: number) => add(abs(f64(shape, seed)), 0.5);

type Case = [name: string, fn: (...xs: Tensor[]) => Tensor, inputs: () => Tensor[]];

const unaryCases: Case[] = [
  ['neg', neg, () => [f64([3, 4], 1)]],
  ['exp', exp, () => [f64([3, 4], 2)]],
  ['log', log, () => [positive([3, 4], 3)]],
  ['sqrt', sqrt, () => [positive([5], 4)]],
  ['tanh', tanh, () => [f64([2, 3, 2], 5)]],
  ['sigmoid', sigmoid, () => [f64([7], 6)]],
  ['silu', silu, () => [f64([7], 7)]],
  ['relu', relu, () => [f64([9], 8)]],
  ['erf', erf, () => [f64([6], 9)]],
  ['abs', abs, () => [f64([6], 10)]],
  ['gelu', (x) => gelu(x), () => [f64([8], 11)]],
  ['gelu tanh', (x) => gelu(x, { approximate: 'tanh' }), () => [f64([8], 12)]],
  ['cast f64→f64 identity path', (x) => cast(x, 'float64'), () => [f64([3], 13)]],
];

const binaryCases: Case[] = [
  ['add (broadcast row)', add, () => [f64([3, 4], 20), f64([4], 21)]],
  ['sub (broadcast column)', sub, () => [f64([3, 1], 22), f64([3, 4], 23)]],
  ['mul (rank-3 broadcast both ways)', mul, () => [f64([2, 1, 3], 24), f64([4, 1], 25)]],
  ['div', div, () => [f64([3, 4], 26), positive([3, 4], 27)]],
  ['pow (both operands)', pow, () => [positive([2, 3], 28), f64([3], 29)]],
  ['maximum', maximum, () => [f64([4, 3], 30), f64([4, 3], 31)]],
  ['matmul', (a, b) => matmul(a, b), () => [f64([3, 5], 32), f64([5, 2], 33)]],
  ['matmul aᵀ', (a, b) => matmul(a, b, { transposeA: true }), () => [f64([5, 3], 34), f64([5, 2], 35)]],
  ['matmul bᵀ', (a, b) => matmul(a, b, { transposeB: true }), () => [f64([3, 5], 36), f64([2, 5], 37)]],
  ['matmul aᵀbᵀ', (a, b) => matmul(a, b, { transposeA: true, transposeB: true }), () => [f64([5, 3], 38), f64([2, 5], 39)]],
  ['matmul batched with broadcast batch', (a, b) => matmul(a, b), () => [f64([2, 3, 4], 40), f64([4, 2], 41)]],
  ['matmul batch broadcast on a', (a, b) => matmul(a, b, { transposeB: true }), () => [f64([1, 3, 4], 42), f64([2, 2, 4], 43)]],
];

const reduceCases: Case[] = [
  ['sum all', (x) => sum(x), () => [f64([3, 4], 50)]],
  ['sum axes [0, 2] keepDims', (x) => sum(x, [0, 2], true), () => [f64([2, 3, 4], 51)]],
  ['mean axis -1', (x) => mean(x, -1), () => [f64([3, 5], 52)]],
  ['max axis 1', (x) => max(x, 1), () => [f64([3, 5], 53)]],
  ['max all', (x) => max(x), () => [f64([2, 3], 54)]],
  ['softmax last axis', (x) => softmax(x), () => [f64([3, 5], 55)]],
  ['softmax axis 0', (x) => softmax(x, 0), () => [f64([3, 5], 56)]],
  ['logSoftmax', (x) => logSoftmax(x), () => [f64([2, 3, 4], 57)]],
];

const layoutCases: Case[] = [
  ['reshape', (x) => reshape(x, [4, 3]), () => [f64([2, 6], 60)]],
  ['transpose rank 3', (x) => transpose(x, [1, 2, 0]), () => [f64([2, 3, 4], 61)]],
  ['slice', (x) => slice(x, [1, 0], [3, -1]), () => [f64([4, 5], 62)]],
  [
    'pad',
    (x) =>
      pad(
        x,
        [
          [1, 2],
          [0, 1],
        ],
        0.5,
      ),
    () => [f64([2, 3], 63)],
  ],
  ['concat axis 1', (a, b) => concat([a, b], 1), () => [f64([2, 3], 64), f64([2, 2], 65)]],
  ['broadcastTo', (x) => broadcastTo(x, [3, 2, 4]), () => [f64([2, 1], 66)]],
  ['where', (a, b) => where(tensor([[1, 0, 1]], undefined, { dtype: 'bool' }), a, b), () => [f64([2, 3], 67), f64([3], 68)]],
  [
    'gather (repeated ids)',
    (t) =>
      gather(
        t,
        tensor(
          [
            [0, 2],
            [2, 1],
          ],
          undefined,
          { dtype: 'int32' },
        ),
      ),
    () => [f64([3, 4], 69)],
  ],
  ['gather axis 1', (t) => gather(t, tensor([3, 0, 3], undefined, { dtype: 'int32' }), 1), () => [f64([2, 4], 70)]],
  ['scatterAdd updates', (u) => scatterAdd(tensor([1, 1, 0], undefined, { dtype: 'int32' }), u, [3, 2]), () => [f64([3, 2], 71)]],
];

const loraCases: Case[] = [
  ['loraLinear', (x, w, a, b) => loraLinear(x, w, a, b, { scale: 2.5 }), () => [f64([3, 5], 80), f64([4, 5], 81), f64([2, 5], 82), f64([4, 2], 83)]],
  [
    'loraLinear with bias, rank 1, 3-D x',
    (x, w, a, b, bias) => loraLinear(x, w, a, b, { scale: 0.5, bias }),
    () => [f64([2, 3, 5], 84), f64([4, 5], 85), f64([1, 5], 86), f64([4, 1], 87), f64([4], 88)],
  ],
  [
    'loraLinear with dropout',
    (x, w, a, b) => loraLinear(x, w, a, b, { scale: 1.5, dropout: 0.4, seed: 1234 }),
    () => [f64([4, 6], 89), f64([3, 6], 90), f64([2, 6], 91), f64([3, 2], 92)],
  ],
];

describe.each([
  ['unary', unaryCases],
  ['binary', binaryCases],
  ['reductions', reduceCases],
  ['layout and indexing', layoutCases],
  ['lora', loraCases],
])('finite-difference gradients (float64): %s', (_group, cases) => {
  it.each(cases)('%s', (_name, fn, make) => {
    const results = gradCheck(fn, make());
    expect(results.length).toBeGreaterThan(0);
    for (const r of results) expect(r.ok).toBe(true);
  });
});
