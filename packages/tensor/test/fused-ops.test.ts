import { describe, expect, it } from 'vitest';
import {
  adamSchedule,
  adamUpdate,
  adamUpdateInPlace,
  add,
  concat,
  div,
  gatedActivation,
  gelu,
  linearCrossEntropy,
  logSoftmax,
  maskedSoftmax,
  matmul,
  mean,
  mul,
  neg,
  rmsNorm,
  addRmsNorm,
  rope,
  writeKV,
  writeSlice,
  zeros,
  silu,
  slice,
  softmax,
  softmaxCrossEntropy,
  sqrt,
  sum,
  transpose,
  type Tensor,
  tensor,
  noGrad,
  decodeAttention,
  attention,
  reshape,
} from '../src/index';
import { assertClose, gradCheck, randomTensor, randomValues, TOLERANCES } from '../src/testing';

/** Adam written out in float64 for one element, step by step (PyTorch's Adam/AdamW). */
function adamReference(p: number, grads: number[], o: { lr: number; b1: number; b2: number; eps: number; wd: number; decoupled: boolean }) {
  let m = 0;
  let v = 0;
  grads.forEach((g0, i) => {
    const step = i + 1;
    const g = o.decoupled ? g0 : g0 + o.wd * p;
    if (o.decoupled) p *= 1 - o.lr * o.wd;
    m = o.b1 * m + (1 - o.b1) * g;
    v = o.b2 * v + (1 - o.b2) * g * g;
    p -= (o.lr * (m / (1 - o.b1 ** step))) / (Math.sqrt(v / (1 - o.b2 ** step)) + o.eps);
  });
  return { p, m, v };
}

describe('adamUpdate', () => {
  for (const decoupled of [false, true]) {
    it(`matches Adam written out in float64 over three steps (${decoupled ? 'AdamW' : 'Adam with L2'})`, () => {
      const n = 37;
      const o = { lr: 0.01, b1: 0.8, b2: 0.95, eps: 1e-6, wd: 0.1, decoupled };
      const p0 = randomValues(n, 3);
      const grads = [0, 1, 2].map((s) => randomValues(n, 10 + s));
      const opts = { dtype: 'float64' as const };
      let p = tensor(p0, [n], opts);
      let m = tensor(new Float64Array(n), [n], opts);
      let v = tensor(new Float64Array(n), [n], opts);
      grads.forEach((g, i) => {
        [p, m, v] = adamUpdate(p, tensor(g, [n], opts), m, v, { lr: o.lr, beta1: o.b1, beta2: o.b2, eps: o.eps, weightDecay: o.wd, decoupled, step: i + 1 });
      });
      const want = Array.from({ length: n }, (_, i) =>
        adamReference(
          p0[i],
          grads.map((g) => g[i]),
          o,
        ),
      );
      assertClose(
        p.dataSync(),
        Float64Array.from(want, (w) => w.p),
        TOLERANCES.float64,
        'param',
      );
      assertClose(
        m.dataSync(),
        Float64Array.from(want, (w) => w.m),
        TOLERANCES.float64,
        'm',
      );
      assertClose(
        v.dataSync(),
        Float64Array.from(want, (w) => w.v),
        TOLERANCES.float64,
        'v',
      );
    });
  }

  it('a hand-computed first step moves the parameter by lr against the gradient sign', () => {
    // Step 1 with no decay: m̂ = g, v̂ = g², so the step is lr·g/(|g| + eps).
    const [p] = adamUpdate(tensor([1, -2], [2]), tensor([0.5, -4], [2]), tensor([0, 0], [2]), tensor([0, 0], [2]), {
      lr: 0.1,
      beta1: 0.9,
      beta2: 0.999,
      eps: 0,
      step: 1,
    });
    assertClose(p.dataSync(), Float64Array.from([0.9, -1.9]), TOLERANCES.float32);
  });

  it('adamUpdateInPlace writes the same step into param, m and v (float32 and float16), and refuses aliasing or recording', () => {
    for (const dtype of ['float32', 'float16'] as const) {
      const opts = { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, decoupled: true, step: 4 };
      const make = (seed: number, positive = false) =>
        tensor(
          Float64Array.from({ length: 11 }, (_, i) => (positive ? 0.1 + ((i * seed) % 7) / 10 : Math.sin(i * seed + 1))),
          [11],
          { dtype },
        );
      const [p, g, m, v] = [make(3), make(5), make(7), make(9, true)];
      const want = adamUpdate(p, g, m, v, opts).map((t) => Array.from(t.dataSync()));
      const handle = p.share(); // every handle on the storage sees the update
      noGrad(() => adamUpdateInPlace(p, g, m, v, opts));
      expect([Array.from(p.dataSync()), Array.from(m.dataSync()), Array.from(v.dataSync())]).toEqual(want);
      expect(Array.from(handle.dataSync())).toEqual(want[0]);
    }
    const a = tensor([1, 2], [2]);
    const opts = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
    expect(() => adamUpdateInPlace(a, tensor([1, 2], [2]), a.share(), tensor([1, 1], [2]), opts)).toThrow(
      'adamUpdateInPlace: param, grad, m and v must not share storage; expected four distinct tensors, got two handles on one storage',
    );
    const leaf = tensor([1, 2], [2], { requiresGrad: true });
    expect(() => adamUpdateInPlace(leaf, tensor([1, 2], [2]), tensor([0, 0], [2]), tensor([0, 0], [2]), opts)).toThrow(
      /adamUpdateInPlace: param requires grad/,
    );
  });

  it('adamUpdateInPlace with a schedule takes lr, decay and corrections from that tensor, not from the options', () => {
    const vals = (seed: number, positive = false) =>
      Float64Array.from({ length: 17 }, (_, i) => (positive ? 0.1 + ((i * seed) % 7) / 10 : Math.sin(i * seed + 1)));
    for (const decoupled of [true, false]) {
      const base = { beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, decoupled };
      const stepped = { ...base, lr: 0.03, step: 7 };
      const [p, g, m, v] = [vals(3), vals(5), vals(7), vals(9, true)].map((x) => tensor(x, [17], { dtype: 'float32' }));
      const want = adamUpdate(p, g, m, v, stepped).map((t) => t.dataSync());
      const schedule = tensor(adamSchedule(stepped), [4], { dtype: 'float32' });
      // The options say another step: only the schedule counts.
      noGrad(() => adamUpdateInPlace(p, g, m, v, { ...base, lr: 0.5, step: 1 }, undefined, schedule));
      for (const [i, t] of [p, m, v].entries()) assertClose(t.dataSync(), want[i], TOLERANCES.float32, `${['param', 'm', 'v'][i]} decoupled=${decoupled}`);
    }
    const lr = 0.02;
    expect(Array.from(adamSchedule({ lr, beta1: 0.5, beta2: 0.75, eps: 0, weightDecay: 0.5, decoupled: true, step: 2 }))).toEqual([
      Math.fround(lr),
      Math.fround(1 - lr * 0.5),
      0.75,
      Math.fround(1 - 0.75 ** 2),
    ]);
    const f32 = () => tensor([1, 2], [2]);
    const opts = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
    expect(() => adamUpdateInPlace(f32(), f32(), f32(), f32(), opts, undefined, tensor([1, 2, 3], [3]))).toThrow(
      'adamUpdateInPlace: schedule holds [lr, decay, c1, c2]; expected [4], got [3]',
    );
    expect(() => adamUpdateInPlace(f32(), f32(), f32(), f32(), opts, undefined, tensor([1, 2, 3, 4], [4], { dtype: 'float16' }))).toThrow(
      'adamUpdateInPlace: schedule must be float32; expected float32, got float16',
    );
    const shared = tensor([1, 2, 3, 4], [4]);
    expect(() =>
      adamUpdateInPlace(shared, shared.share(), tensor([0, 0, 0, 0], [4]), tensor([1, 1, 1, 1], [4]), opts, undefined, tensor([1, 1, 1, 1], [4])),
    ).toThrow('adamUpdateInPlace: param, grad, m, v and schedule must not share storage; expected five distinct tensors, got two handles on one storage');
    expect(() => adamSchedule({ ...opts, step: 0 })).toThrow('adamSchedule: step is out of range; expected an integer ≥ 1, got 0');
  });

  it('adamUpdateInPlace with a copy: f32 master, moments and an f16 gradient; the step rounded into the half copy in place', () => {
    const opts = { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, decoupled: true, step: 3 };
    const vals = (seed: number, positive = false) =>
      Float64Array.from({ length: 13 }, (_, i) => (positive ? 0.1 + ((i * seed) % 7) / 10 : Math.sin(i * seed + 1)));
    const [p, m, v] = [vals(3), vals(7), vals(9, true)].map((x) => tensor(x, [13], { dtype: 'float32' }));
    const g16 = tensor(vals(5), [13], { dtype: 'float16' });
    const half = tensor(vals(3), [13], { dtype: 'float16' });
    const want = adamUpdate(p, g16.cast('float32'), m, v, opts).map((t) => Array.from(t.dataSync()));
    const handle = half.share();
    noGrad(() => adamUpdateInPlace(p, g16, m, v, opts, half));
    expect([Array.from(p.dataSync()), Array.from(m.dataSync()), Array.from(v.dataSync())]).toEqual(want);
    expect(Array.from(handle.dataSync())).toEqual(Array.from(tensor(want[0], [13], { dtype: 'float32' }).cast('float16').dataSync()));
    // An f32 gradient serves as well.
    const g32 = tensor(vals(5), [13], { dtype: 'float32' });
    noGrad(() => adamUpdateInPlace(p, g32, m, v, { ...opts, step: 4 }, half));
    expect(Array.from(half.dataSync())).toEqual(Array.from(p.cast('float16').dataSync()));
    const bad = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
    const f32 = () => tensor([1, 2], [2]);
    expect(() => adamUpdateInPlace(f32(), tensor([1, 2], [2], { dtype: 'float64' }), f32(), f32(), bad, tensor([1, 2], [2], { dtype: 'float16' }))).toThrow(
      "adamUpdateInPlace: grad must be in param's or copy's dtype; expected float32 or float16, got float64",
    );
    expect(() => adamUpdateInPlace(f32(), f32(), f32(), f32(), bad, tensor([1, 2], [2], { dtype: 'int32' }))).toThrow(/adamUpdateInPlace: copy/);
    expect(() => adamUpdateInPlace(f32(), f32(), f32(), f32(), bad, tensor([1, 2, 3], [3], { dtype: 'float16' }))).toThrow(
      'adamUpdateInPlace: copy differs in shape from param; expected [2], got [3]',
    );
    const shared = f32();
    expect(() => adamUpdateInPlace(shared, f32(), f32(), f32(), bad, shared.share())).toThrow(
      'adamUpdateInPlace: param, grad, m, v and copy must not share storage; expected five distinct tensors, got two handles on one storage',
    );
    const leaf = tensor([1, 2], [2], { dtype: 'float16', requiresGrad: true });
    expect(() => adamUpdateInPlace(f32(), f32(), f32(), f32(), bad, leaf)).toThrow(/adamUpdateInPlace: param requires grad/);
  });

  it('refuses mismatched shapes, dtypes and out-of-range hyperparameters', () => {
    const a = tensor([1, 2], [2]);
    const opts = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
    expect(() => adamUpdate(a, tensor([1, 2, 3], [3]), a, a, opts)).toThrow('adamUpdate: grad differs in shape from param; expected [2], got [3]');
    expect(() => adamUpdate(a, tensor([1, 2], [2], { dtype: 'float64' }), a, a, opts)).toThrow(/adamUpdate: grad has another dtype than param/);
    expect(() => adamUpdate(a, a, a, a, { ...opts, step: 0 })).toThrow('adamUpdate: step is out of range; expected an integer ≥ 1, got 0');
    expect(() => adamUpdate(a, a, a, a, { ...opts, beta1: 1 })).toThrow('adamUpdate: beta1 is out of range; expected a number in [0, 1), got 1');
    expect(() => adamUpdate(a, a, a, a, { ...opts, lr: Number.NaN })).toThrow('adamUpdate: lr is out of range; expected a finite number ≥ 0, got NaN');
    const ints = tensor([1, 2], [2], { dtype: 'int32' });
    expect(() => adamUpdate(ints, ints, ints, ints, opts)).toThrow(/adamUpdate: param must be floating point/);
  });
});

describe('softmaxCrossEntropy', () => {
  const N = 5;
  const V = 7;
  const targets = tensor(Int32Array.from([3, 0, 6, -100, 2]), [N], { dtype: 'int32' });
  const weights = tensor([1, 0.5, 2, 0, 1], [N], { dtype: 'float64' });

  it('equals −w·log softmax at the target, row by row, in float64', () => {
    const x = randomTensor([N, V], 5, { dtype: 'float64' });
    const got = softmaxCrossEntropy(x, targets, weights).dataSync();
    const want = sum(mul(mul(logSoftmax(x, -1), tensor(oneHot([3, 0, 6, -1, 2], V), [N, V], { dtype: 'float64' })), -1), -1);
    const w = weights.dataSync();
    assertClose(
      got,
      Float64Array.from(want.dataSync(), (v, i) => v * w[i]),
      TOLERANCES.float64,
    );
  });

  it('gradient in the logits matches central differences, ignored rows included', () => {
    const fn = (x: Tensor) => softmaxCrossEntropy(x, targets, weights);
    gradCheck(fn, [randomTensor([N, V], 9, { dtype: 'float64', requiresGrad: true })]);
  });

  it('a target outside the classes gives NaN where it counts and 0 where its weight is 0', () => {
    const x = randomTensor([2, 3], 2, { dtype: 'float64' });
    const got = softmaxCrossEntropy(x, tensor(Int32Array.from([3, -1]), [2], { dtype: 'int32' }), tensor([1, 0], [2], { dtype: 'float64' })).dataSync();
    expect(Number.isNaN(got[0])).toBe(true);
    expect(got[1]).toBe(0);
  });

  it('linearCrossEntropy in chunks of rows equals the whole product, value and gradients (a trained head too)', () => {
    const W = randomTensor([V, 4], 12, { dtype: 'float64' });
    const h = randomTensor([N, 4], 13, { dtype: 'float64' });
    const whole = softmaxCrossEntropy(matmul(h, W, { transposeB: true }), targets, weights).dataSync();
    for (const chunkRows of [1, 2, 5, 8]) assertClose(linearCrossEntropy(h, W, targets, weights, { chunkRows }).dataSync(), whole, TOLERANCES.float64);
    gradCheck((a) => linearCrossEntropy(a, W, targets, weights, { chunkRows: 2 }), [randomTensor([N, 4], 14, { dtype: 'float64' })]);
    gradCheck(
      (a, w) => linearCrossEntropy(a, w, targets, weights, { chunkRows: 2 }),
      [randomTensor([N, 4], 15, { dtype: 'float64' }), randomTensor([V, 4], 16, { dtype: 'float64' })],
    );
    expect(() => linearCrossEntropy(h, randomTensor([V, 3], 1, { dtype: 'float64' }), targets, weights)).toThrow(
      'linearCrossEntropy: weight must be [V, D]; expected [V, 4], got [7, 3]',
    );
    expect(() => linearCrossEntropy(h, W, targets, weights, { chunkRows: 0 })).toThrow(
      'linearCrossEntropy: chunkRows must be a positive integer; expected e.g. 256, got 0',
    );
    const trainedWeights = tensor([1, 1, 1, 1, 1], [N], { dtype: 'float64', requiresGrad: true });
    expect(() => linearCrossEntropy(h, W, targets, trainedWeights)).toThrow(
      'linearCrossEntropy: the row weights are constants; expected weights without requiresGrad, got weights requiring grad',
    );
  });

  it('refuses wrong ranks and dtypes', () => {
    const x = randomTensor([2, 3], 2);
    const w = tensor([1, 1], [2]);
    const t = tensor(Int32Array.from([0, 1]), [2], { dtype: 'int32' });
    expect(() => softmaxCrossEntropy(randomTensor([6], 1), t, w)).toThrow('softmaxCrossEntropy: logits must be [N, V]; expected rank 2, got [6]');
    expect(() => softmaxCrossEntropy(x, tensor([0, 1], [2]), w)).toThrow('softmaxCrossEntropy: targets must be int32 class ids; expected int32, got float32');
    expect(() => softmaxCrossEntropy(x, t, tensor([1, 1, 1], [3]))).toThrow('softmaxCrossEntropy: weights must be [N]; expected [2], got [3]');
    expect(() => softmaxCrossEntropy(x, t, tensor([1, 1], [2], { dtype: 'float64' }))).toThrow(
      'softmaxCrossEntropy: weights must have the dtype of logits; expected float32, got float64',
    );
  });
});

function oneHot(ids: number[], V: number): Float64Array {
  const out = new Float64Array(ids.length * V);
  ids.forEach((id, i) => {
    if (id >= 0) out[i * V + id] = 1;
  });
  return out;
}

describe('fused transformer-block ops against their compositions and central differences', () => {
  const f64 = { dtype: 'float64' as const };
  for (const offset of [false, true]) {
    it(`rmsNorm${offset ? ' (1 + weight)' : ''}: value, and gradients in x and weight`, () => {
      const x = randomTensor([2, 3, 13], 21, f64);
      const w = randomTensor([13], 22, f64);
      const composed = mul(div(x, sqrt(add(mean(mul(x, x), -1, true), 1e-5))), offset ? add(w, 1) : w);
      assertClose(rmsNorm(x, w, { eps: 1e-5, offset }).dataSync(), composed.dataSync(), TOLERANCES.float64);
      gradCheck((a, b) => rmsNorm(a, b, { eps: 1e-5, offset }), [randomTensor([5, 13], 23, f64), randomTensor([13], 24, f64)]);
    });
  }

  for (const offset of [false, true]) {
    it(`addRmsNorm${offset ? ' (1 + weight)' : ''}: the sum and its norm as add then rmsNorm; gradients through the composition`, () => {
      const x = randomTensor([2, 3, 13], 25, f64);
      const r = randomTensor([2, 3, 13], 26, f64);
      const w = randomTensor([13], 27, f64);
      const fused = noGrad(() => addRmsNorm(x, r, w, { eps: 1e-5, offset }));
      const sum = add(x, r);
      expect(fused.sum.shape).toEqual([2, 3, 13]);
      expect(fused.y.shape).toEqual([2, 3, 13]);
      assertClose(fused.sum.dataSync(), sum.dataSync(), TOLERANCES.float64);
      assertClose(fused.y.dataSync(), rmsNorm(sum, w, { eps: 1e-5, offset }).dataSync(), TOLERANCES.float64);
      // With gradients recorded it is differentiable in all three inputs, through both outputs.
      gradCheck(
        (a, b, c) => {
          const { sum: s, y } = addRmsNorm(a, b, c, { eps: 1e-5, offset });
          return add(mul(s, 0.3), y);
        },
        [randomTensor([4, 7], 28, f64), randomTensor([4, 7], 29, f64), randomTensor([7], 30, f64)],
      );
    });
  }
  it('addRmsNorm: refuses mismatched shapes and dtypes', () => {
    const x = randomTensor([3, 5], 1);
    expect(() => addRmsNorm(x, randomTensor([3, 4], 2), randomTensor([5], 3), { eps: 1e-5 })).toThrow(
      'addRmsNorm: residual must have the shape of x; expected [3, 5], got [3, 4]',
    );
    expect(() => addRmsNorm(x, randomTensor([3, 5], 2), randomTensor([4], 3), { eps: 1e-5 })).toThrow(
      "addRmsNorm: weight must match x's last axis; expected [5], got [4]",
    );
    expect(() => addRmsNorm(x, randomTensor([3, 5], 2, f64), randomTensor([5], 3), { eps: 1e-5 })).toThrow('addRmsNorm: ');
    expect(() => addRmsNorm(x, x, randomTensor([5], 3), { eps: Number.NaN })).toThrow('addRmsNorm: eps is out of range');
  });

  /** The rotate-half composition `applyRope` used before the fused op, over the first R features. */
  function ropeComposed(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
    const [B, H, T, Dh] = x.shape;
    const R = cos.shape[cos.rank - 1];
    const rot = slice(x, [0, 0, 0, 0], [B, H, T, R]);
    const x1 = slice(rot, [0, 0, 0, 0], [B, H, T, R / 2]);
    const x2 = slice(rot, [0, 0, 0, R / 2], [B, H, T, R]);
    const rotated = add(mul(rot, cos), mul(concat([neg(x2), x1], 3), sin));
    return R === Dh ? rotated : concat([rotated, slice(x, [0, 0, 0, R], [B, H, T, Dh])], 3);
  }
  for (const [label, tableShape, Dh] of [
    ['shared tables, every feature rotated', [5, 6], 6],
    ['per-sequence tables, partial rotary (R 4 of Dh 7)', [2, 1, 5, 4], 7],
  ] as const) {
    it(`rope, ${label}: value, inverse, and gradient in x`, () => {
      // Tables with unequal halves: the kernel must not assume cos[i] = cos[i + R/2].
      const cos = randomTensor([...tableShape], 31, f64);
      const sin = randomTensor([...tableShape], 32, f64);
      const x = randomTensor([2, 3, 5, Dh], 33, f64);
      assertClose(rope(x, cos, sin).dataSync(), ropeComposed(x, cos, sin).dataSync(), TOLERANCES.float64);
      gradCheck((a) => rope(a, cos, sin), [randomTensor([2, 3, 5, Dh], 34, f64)]);
      gradCheck((a) => rope(a, cos, sin, { inverse: true }), [randomTensor([2, 3, 5, Dh], 35, f64)]);
      // The projection's [B, T, H, Dh] in, [B, H, T, Dh] out: the same as transposing first.
      const bthd = randomTensor([2, 5, 3, Dh], 36, f64);
      const moved = rope(bthd, cos, sin, { layout: 'bthd' });
      expect(moved.shape).toEqual([2, 3, 5, Dh]);
      assertClose(moved.dataSync(), rope(transpose(bthd, [0, 2, 1, 3]), cos, sin).dataSync(), TOLERANCES.float64);
      gradCheck((a) => rope(a, cos, sin, { layout: 'bthd' }), [randomTensor([2, 5, 3, Dh], 37, f64)]);
    });
  }

  for (const act of ['silu', 'gelu_tanh'] as const) {
    it(`gatedActivation (${act}): value, and gradients in gate and up`, () => {
      const g = randomTensor([4, 9], 41, { ...f64, std: 3 });
      const u = randomTensor([4, 9], 42, f64);
      const composed = mul(act === 'silu' ? silu(g) : gelu(g, { approximate: 'tanh' }), u);
      assertClose(gatedActivation(g, u, act).dataSync(), composed.dataSync(), TOLERANCES.float64);
      gradCheck((a, b) => gatedActivation(a, b, act), [randomTensor([4, 9], 43, { ...f64, std: 3 }), randomTensor([4, 9], 44, f64)]);
    });
  }

  for (const [label, xShape, maskShape] of [
    ['a shared mask', [2, 3, 4, 5], [4, 5]],
    ['a mask per sequence', [2, 3, 4, 5], [2, 1, 4, 5]],
    ['rank-2 scores and their mask', [4, 5], [4, 5]],
    ['rank-3 scores with a mask per sequence', [2, 4, 5], [2, 4, 5]],
  ] as const) {
    it(`maskedSoftmax with ${label}: value and gradient`, () => {
      const mask = tensor(
        Float64Array.from({ length: (maskShape as readonly number[]).reduce((a, b) => a * b, 1) }, (_, i) =>
          i % 5 > (Math.floor(i / 5) % 4) + 1 ? -1e9 : 0.2 * (i % 3),
        ),
        [...maskShape],
        f64,
      );
      const x = randomTensor([...xShape], 51, f64);
      assertClose(maskedSoftmax(x, mask, 0.7).dataSync(), softmax(add(mul(x, 0.7), mask), -1).dataSync(), TOLERANCES.float64);
      gradCheck((a) => maskedSoftmax(a, mask, 0.7), [randomTensor([...xShape], 52, f64)]);
    });
  }

  it('refuse mismatched shapes and dtypes', () => {
    expect(() => maskedSoftmax(randomTensor([2, 4, 5], 1), randomTensor([4, 4], 2), 1)).toThrow(
      'maskedSoftmax: mask must be [T, S] or [B, 1, …, 1, T, S]; expected [4, 5] or [2, …, 4, 5], got [4, 4]',
    );
    const x = randomTensor([2, 4, 3, 6], 1);
    expect(() => rmsNorm(randomTensor([3, 5], 1), randomTensor([4], 2), { eps: 1e-5 })).toThrow(
      "rmsNorm: weight must match x's last axis; expected [5], got [4]",
    );
    expect(() => rmsNorm(randomTensor([3, 5], 1), randomTensor([5], 2), { eps: -1 })).toThrow('rmsNorm: eps is out of range');
    expect(() => rope(x, randomTensor([3, 5], 1), randomTensor([3, 5], 2))).toThrow(/rope: cos must be \[T, R\] or \[B, 1, T, R\] with R even/);
    expect(() => rope(x, randomTensor([3, 8], 1), randomTensor([3, 8], 2))).toThrow(/R ≤ 6, got \[3, 8\]/);
    expect(() => rope(x, randomTensor([3, 4], 1), randomTensor([3, 2], 2))).toThrow('rope: sin must have the shape of cos; expected [3, 4], got [3, 2]');
    expect(() => gatedActivation(randomTensor([2, 3], 1), randomTensor([3, 2], 2), 'silu')).toThrow(
      'gatedActivation: up must have the shape of gate; expected [2, 3], got [3, 2]',
    );
    expect(() => gatedActivation(randomTensor([2], 1), randomTensor([2], 2), 'relu' as 'silu')).toThrow(
      "gatedActivation: unknown activation; expected 'silu' or 'gelu_tanh', got relu",
    );
  });
});

describe('decodeAttention', () => {
  it('equals matmul, maskedSoftmax, matmul in float64: grouped rows, shared and per-sequence masks', () => {
    for (const [B, H, g, T, S, D, perSeq] of [
      [1, 3, 3, 1, 37, 8, false],
      [2, 2, 3, 2, 11, 5, true],
      [2, 1, 1, 3, 4, 3, false],
    ] as const) {
      const R = g * T;
      const q = randomTensor([B, H, R, D], 1, { dtype: 'float64' });
      const k = randomTensor([B, H, S, D], 2, { dtype: 'float64' });
      const v = randomTensor([B, H, S, D], 3, { dtype: 'float64' });
      const maskShape = perSeq ? [B, 1, 1, T, S] : [T, S];
      const mask = tensor(
        randomValues(
          maskShape.reduce((a, b) => a * b, 1),
          4,
        ).map((x, i) => (i % 5 === 3 ? -1e9 : x)),
        maskShape,
        { dtype: 'float64' },
      );
      const got = decodeAttention(q, k, v, mask, 0.41);
      // The composition: rows [B, H, g, T, S] so the mask broadcasts over heads and groups.
      const scores = reshape(matmul(q, k, { transposeB: true }), [B, H, g, T, S]);
      const probs = reshape(maskedSoftmax(scores, mask, 0.41), [B, H, R, S]);
      assertClose(got.dataSync(), matmul(probs, v).dataSync(), TOLERANCES.float64, `B ${B} T ${T} S ${S}`);
    }
  });
  it('refuses bad shapes and gradients', () => {
    const q = randomTensor([1, 2, 3, 4], 1);
    const k = randomTensor([1, 2, 5, 4], 2);
    const mask = randomTensor([1, 5], 3);
    expect(() => decodeAttention(q, k, k, mask, Number.NaN)).toThrow('decodeAttention: scale must be a finite number');
    expect(() => decodeAttention(q, randomTensor([1, 2, 5, 3], 2), k, mask, 1)).toThrow("decodeAttention: k must be [B, H, S, D] with q's B, H and D");
    expect(() => decodeAttention(q, k, randomTensor([1, 2, 4, 4], 2), mask, 1)).toThrow('decodeAttention: v must have the shape of k');
    expect(() => decodeAttention(q, k, k, randomTensor([2, 5], 3), 1)).toThrow('decodeAttention: mask must be [T, S] or [B, 1, 1, T, S] with T dividing');
    expect(() => decodeAttention(q, k, k, randomTensor([1, 4], 3), 1)).toThrow('decodeAttention: mask must be');
    const wanting = randomTensor([1, 2, 3, 4], 1, { requiresGrad: true });
    expect(() => decodeAttention(wanting, k, k, mask, 1)).toThrow('decodeAttention: the op has no gradient');
  });
});

describe('attention', () => {
  /** A random additive mask with some −1e9 entries (and, with `causal`, −1e9 past each position too). */
  const maskOf = (shape: number[], S: number, T: number, seed: number, causal: boolean) =>
    tensor(
      randomValues(
        shape.reduce((a, b) => a * b, 1),
        seed,
      ).map((x, i) => (i % 5 === 3 || (causal && i % S > (Math.floor(i / S) % T) + S - T) ? -1e9 : x)),
      shape,
      { dtype: 'float64' },
    );
  /** The composition attention stands for: matmul, maskedSoftmax, matmul over rows [B, H, g, T, S]. */
  const composed = (q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: number) => {
    const [B, H, R] = q.shape;
    const [T, S] = [mask.shape[mask.rank - 2], k.shape[2]];
    const scores = reshape(matmul(q, k, { transposeB: true }), [B, H, R / T, T, S]);
    return matmul(reshape(maskedSoftmax(scores, mask, scale), [B, H, R, S]), v);
  };
  const cases = [
    [1, 3, 3, 1, 37, 8, false],
    [2, 2, 3, 5, 5, 5, true],
    [2, 1, 1, 6, 9, 3, false],
    [1, 2, 2, 7, 7, 17, true],
  ] as const;
  it('equals the composition in float64: grouped rows, shared and per-sequence masks, causal or not', () => {
    for (const [B, H, g, T, S, D, perSeq] of cases)
      for (const causal of [false, true]) {
        const R = g * T;
        const q = randomTensor([B, H, R, D], 1, { dtype: 'float64' });
        const k = randomTensor([B, H, S, D], 2, { dtype: 'float64' });
        const v = randomTensor([B, H, S, D], 3, { dtype: 'float64' });
        // With causal, the mask masks the same keys, so the composition agrees.
        const mask = maskOf(perSeq ? [B, 1, 1, T, S] : [T, S], S, T, 4, causal);
        assertClose(
          attention(q, k, v, mask, 0.41, { causal }).dataSync(),
          composed(q, k, v, mask, 0.41).dataSync(),
          TOLERANCES.float64,
          `B ${B} T ${T} S ${S} causal ${causal}`,
        );
      }
  });
  it('causal leaves out the keys past each position whatever the mask says', () => {
    // Fewer keys than positions: the first rows see none (zeros).
    const few = attention(
      randomTensor([1, 1, 6, 3], 9, { dtype: 'float64' }),
      randomTensor([1, 1, 4, 3], 10, { dtype: 'float64' }),
      randomTensor([1, 1, 4, 3], 11, { dtype: 'float64' }),
      tensor(new Float64Array(24), [6, 4], { dtype: 'float64' }),
      1,
      { causal: true },
    ).dataSync();
    expect(Array.from(few.slice(0, 6))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(few.slice(6).every((x) => x !== 0)).toBe(true);
    const [T, S, D] = [4, 6, 3];
    const q = randomTensor([1, 1, 2 * T, D], 5, { dtype: 'float64' });
    const k = randomTensor([1, 1, S, D], 6, { dtype: 'float64' });
    const v = randomTensor([1, 1, S, D], 7, { dtype: 'float64' });
    const open = tensor(randomValues(T * S, 8), [T, S], { dtype: 'float64' });
    const closed = add(
      open,
      tensor(
        Array.from({ length: T * S }, (_, i) => (i % S > Math.floor(i / S) + S - T ? -1e30 : 0)),
        [T, S],
        { dtype: 'float64' },
      ),
    );
    assertClose(attention(q, k, v, open, 0.7, { causal: true }).dataSync(), composed(q, k, v, closed, 0.7).dataSync(), TOLERANCES.float64, 'causal');
  });
  it('gives zeros, and no gradient, to a row that sees no key', () => {
    const q = randomTensor([1, 1, 2, 3], 1, { dtype: 'float64', requiresGrad: true });
    const k = randomTensor([1, 1, 4, 3], 2, { dtype: 'float64', requiresGrad: true });
    const mask = tensor([-Infinity, -Infinity, -Infinity, -Infinity, 0.5, -1, 0, 2], [2, 4], { dtype: 'float64' });
    const y = attention(q, k, k, mask, 1);
    expect(Array.from(y.dataSync().slice(0, 3))).toEqual([0, 0, 0]);
    expect(
      y
        .dataSync()
        .slice(3)
        .every((x) => Number.isFinite(x) && x !== 0),
    ).toBe(true);
    sum(y).backward();
    expect(Array.from(q.grad!.dataSync().slice(0, 3))).toEqual([0, 0, 0]);
    expect(k.grad!.dataSync().every(Number.isFinite)).toBe(true);
  });
  it('has the gradients of its composition (central differences in float64)', () => {
    for (const [B, H, g, T, S, D, perSeq] of [cases[1], cases[3]])
      for (const causal of [false, true]) {
        const R = g * T;
        const q = randomTensor([B, H, R, D], 11, { dtype: 'float64', std: 0.7 });
        const k = randomTensor([B, H, S, D], 12, { dtype: 'float64', std: 0.7 });
        const v = randomTensor([B, H, S, D], 13, { dtype: 'float64' });
        const mask = maskOf(perSeq ? [B, 1, 1, T, S] : [T, S], S, T, 14, false);
        gradCheck((a, b, c) => attention(a, b, c, mask, 0.6, { causal }), [q, k, v]);
      }
  });
  it('refuses bad shapes, a mask that wants gradients and a non-boolean causal', () => {
    const q = randomTensor([1, 2, 3, 4], 1);
    const k = randomTensor([1, 2, 5, 4], 2);
    const mask = randomTensor([1, 5], 3);
    expect(() => attention(q, k, k, mask, Number.NaN)).toThrow('attention: scale must be a finite number');
    expect(() => attention(q, k, randomTensor([1, 2, 4, 4], 2), mask, 1)).toThrow('attention: v must have the shape of k');
    expect(() => attention(q, k, k, randomTensor([2, 5], 3), 1)).toThrow('attention: mask must be [T, S] or [B, 1, 1, T, S] with T dividing');
    expect(() => attention(q, k, k, randomTensor([1, 5], 3, { requiresGrad: true }), 1)).toThrow('attention: the mask is a constant');
    expect(() => attention(q, k, k, mask, 1, { causal: 1 as unknown as boolean })).toThrow(
      'attention: causal must be a boolean; expected true or false, got 1',
    );
    expect(() => attention(randomTensor([1, 2, 0, 4], 1), k, k, mask, 1)).toThrow('attention: q must have at least one row; expected R ≥ 1, got [1, 2, 0, 4]');
  });
});

describe('writeKV', () => {
  const f64 = { dtype: 'float64' as const };
  const at = (n: number) => tensor([n], [1], { dtype: 'int32' });
  for (const [label, tables, D] of [
    ['no rotary', null, 5],
    ['shared tables, every feature rotated', [3, 6], 6],
    ['per-sequence tables, partial rotary (R 4 of D 7)', [2, 1, 3, 4], 7],
  ] as const)
    it(`writes what rope, transpose and two writeSlices write (${label})`, () => {
      // B 2, T 3, H 3 KV heads, S 8 slots, from two starts (the first and the last that fit).
      const [B, T, H, S] = [2, 3, 3, 8];
      const k = randomTensor([B, T, H, D], 41, f64);
      const v = randomTensor([B, T, H, D], 42, f64);
      const rotary = tables ? { cos: randomTensor([...tables], 43, f64), sin: randomTensor([...tables], 44, f64) } : undefined;
      for (const start of [0, S - T]) {
        const keys = randomTensor([B, H, S, D], 45, f64);
        const values = randomTensor([B, H, S, D], 46, f64);
        const [wantK, wantV] = [keys, values].map((t) => tensor(t.dataSync(), t.shape, f64));
        noGrad(() => {
          const rotated = rotary ? rope(k, rotary.cos, rotary.sin, { layout: 'bthd' }) : transpose(k, [0, 2, 1, 3]);
          writeSlice(wantK, rotated, at(start), 2);
          writeSlice(wantV, transpose(v, [0, 2, 1, 3]), at(start), 2);
          writeKV(keys, values, k, v, at(start), rotary);
        });
        assertClose(keys.dataSync(), wantK.dataSync(), TOLERANCES.float64, `keys from ${start}`);
        expect(Array.from(values.dataSync())).toEqual(Array.from(wantV.dataSync()));
      }
    });
  it('refuses what it cannot do, with the op named', () => {
    const cache = () => zeros([1, 2, 4, 6]);
    const k = randomTensor([1, 2, 2, 6], 1);
    const tables = { cos: randomTensor([2, 6], 2), sin: randomTensor([2, 6], 3) };
    expect(() => writeKV(cache(), cache(), k, k, at(3), tables)).toThrow(
      'writeKV: start puts the slots past the end of the cache; expected a start in 0..2, got 3',
    );
    expect(() => writeKV(cache(), cache(), k, k, at(-1))).toThrow('writeKV: start puts the slots past the end');
    expect(() => writeKV(cache(), zeros([1, 2, 5, 6]), k, k, at(0))).toThrow(
      'writeKV: values must have the shape of keys; expected [1, 2, 4, 6], got [1, 2, 5, 6]',
    );
    expect(() => writeKV(cache(), cache(), randomTensor([1, 2, 3, 6], 4), k, at(0))).toThrow(
      "writeKV: k must be [B, T, H, D] with the cache's B, H and D and T ≤ S; expected [1, ≤ 4, 2, 6], got [1, 2, 3, 6]",
    );
    expect(() => writeKV(cache(), cache(), k, randomTensor([1, 1, 2, 6], 5), at(0))).toThrow('writeKV: v must have the shape of k');
    expect(() => writeKV(cache(), cache(), k, k, tensor([0]))).toThrow('writeKV: start must hold an int32 index; expected int32, got float32');
    expect(() => writeKV(cache(), cache(), k, k, at(0), { cos: randomTensor([2, 5], 2), sin: randomTensor([2, 5], 3) })).toThrow(
      'writeKV: cos must be [T, R] or [B, 1, T, R] with R even and at most D',
    );
    expect(() => writeKV(cache(), cache(), k, k, at(0), { cos: tables.cos, sin: randomTensor([2, 4], 3) })).toThrow('writeKV: sin must have the shape of cos');
    expect(() => writeKV(cache(), cache(), k, randomTensor([1, 2, 2, 6], 6, f64), at(0))).toThrow('writeKV: ');
    const shared = cache();
    expect(() => writeKV(shared, shared.share(), k, k, at(0))).toThrow('writeKV: the cache must not share storage');
    const wanting = randomTensor([1, 2, 2, 6], 7, { requiresGrad: true });
    expect(() => writeKV(cache(), cache(), wanting, k, at(0))).toThrow('writeKV: a tensor requires grad and gradients are being recorded');
  });
});
