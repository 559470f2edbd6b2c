/**
 * Exploration probe: the per-kernel GPU time of one fused LoRA forward and one training step
 * (M = 2048, in = out = 4096), and of the decode forward (M = 1, 16) on both plans, each
 * captured dispatch timed on its own. Not part of the
 * published benchmark; it says where the time over the base GEMM goes.
 *
 *   node probe-lora.mjs [r ...] [--dual] [--decode-step]
 *   --dual: U and dB from lora-dual (both role layouts) against the two GEMMs;
 *   --decode-step: also the decode-sized training step, loraLinear against the matmul composition.
 */
import { createWebGPUBackend, type DispatchSpec, gemmDevice, loraPlan } from '@metal-lora/metal-kernels';
import { recordGemm, recordLoraDual } from '@metal-lora/metal-kernels/internal';
import { randomValues } from '@metal-lora/tensor/testing';
import * as T from '@metal-lora/tensor';
import { make as makeOn } from './lora-core';
import { clockWarmerLine, timeKernel } from './timing';

const backend = await createWebGPUBackend({ preciseTimestamps: true });
T.setBackendSync(backend);
console.log(await clockWarmerLine(backend, process.argv.includes('--no-warm')));
const make = (shape: number[], seed: number, std = 1) => makeOn(backend, shape, seed, std);

async function profile(label: string, step: () => void): Promise<void> {
  const captured: DispatchSpec[] = [];
  const dispatch = backend.dispatch.bind(backend);
  backend.dispatch = (spec: DispatchSpec) => {
    captured.push(spec);
    dispatch(spec);
  };
  step();
  backend.dispatch = dispatch;
  await backend.sync();
  const whole = await timeKernel(backend, step);
  let sum = 0;
  console.log(`${label}: ${captured.length} dispatches, whole ${whole.ms.toFixed(4)} ms`);
  for (const spec of captured) {
    const { ms } = await timeKernel(backend, () => dispatch(spec));
    sum += ms;
    console.log(`  ${(spec.label ?? spec.key).padEnd(40)} ${spec.workgroups.join('x').padEnd(14)} ${ms.toFixed(4)} ms`);
  }
  console.log(`  sum of kernels ${sum.toFixed(4)} ms`);
}

/** One training step of `forward` on fresh leaves of x, A, B: the forward, then dx, dA, dB from `dyOut`. */
function step(xIn: T.Tensor, a: T.Tensor, b: T.Tensor, dyOut: T.Tensor, forward: (xs: T.Tensor, as: T.Tensor, bs: T.Tensor) => T.Tensor): void {
  T.tidy(() => {
    const [xs, as, bs] = [xIn, a, b].map((t) => {
      const leaf = t.detach();
      leaf.requiresGrad = true;
      return leaf;
    });
    forward(xs, as, bs).backward(dyOut);
    for (const t of [xs, as, bs]) t.grad?.dispose();
  });
}

const ranks = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const dualOnly = process.argv.includes('--dual');
const [M, inF, outF] = [2048, 4096, 4096];
const x = make([M, inF], 1);
const w = make([outF, inF], 2, 1 / Math.sqrt(inF));
const dy = make([M, outF], 3);
for (const r of ranks.length ? ranks : process.argv.includes('--decode-step') ? [] : [8, 64]) {
  const a = make([r, inF], 4, 1 / Math.sqrt(inF));
  const b = make([outF, r], 5, 0.1);
  const scale = 16 / r;
  const fused = (xs: T.Tensor, as: T.Tensor, bs: T.Tensor) => T.loraLinear(xs, w, as, bs, { scale });
  if (dualOnly) {
    // --dual: U = s·dy·B and dB = s·dyᵀ·T, M = 2048, out = 4096.
    const up = (n: number, seed: number) => (backend.upload(Float32Array.from(randomValues(n, seed)), 'float32') as { buffer: GPUBuffer }).buffer;
    const [dyb, bb, tb] = [up(M * outF, 81), up(outF * r, 82), up(M * r, 83)];
    const [ub, dbb] = [backend.acquire(M * r * 4, 'probe U'), backend.acquire(outF * r * 4, 'probe dB')];
    for (const roles of ['shared', 'split'] as const) {
      await profile(`r=${r} lora-dual ${roles}`, () => {
        const { u, dB } = recordLoraDual(backend, dyb, bb, tb, M, outF, r, 0.5, roles);
        backend.release(u.buffer);
        backend.release(dB.buffer);
      });
    }
    await profile(`r=${r} two GEMMs`, () => {
      const base = { batch: 1, dtype: 'float32' as const };
      const ops = { aBatchStride: 0, bBatchStride: 0, alpha: 0.5, beta: 0, dtype: 'float32' as const };
      recordGemm(backend, { M, N: r, K: outF, transA: false, transB: false, ...base }, { a: dyb, b: bb, c: ub, ...ops });
      recordGemm(backend, { M: outF, N: r, K: M, transA: true, transB: false, ...base }, { a: dyb, b: tb, c: dbb, ...ops });
    });
    for (const buffer of [dyb, bb, tb, ub, dbb]) backend.release(buffer);
    continue;
  }
  await profile(`r=${r} base x·Wᵀ`, () =>
    T.tidy(() => {
      T.noGrad(() => T.matmul(x, w, { transposeB: true }));
    }),
  );
  await profile(`r=${r} base dy·W (dx without LoRA)`, () =>
    T.tidy(() => {
      T.noGrad(() => T.matmul(dy, w));
    }),
  );
  await profile(`r=${r} fused forward`, () =>
    T.tidy(() => {
      T.noGrad(() => fused(x, a, b));
    }),
  );
  await profile(`r=${r} fused step`, () => step(x, a, b, dy, fused));
}
// Decode shapes, r = 16: the base GEMV and the forward on both plans.
for (const Md of dualOnly ? [] : [1, 16]) {
  const xd = make([Md, inF], 6);
  const a = make([16, inF], 4, 1 / Math.sqrt(inF));
  const b = make([outF, 16], 5, 0.1);
  await profile(`decode M=${Md} base x·Wᵀ`, () =>
    T.tidy(() => {
      T.noGrad(() => T.matmul(xd, w, { transposeB: true }));
    }),
  );
  await profile(`decode M=${Md} r=16 forward (${loraPlan({ M: Md, inF, outF, r: 16, dtype: 'float32' }, gemmDevice(backend))})`, () =>
    T.tidy(() => {
      T.noGrad(() => T.loraLinear(xd, w, a, b, { scale: 1 }));
    }),
  );
  backend.overrides.loraPlan = 'composed';
  await profile(`decode M=${Md} r=16 forward (composed)`, () =>
    T.tidy(() => {
      T.noGrad(() => T.loraLinear(xd, w, a, b, { scale: 1 }));
    }),
  );
  backend.overrides = {};
  if (process.argv.includes('--decode-step')) {
    // The training step at decode sizes: loraLinear's backward against the matmul composition's.
    const dyd = make([Md, outF], 7);
    await profile(`decode M=${Md} r=16 step (loraLinear)`, () => step(xd, a, b, dyd, (xs, as, bs) => T.loraLinear(xs, w, as, bs, { scale: 1 })));
    await profile(`decode M=${Md} r=16 step (matmul composition)`, () =>
      step(xd, a, b, dyd, (xs, as, bs) =>
        T.add(T.matmul(xs, w, { transposeB: true }), T.matmul(T.matmul(xs, as, { transposeB: true }), bs, { transposeB: true })),
      ),
    );
  }
}
await backend.sync();
backend.context.device.destroy();
