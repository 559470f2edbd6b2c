/** GPU timing shared by the benchmarks (no Node built-ins: the browser page uses it too). */
import type { WebGPUBackend } from '@metal-lora/metal-kernels';

/**
 * Median per-run GPU time of `run` (ms) and the spread of the trials. The GPU first works for
 * ≥ 50 ms so its clocks settle; each of 7 trials then spans ≥ 20 ms, so timestamp granularity and
 * pass gaps at the region's ends stay under 1%.
 */
export async function timeKernel(backend: WebGPUBackend, run: (i: number) => void): Promise<{ ms: number; spread: number; minMs: number; hostMs: number }> {
  let reps = 1;
  let once = await backend.timeRegion(() => run(0));
  while (once * reps < 50) {
    reps *= 2;
    once = (await backend.timeRegion(() => Array.from({ length: reps }, (_, i) => run(i)))) / reps;
  }
  const per = Math.max(1, Math.min(2000, Math.ceil(20 / Math.max(once, 1e-4))));
  const times: number[] = [];
  // Host time spent recording the runs: when it exceeds the GPU time, the GPU waited for the host
  // between submits and the figure measures recording, not the kernels.
  let host = 0;
  const recorded = (i: number) => {
    const t0 = performance.now();
    run(i);
    host += performance.now() - t0;
  };
  for (let trial = 0; trial < 7; trial++) times.push((await backend.timeRegion(() => Array.from({ length: per }, (_, i) => recorded(i)))) / per);
  return { ms: median(times), spread: Math.max(...times) - Math.min(...times), minMs: Math.min(...times), hostMs: host / (7 * per) };
}

/**
 * Times `run` (discarding the figures) until `minMs` have passed since `since` (a
 * `performance.now()` reading, e.g. taken after a case's uploads) and two timings in a row agree
 * within 3%, at most 30 times or until 5 × `minMs` have passed (noisy software adapters). On
 * the H100 kernels timed in the first second or so after a case's buffers were uploaded ran slow
 * however often they were repeated (2026-11-26: decode M = 16 0.050–0.053 ms for about a second,
 * then 0.037 ms with the same buffers and pipeline).
 */
export async function settleAfterUploads(backend: WebGPUBackend, run: (i: number) => void, since: number, minMs = 2000): Promise<void> {
  for (let tries = 0, last = Number.POSITIVE_INFINITY; tries < 30; tries++) {
    const { ms } = await timeKernel(backend, run);
    const elapsed = performance.now() - since;
    if ((elapsed >= minMs && Math.abs(ms - last) <= 0.03 * last) || elapsed >= 5 * minMs) return;
    last = ms;
  }
}

export function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
}

