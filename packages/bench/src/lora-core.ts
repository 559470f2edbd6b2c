/** The LoRA layer measurements (browser-safe: the page and the CLI share them). */
import { WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { compare, randomValues } from '@metal-lora/tensor/testing';
import { settleAfterUploads, timeKernel } from './timing';

export interface LoraResult {
  M: number;
  inF: number;
  outF: number;
  r: number;
  baseMs: number;
  unfusedFwdMs: number;
  fusedFwdMs: number;
  unfusedStepMs: number;
  fusedStepMs: number;
  /** The same op with the `composed` plan (separate GEMMs accumulating into one output). */
  composedFwdMs: number;
  composedStepMs: number;
  unfusedPeakBytes: number;
  fusedPeakBytes: number;
  maxRelDiff: number;
  /** Max − min over the 7 trials of each timing, ms. */
  spreadMs: { base: number; unfusedFwd: number; fusedFwd: number; unfusedStep: number; fusedStep: number };
}

/** GPU timestamps on webgpu; on the CPU (synchronous kernels) the same protocol with the wall clock. */
async function timeOn(backend: T.Backend, run: () => void): Promise<{ ms: number; spread: number }> {
  if (backend instanceof WebGPUBackend) return timeKernel(backend, run);
  const once = () => {
    const t0 = performance.now();
    run();
    return performance.now() - t0;
  };
  let warm = 0;
  while (warm < 50) warm += once();
  const times = Array.from({ length: 7 }, once).sort((p, q) => p - q);
  return { ms: times[3], spread: times[6] - times[0] };
}

async function settle(backend: T.Backend): Promise<void> {
  if (backend instanceof WebGPUBackend) await backend.sync();
}

/** A seeded random normal f32 tensor (never zeros) on `backend`. */
export function make(backend: T.Backend, shape: number[], seed: number, std = 1): T.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return T.tensor(randomValues(n, seed, std), shape, { backend, dtype: 'float32' });
}

export interface LoraCase {
  M: number;
  inF: number;
  outF: number;
  r: number;
}

export async function runLoraBench(backend: T.Backend, cases: LoraCase[], log: (line: string) => void): Promise<LoraResult[]> {
  const results: LoraResult[] = [];
  for (const { M, inF, outF, r } of cases) {
    // Every run below disposes what it makes: a run that kept its output would pile up one buffer
    // per timed run (it once held 100 GB live before the training step that follows).
    const liveBefore = backend.memory().liveBytes;
    const uploaded = performance.now();
    const x = make(backend, [M, inF], 1);
    const w = make(backend, [outF, inF], 2, 1 / Math.sqrt(inF));
    const dy = make(backend, [M, outF], 3);
    {
      const a = make(backend, [r, inF], 4, 1 / Math.sqrt(inF));
      const b = make(backend, [outF, r], 5, 0.1);
      const scale = 16 / r;
      const s = T.full([], scale, { backend });
      const unfusedForward = (xs: T.Tensor, as: T.Tensor, bs: T.Tensor) =>
        T.add(T.matmul(xs, w, { transposeB: true }), T.mul(T.matmul(T.matmul(xs, as, { transposeB: true }), bs, { transposeB: true }), s));
      // Agreement of the two paths (fresh random inputs, nothing zero).
      const yu = T.tidy(() => T.noGrad(() => unfusedForward(x, a, b)));
      const yf = T.noGrad(() => T.loraLinear(x, w, a, b, { scale }));
      const cmp = compare(await yf.data(), await yu.data(), { rtol: 1e-3, atol: 1e-3 }, 'fused vs unfused');
      yu.dispose();
      yf.dispose();
      if (!cmp.ok) throw new Error(cmp.message);

      // The first timings after a case's uploads are discarded: on the H100 they were sometimes far
      // slower than the same work timed again (one base GEMM read 6.0 ms instead of 1.70; decode
      // ran slow for about a second, see settleAfterUploads).
      const baseRun = () =>
        T.tidy(() => {
          T.noGrad(() => T.matmul(x, w, { transposeB: true }));
        });
      if (backend instanceof WebGPUBackend) await settleAfterUploads(backend, baseRun, uploaded);
      else await timeOn(backend, baseRun);
      const base = await timeOn(backend, baseRun);
      const unfusedFwd = await timeOn(backend, () =>
        T.tidy(() => {
          T.noGrad(() => unfusedForward(x, a, b));
        }),
      );
      const fusedFwd = await timeOn(backend, () =>
        T.tidy(() => {
          T.noGrad(() => T.loraLinear(x, w, a, b, { scale }));
        }),
      );
      // A training step: forward, then dx, dA, dB (x requires grad: not the first layer).
      const leaves = () =>
        [x, a, b].map((t) => {
          const leaf = t.detach();
          leaf.requiresGrad = true;
          return leaf;
        });
      const unfusedStep = () =>
        T.tidy(() => {
          const [xs, as, bs] = leaves();
          unfusedForward(xs, as, bs).backward(dy);
          for (const t of [xs, as, bs]) t.grad?.dispose();
        });
      const fusedStep = () =>
        T.tidy(() => {
          const [xs, as, bs] = leaves();
          T.loraLinear(xs, w, as, bs, { scale }).backward(dy);
          for (const t of [xs, as, bs]) t.grad?.dispose();
        });
      const peakOf = async (step: () => void) => {
        await settle(backend);
        backend.resetPeak();
        const before = backend.memory().liveBytes;
        step();
        await settle(backend);
        return backend.memory().peakBytes - before;
      };
      const unfusedPeak = await peakOf(unfusedStep);
      const fusedPeak = await peakOf(fusedStep);
      const unfusedStepT = await timeOn(backend, unfusedStep);
      const fusedStepT = await timeOn(backend, fusedStep);
      // The composed plan, forced where the backend has plans (the CPU backend has one way only).
      const gpu = backend instanceof WebGPUBackend ? backend : null;
      if (gpu) gpu.overrides.loraPlan = 'composed';
      const composedFwd = await timeOn(backend, () =>
        T.tidy(() => {
          T.noGrad(() => T.loraLinear(x, w, a, b, { scale }));
        }),
      );
      const composedStep = await timeOn(backend, fusedStep);
      if (gpu) gpu.overrides = {};
      const res: LoraResult = {
        M,
        inF,
        outF,
        r,
        baseMs: base.ms,
        unfusedFwdMs: unfusedFwd.ms,
        fusedFwdMs: fusedFwd.ms,
        unfusedStepMs: unfusedStepT.ms,
        fusedStepMs: fusedStepT.ms,
        composedFwdMs: composedFwd.ms,
        composedStepMs: composedStep.ms,
        unfusedPeakBytes: unfusedPeak,
        fusedPeakBytes: fusedPeak,
        maxRelDiff: cmp.maxRelError,
        spreadMs: {
          base: base.spread,
          unfusedFwd: unfusedFwd.spread,
          fusedFwd: fusedFwd.spread,
          unfusedStep: unfusedStepT.spread,
          fusedStep: fusedStepT.spread,
        },
      };
      results.push(res);
      log(
        `M=${M} in=${inF} out=${outF} r=${String(r).padEnd(3)} base ${base.ms.toFixed(3)} ms | fwd unfused ${unfusedFwd.ms.toFixed(3)} fused ${fusedFwd.ms.toFixed(3)} (${(fusedFwd.ms / base.ms).toFixed(2)}x base, ${(unfusedFwd.ms / fusedFwd.ms).toFixed(2)}x faster) | step unfused ${unfusedStepT.ms.toFixed(3)} fused ${fusedStepT.ms.toFixed(3)} (${(fusedStepT.ms / base.ms).toFixed(2)}x base, ${(unfusedStepT.ms / fusedStepT.ms).toFixed(2)}x faster) | peak MB unfused ${(unfusedPeak / 1e6).toFixed(1)} fused ${(fusedPeak / 1e6).toFixed(1)} (${(fusedPeak / unfusedPeak).toFixed(2)}x)`,
      );
      for (const t of [a, b, s]) t.dispose();
    }
    for (const t of [x, w, dy]) t.dispose();
    const kept = backend.memory().liveBytes - liveBefore;
    if (kept !== 0)
      throw new Error(`lora bench: the case M=${M} in=${inF} out=${outF} r=${r} left ${kept} bytes live; expected every run to dispose its tensors`);
  }
  return results;
}
