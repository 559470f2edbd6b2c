import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import { DEFAULT_GEMM_DEVICE, loraPlan, type WebGPUBackend } from '../src/index';
import { fixedSubgroupSize, selectLoraBackward, selectLoraForward, sgmatConfig, subgroupFlushFits } from '../src/internal';
import { gpuIt, withDispatchLabels } from '../../../test-support/gpu';

const tol = TOLERANCES.float32Gemm;

interface Case {
  M: number;
  inF: number;
  outF: number;
  r: number;
  bias: boolean;
  dropout: number;
  xGrad: boolean;
}

/** Forward and every gradient of loraLinear on the GPU against the float64 CPU reference. */
async function check(backend: WebGPUBackend, c: Case): Promise<void> {
  const shapes = { x: [c.M, c.inF], w: [c.outF, c.inF], a: [c.r, c.inF], b: [c.outF, c.r], bias: [c.outF], dy: [c.M, c.outF] };
  const data = Object.fromEntries(
    Object.entries(shapes).map(([k, s], i) => [
      k,
      randomValues(
        s.reduce((p, q) => p * q, 1),
        50 + i,
      ),
    ]),
  );
  const run = (bk: T.Backend, dtype: 'float32' | 'float64') => {
    const t = (k: keyof typeof shapes) => T.tensor(data[k], shapes[k], { dtype, backend: bk });
    const x = t('x');
    const leaves = { w: t('w'), a: t('a'), b: t('b'), ...(c.bias ? { bias: t('bias') } : {}) } as Record<string, Tensor>;
    const f = (p: Record<string, Tensor>, xs: Tensor) =>
      T.sum(T.mul(T.loraLinear(xs, p.w, p.a, p.b, { scale: 1.75, bias: p.bias, dropout: c.dropout, seed: 4242 }), t('dy')));
    const y = T.noGrad(() => T.loraLinear(x, leaves.w, leaves.a, leaves.b, { scale: 1.75, bias: leaves.bias, dropout: c.dropout, seed: 4242 }));
    const [, grads] = c.xGrad ? T.valueAndGrad(f, [0, 1])(leaves, x) : T.valueAndGrad(f, [0])(leaves, x);
    return { y, grads: grads as [Record<string, Tensor>, Tensor?] };
  };
  const ref = run(cpuBackend, 'float64');
  const got = run(backend, 'float32');
  const label = JSON.stringify(c);
  const near = async (g: Tensor, r: Tensor, what: string) => {
    const expected = r.dataSync();
    assertClose(await g.data(), expected, scaledTolerance(tol, expected), `${what} ${label}`);
  };
  await near(got.y, ref.y, 'y');
  for (const k of Object.keys(ref.grads[0])) await near(got.grads[0][k], ref.grads[0][k], `d${k}`);
  if (c.xGrad) await near(got.grads[1]!, ref.grads[1]!, 'dx');
  expect(got.grads[0].w.shape).toEqual(shapes.w);
}

describe('webgpu loraLinear forward and backward against the float64 reference', () => {
  const cases: Case[] = [];
  for (const M of [1, 3, 64]) for (const r of [1, 8, 64]) cases.push({ M, inF: 37, outF: 29, r, bias: r !== 8, dropout: M === 3 ? 0.25 : 0, xGrad: r !== 64 });
  cases.push({ M: 257, inF: 45, outF: 131, r: 16, bias: true, dropout: 0.1, xGrad: true });
  // Fused plan (f32, in/out/rank divisible by 4, M > 16): the LoRA term enters the vec4 GEMM.
  cases.push({ M: 64, inF: 36, outF: 132, r: 8, bias: true, dropout: 0, xGrad: true });
  cases.push({ M: 257, inF: 68, outF: 44, r: 4, bias: false, dropout: 0.2, xGrad: true });
  cases.push({ M: 130, inF: 256, outF: 132, r: 64, bias: true, dropout: 0.05, xGrad: true });
  // The rest of the rank grid: 4, 32, 128, 256.
  cases.push({ M: 1, inF: 40, outF: 24, r: 4, bias: true, dropout: 0, xGrad: true });
  // Decode shapes on the fused plan: gemv-rows over W with the LoRA epilogue (odd rank too).
  cases.push({ M: 1, inF: 68, outF: 132, r: 8, bias: true, dropout: 0, xGrad: true });
  cases.push({ M: 3, inF: 128, outF: 100, r: 13, bias: false, dropout: 0.2, xGrad: true });
  cases.push({ M: 16, inF: 256, outF: 72, r: 64, bias: true, dropout: 0, xGrad: false });
  cases.push({ M: 64, inF: 68, outF: 36, r: 32, bias: false, dropout: 0.3, xGrad: true });
  cases.push({ M: 257, inF: 132, outF: 68, r: 128, bias: true, dropout: 0, xGrad: false });
  cases.push({ M: 3, inF: 37, outF: 29, r: 256, bias: true, dropout: 0.1, xGrad: true });
  // in = out with a K split on dA's shape: dA and dB as one pair of products.
  cases.push({ M: 300, inF: 260, outF: 260, r: 32, bias: true, dropout: 0.1, xGrad: true });
  cases.push({ M: 300, inF: 260, outF: 260, r: 64, bias: false, dropout: 0, xGrad: false });
  // A K split long enough that the pair takes half the selector's splits (8 → 4).
  cases.push({ M: 1100, inF: 260, outF: 260, r: 32, bias: false, dropout: 0.1, xGrad: true });
  for (const c of cases) gpuIt(`M=${c.M} r=${c.r} bias=${c.bias} dropout=${c.dropout} xGrad=${c.xGrad}`, (backend) => check(backend, c));

  it.each([
    [64, 36, 132, 8, 'float32', 'fused'],
    [257, 68, 44, 4, 'float32', 'fused'],
    [2048, 4096, 4096, 16, 'float32', 'fused'],
    [1, 4096, 4096, 16, 'float32', 'fused'],
    [16, 4096, 4096, 16, 'float32', 'fused'],
    [1, 4096, 4096, 13, 'float32', 'fused'],
    [1, 4095, 4096, 16, 'float32', 'composed'],
    [1, 40, 24, 4, 'float32', 'composed'],
    [64, 37, 132, 8, 'float32', 'composed'],
    [64, 36, 132, 6, 'float32', 'composed'],
    [64, 36, 132, 8, 'float16', 'fused'],
    [1, 4096, 4096, 16, 'float16', 'fused'],
    [64, 37, 132, 8, 'float16', 'composed'],
  ] as const)('loraPlan(M=%i, in=%i, out=%i, r=%i, %s) = %s', (M, inF, outF, r, dtype, plan) => {
    expect(loraPlan({ M, inF, outF, r, dtype }, DEFAULT_GEMM_DEVICE)).toBe(plan);
  });

  it('loraPlan composes where the subgroup-matrix GEMM takes the base product, and fuses where it does not', () => {
    const sgmat = sgmatConfig('f16', 16, 16, 16, 32, 4, 2, false);
    const device = { ...DEFAULT_GEMM_DEVICE, sgmat };
    expect(loraPlan({ M: 2048, inF: 576, outF: 576, r: 8, dtype: 'float16' }, device)).toBe('composed');
    expect(loraPlan({ M: 2048, inF: 576, outF: 576, r: 8, dtype: 'float16' }, DEFAULT_GEMM_DEVICE)).toBe('fused');
    // Decode shapes and narrow outputs stay on the portable kernels, fused.
    expect(loraPlan({ M: 8, inF: 576, outF: 576, r: 8, dtype: 'float16' }, device)).toBe('fused');
    expect(loraPlan({ M: 2048, inF: 576, outF: 64, r: 8, dtype: 'float16' }, device)).toBe('fused');
    const forward = selectLoraForward({ M: 2048, inF: 576, outF: 576, r: 8, dtype: 'float16', dropout: 0 }, device);
    expect(forward.kind === 'composed' && forward.y.config.name).toBe('sgmat-128x64 f16 16x16x16');
    const backward = selectLoraBackward(
      { M: 2048, inF: 576, outF: 576, r: 8, dtype: 'float16' },
      { needX: true, needA: true, needB: true, needWeight: false, needBias: false },
      device,
    );
    expect(backward.dx && 'base' in backward.dx && backward.dx.base.config.name).toBe('sgmat-128x64 f16 16x16x16');
  });
  it('loraPlan takes a forced plan where it applies', () => {
    expect(loraPlan({ M: 64, inF: 36, outF: 132, r: 8, dtype: 'float32' }, DEFAULT_GEMM_DEVICE, { loraPlan: 'composed' })).toBe('composed');
    expect(loraPlan({ M: 64, inF: 37, outF: 132, r: 8, dtype: 'float32' }, DEFAULT_GEMM_DEVICE, { loraPlan: 'fused' })).toBe('composed');
  });

  // The products of one layer, each decided once (an H200-like device: 48 KiB, subgroups of 32).
  const device = { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 };
  type Names = { [k: string]: string | null | Names };
  const names = (plan: object): Names =>
    Object.fromEntries(
      Object.entries(plan)
        .filter(([k]) => k !== 'kind')
        .map(([k, p]) => [k, p === null || p === 'dual' ? p : 'config' in p ? p.config.name : names(p)]),
    );
  it.each([
    [[1, 4096, 4096, 16, 0], 'along', { y: 'gemv-rows1', term: 'gemv-rows/8 lanes' }],
    [[16, 4096, 4096, 8, 0.1], 'fused', { t: 'gemv16', y: 'gemv-rows16/xk32p/sg+splitK8' }],
    [[2048, 4096, 4096, 8, 0], 'fused', { t: 'gemv-rows8+splitK8', y: 'vec4-128x128' }],
    [[2048, 4096, 4096, 32, 0], 'fused', { t: 'vec4-128x32+splitK32', y: 'vec4-128x128' }],
    [[33, 37, 20, 5, 0], 'composed', { t: 'skinnyN16', y: 'tile32x32', term: 'tile32x32' }],
  ] as const)('selectLoraForward(%j) = %s %j', ([M, inF, outF, r, dropout], kind, products) => {
    const plan = selectLoraForward({ M, inF, outF, r, dtype: 'float32', dropout }, device);
    expect(plan.kind).toBe(kind);
    expect(names(plan)).toEqual(products);
  });
  const every = { needX: true, needA: true, needB: true, needWeight: true, needBias: true };
  it.each([
    [[1, 4096, 4096, 16], { u: 'gemv1/l16', dx: { term: 'skinnyM16', base: 'gemv-cols1+splitK16' }, dA: 'skinnyM16', dB: 'skinnyN16' }],
    [[2048, 4096, 4096, 8], { u: 'dual', dx: { fused: 'vec4-128x128' }, dA: 'gemv-cols8+splitK8', dB: null }],
    [[2048, 4096, 4096, 32], { u: 'vec4-128x32+splitK32', dx: { fused: 'vec4-128x128' }, dA: { pair: 'vec4-32x128+splitK8' }, dB: null }],
    [[2048, 576, 1536, 32], { u: 'vec4-128x32+splitK12', dx: { fused: 'vec4-128x128' }, dA: 'vec4-32x128+splitK16', dB: 'vec4-128x32+splitK16' }],
    [[33, 37, 20, 5], { u: 'skinnyN16', dx: { term: 'tile32x32', base: 'tile32x32' }, dA: 'skinnyM16', dB: 'skinnyN16' }],
  ] as const)('selectLoraBackward(%j) = %j', ([M, inF, outF, r], products) => {
    const plan = names(selectLoraBackward({ M, inF, outF, r, dtype: 'float32' }, { ...every, needWeight: false, needBias: false }, device));
    expect(plan).toEqual({ ...products, dWeight: null, dBias: null });
    // Only what is asked for is planned.
    const some = selectLoraBackward({ M, inF, outF, r, dtype: 'float32' }, { ...every, needX: false, needA: false }, device);
    expect([some.u, some.dx, some.dA]).toEqual([null, null, null]);
    expect(some.dB?.config.name).toBeDefined();
    expect(some.dWeight?.shape).toMatchObject({ M: outF, N: inF, K: M, transA: true });
    expect(some.dBias?.shape).toMatchObject({ M: 1, N: outF, K: M });
  });

  /** The dispatches of one decode-sized loraLinear forward (random inputs, no dropout). */
  async function forwardLabels(backend: WebGPUBackend, M: number, inF: number, outF: number, r: number, seed: number): Promise<string[]> {
    const t = (shape: number[], k: number) => T.tensor(randomValues(shape[0] * shape[1], seed + k), shape, { dtype: 'float32', backend });
    const [x, w, a, b] = [t([M, inF], 0), t([outF, inF], 1), t([r, inF], 2), t([outF, r], 3)];
    const { labels } = await withDispatchLabels(backend, () => T.noGrad(() => T.loraLinear(x, w, a, b, { scale: 0.5 })).dispose());
    return labels;
  }

  gpuIt('decode without dropout: T rides along the pass over W (two dispatches for the forward)', async (backend) => {
    expect(await forwardLabels(backend, 2, 68, 132, 12, 91)).toEqual(['gemv-rows2+concat', 'gemv-rows/8 lanes']);
    await check(backend, { M: 2, inF: 68, outF: 132, r: 12, bias: true, dropout: 0, xGrad: true });
    await check(backend, { M: 4, inF: 256, outF: 100, r: 7, bias: false, dropout: 0, xGrad: true });
  });

  gpuIt('decode with 5..16 rows: T rides along the staged gemv-rows pass, its split-K reduction writing y and T', async (backend) => {
    // 32 vec4 of each row staged by k (with the next stage prefetched) where the device has more
    // than 16 KiB, or with the partials summed by subgroup shuffles (/sg) where subgroups of one
    // size hold the lane groups of 8 (lavapipe's are 8 wide).
    const sg = subgroupFlushFits(fixedSubgroupSize(backend.context.report), 8) ? '/sg' : '';
    const stage = sg || backend.device.limits.maxComputeWorkgroupStorageSize >= 17920 ? '32p' : '16';
    expect(await forwardLabels(backend, 12, 520, 132, 12, 95)).toEqual([
      `gemv-rows16/xk${stage}${sg}+splitK2+concat`,
      `gemv-rows16/xk${stage}${sg}+splitK2+concat reduce`,
      'gemv-rows/8 lanes',
    ]);
    expect(await forwardLabels(backend, 6, 1024, 132, 8, 96)).toEqual([
      `gemv-rows8/xk32${sg}+splitK4+concat`,
      `gemv-rows8/xk32${sg}+splitK4+concat reduce`,
      'gemv-rows/8 lanes',
    ]);
    await check(backend, { M: 12, inF: 520, outF: 132, r: 12, bias: true, dropout: 0, xGrad: true });
    await check(backend, { M: 16, inF: 516, outF: 260, r: 5, bias: false, dropout: 0, xGrad: true });
    await check(backend, { M: 7, inF: 1028, outF: 68, r: 16, bias: true, dropout: 0, xGrad: false });
    // out not a multiple of the rows per lane group: T first, the term in the staged pass's epilogue.
    await check(backend, { M: 10, inF: 520, outF: 130, r: 12, bias: true, dropout: 0, xGrad: true });
  });

  gpuIt('where in = out and dA splits K, dA and dB run as one pair (one GEMM dispatch, one reduction)', async (backend) => {
    const { labels } = await withDispatchLabels(backend, () => check(backend, { M: 300, inF: 260, outF: 260, r: 32, bias: false, dropout: 0, xGrad: false }));
    expect(labels.filter((l) => l.endsWith(' pair'))).toEqual(['vec4-32x128+splitK2 pair']);
    expect(labels).toContain('vec4-32x128+splitK2 pair reduce');
  });

  gpuIt('the GPU dropout mask equals the CPU one bit for bit', async (backend) => {
    const x = T.ones([7, 33], { backend });
    const w = T.zeros([5, 33], { backend });
    const a = T.ones([1, 33], { backend });
    const b = T.ones([5, 1], { backend });
    const y = T.loraLinear(x, w, a, b, { scale: 1, dropout: 0.5, seed: 99 });
    const cpu = T.loraLinear(T.ones([7, 33]), T.zeros([5, 33]), T.ones([1, 33]), T.ones([5, 1]), { scale: 1, dropout: 0.5, seed: 99 });
    expect(Array.from(await y.data())).toEqual(Array.from(cpu.dataSync()));
  });
});
