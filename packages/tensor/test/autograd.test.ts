import { describe, expect, it } from 'vitest';
import {
  checkpoint,
  cpuBackend,
  exp,
  grad,
  loraLinear,
  manualSeed,
  matmul,
  mul,
  noGrad,
  randn,
  softmax,
  StateError,
  sum,
  tanh,
  tensor,
  tidy,
  valueAndGrad,
  type Tensor,
} from '../src/index';
import { assertClose, gradCheck } from '../src/testing';

describe('backward (PyTorch style)', () => {
  it('fills .grad on leaves and accumulates across calls', () => {
    const x = tensor([1, 2, 3], undefined, { requiresGrad: true });
    sum(mul(x, x)).backward();
    expect(x.grad!.toArraySync()).toEqual([2, 4, 6]);
    sum(mul(x, 3)).backward();
    expect(x.grad!.toArraySync()).toEqual([5, 7, 9]);
  });
  it('handles a tensor used twice (diamond) and leaves without grad', () => {
    const x = tensor([2], undefined, { requiresGrad: true });
    const c = tensor([5]);
    const y = mul(exp(x), exp(x));
    sum(mul(y, c)).backward();
    expect(x.grad!.itemSync()).toBeCloseTo(2 * 5 * Math.exp(4), 2);
    expect(c.grad).toBeNull();
  });
  it('accepts an explicit output gradient of the output shape', () => {
    const x = tensor(
      [
        [1, 2],
        [3, 4],
      ],
      undefined,
      { requiresGrad: true },
    );
    const y = mul(x, 2);
    y.backward(
      tensor([
        [1, 0],
        [0, 1],
      ]),
    );
    expect(x.grad!.toArraySync()).toEqual([
      [2, 0],
      [0, 2],
    ]);
  });
  it('releases the graph: a second backward throws unless retainGraph', () => {
    const x = tensor([1, 2], undefined, { requiresGrad: true });
    const y = sum(exp(x));
    y.backward(undefined, { retainGraph: true });
    y.backward();
    expect(x.grad!.dataSync()[0]).toBeCloseTo(2 * Math.E, 5);
    expect(() => y.backward()).toThrow(StateError);
  });
  it('refuses a backward through a tensor whose graph was released, and retains it when asked', () => {
    const x = tensor([1, 2], undefined, { requiresGrad: true });
    const h = mul(x, 3);
    sum(h).backward();
    expect(x.grad!.toArraySync()).toEqual([3, 3]);
    // The second graph reaches x only through h, released by the first backward.
    expect(() => sum(mul(h, h)).backward()).toThrow(StateError);
    expect(() => sum(mul(h, h)).backward()).toThrow(
      /backward: the graph of this tensor \(or of a tensor it was computed from\) was released by an earlier backward/,
    );
    expect(x.grad!.toArraySync()).toEqual([3, 3]); // nothing half-accumulated
    const x2 = tensor([1, 2], undefined, { requiresGrad: true });
    const h2 = mul(x2, 3);
    sum(h2).backward(undefined, { retainGraph: true });
    sum(mul(h2, h2)).backward();
    expect(x2.grad!.toArraySync()).toEqual([3 + 2 * 9 * 1, 3 + 2 * 9 * 2]); // [21, 39], as PyTorch
  });
  it('frees saved tensors when the graph is released', () => {
    const before = cpuBackend.memory().liveBuffers;
    const x = tensor(new Float32Array(64).fill(0.5), [8, 8], { requiresGrad: true });
    const w = tensor(new Float32Array(64).fill(0.25), [8, 8]);
    const loss = sum(exp(matmul(x, w)));
    loss.backward();
    loss.dispose();
    x.grad!.dispose();
    x.dispose();
    w.dispose();
    expect(cpuBackend.memory().liveBuffers - before).toBeLessThanOrEqual(2); // exp's and matmul's outputs, held only by the user
  });
  it('a non-scalar output needs an explicit gradient', () => {
    const x = tensor([1, 2], undefined, { requiresGrad: true });
    expect(() => mul(x, 2).backward()).toThrow(/implicit gradient needs a one-element output/);
  });
  it('integer tensors cannot require grad', () => {
    expect(() => tensor([1], undefined, { dtype: 'int32', requiresGrad: true })).toThrow(/only floating-point tensors can require grad/);
  });
});

describe('noGrad and detach', () => {
  it('noGrad records nothing', () => {
    const x = tensor([1], undefined, { requiresGrad: true });
    const y = noGrad(() => mul(x, 2));
    expect(y.requiresGrad).toBe(false);
    expect(y.node).toBeNull();
  });
  it('detach cuts the graph but shares data', () => {
    const x = tensor([3], undefined, { requiresGrad: true });
    const d = mul(x, 2).detach();
    expect(d.requiresGrad).toBe(false);
    expect(d.itemSync()).toBe(6);
  });
});

describe('valueAndGrad (MLX style) and grad', () => {
  it('returns value and gradient without touching .grad', () => {
    const w = tensor([1, 2, 3]);
    const [value, dw] = valueAndGrad((t: Tensor) => sum(mul(t, t)))(w);
    expect(value.itemSync()).toBe(14);
    expect(dw.toArraySync()).toEqual([2, 4, 6]);
    expect(w.grad).toBeNull();
  });
  it('differentiates several arguments and trees of tensors', () => {
    const f = (params: { a: Tensor; b: Tensor[] }, x: Tensor) => sum(mul(mul(params.a, params.b[0]), x));
    const params = { a: tensor([2]), b: [tensor([3])] };
    const [value, grads] = valueAndGrad(f, [0, 1])(params, tensor([5]));
    expect(value.itemSync()).toBe(30);
    const [gp, gx] = grads;
    expect(gp.a.itemSync()).toBe(15);
    expect(gp.b[0].itemSync()).toBe(10);
    expect(gx.itemSync()).toBe(6);
  });
  it('grad gives zeros for inputs that do not influence the output', () => {
    const a = tensor([1], undefined, { requiresGrad: true });
    const b = tensor([1, 1], undefined, { requiresGrad: true });
    const [ga, gb] = grad(sum(mul(a, 4)), [a, b]);
    expect(ga.itemSync()).toBe(4);
    expect(gb.toArraySync()).toEqual([0, 0]);
  });
});

describe('memory: dispose, tidy, keep', () => {
  it('tidy disposes intermediates and keeps the result', () => {
    const before = cpuBackend.memory().liveBuffers;
    const x = tensor([1, 2, 3]);
    const y = tidy(() => sum(exp(mul(x, 2))));
    expect(cpuBackend.memory().liveBuffers - before).toBe(2); // x and y
    expect(y.itemSync()).toBeCloseTo(Math.exp(2) + Math.exp(4) + Math.exp(6), 3);
  });
  it('tidy keeps returned structures and tensors passed to keep', () => {
    const out = tidy(() => ({ a: tensor([1]), list: [tensor([2])] }));
    expect(out.a.isDisposed).toBe(false);
    expect(out.list[0].isDisposed).toBe(false);
  });
  it('a disposed tensor refuses use with a clear error; dispose twice is safe', () => {
    const x = tensor([1]);
    x.dispose();
    x.dispose();
    expect(() => mul(x, 2)).toThrow(/was disposed/);
  });
  it('reshape shares storage: disposing one handle keeps the other', () => {
    const x = tensor([1, 2, 3, 4]);
    const r = x.reshape([2, 2]);
    x.dispose();
    expect(r.toArraySync()).toEqual([
      [1, 2],
      [3, 4],
    ]);
  });
  it('tidy disposes everything when the function throws', () => {
    const before = cpuBackend.memory().liveBuffers;
    expect(() =>
      tidy(() => {
        tensor([1, 2]);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(cpuBackend.memory().liveBuffers).toBe(before);
  });
});

describe('checkpoint: recompute in backward', () => {
  it('gives the gradients of the plain graph for x and the parameters, and keeps only x between the passes', () => {
    const x0 = randn([3, 5], { seed: 1 });
    const w = randn([2, 5], { seed: 2 }); // LoRA A
    w.requiresGrad = true;
    const b = randn([4, 2], { seed: 4 }); // LoRA B, not watched: no gradient asked for
    const frozen = randn([4, 5], { seed: 3 });
    // A random op inside: the recomputation must draw the same dropout mask.
    const fn = (x: Tensor) => tanh(loraLinear(x, frozen, w, b, { scale: 2, dropout: 0.3 }));
    const run = (wrap: boolean) =>
      tidy(() => {
        manualSeed(9);
        const x = x0.detach();
        x.requiresGrad = true;
        const y = wrap ? checkpoint(fn, x, [w, frozen]) : fn(x);
        const loss = sum(mul(y, y));
        const [dx, dw] = grad(loss, [x, w]);
        return [loss.dataSync()[0], Array.from(dx.dataSync()), Array.from(dw.dataSync())] as const;
      });
    const plain = run(false);
    const wrapped = run(true);
    expect(wrapped[0]).toBe(plain[0]);
    assertClose(Float64Array.from(wrapped[1]), Float64Array.from(plain[1]), { atol: 1e-6, rtol: 1e-6 }, 'dx');
    assertClose(Float64Array.from(wrapped[2]), Float64Array.from(plain[2]), { atol: 1e-6, rtol: 1e-6 }, 'dw');
    // Under noGrad it is fn(x), with nothing recorded.
    const y = noGrad(() => checkpoint(fn, x0, [w]));
    expect(y.requiresGrad).toBe(false);
    expect(() => checkpoint(fn, 3 as unknown as Tensor, [])).toThrow('checkpoint: x must be a Tensor');
  });
  it('takes several inputs: the gradient of each, null for one that needs none, by central differences', () => {
    const f64 = { dtype: 'float64' as const };
    // Attention's core over q, k, v: the probabilities are what the checkpoint does not keep.
    const core = (q: Tensor, k: Tensor, v: Tensor) => matmul(softmax(mul(matmul(q, k, { transposeB: true }), 0.4), -1), v);
    gradCheck(
      (q, k, v) => checkpoint(core, [q, k, v], []),
      [randn([2, 3, 4], { seed: 5, ...f64 }), randn([2, 5, 4], { seed: 6, ...f64 }), randn([2, 5, 3], { seed: 7, ...f64 })],
    );
    const q = randn([2, 3, 4], { seed: 5, ...f64 });
    q.requiresGrad = true;
    const [k, v] = [randn([2, 5, 4], { seed: 6, ...f64 }), randn([2, 5, 3], { seed: 7, ...f64 })];
    // Only q requires grad: its gradient matches the plain graph's.
    const [dq] = grad(sum(checkpoint(core, [q, k, v], [])), [q]);
    assertClose(dq.dataSync(), grad(sum(core(q, k, v)), [q])[0].dataSync(), { atol: 1e-12, rtol: 1e-12 }, 'dq');
    expect(() => checkpoint(core, [], [])).toThrow('checkpoint: x must be a Tensor (or a non-empty list of them)');
  });
});
