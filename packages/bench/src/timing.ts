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

export function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  return v[Math.floor(v.length / 2)];
}

