/** GPU timing shared by the benchmarks (no Node built-ins: the browser page uses it too). */
import type { WebGPUBackend } from '@metal-lora/metal-kernels';
import spinSource from './wgsl/spin.wgsl';

/** Workgroups of the clock warmer's spin kernel (256 threads each): enough to fill a large GPU several times. */
const WARM_GROUPS = 2048;
const warmers = new WeakMap<WebGPUBackend, () => void>();

/**
 * From now on, `timeKernel` submits a spin kernel of about `targetMs` of GPU time (calibrated
 * here) just before each timed region, untimed: the GPU runs it while the host records the region.
 * Without it the host's recording leaves a GPU idle most of the time (decode kernels take less GPU
 * time than their recording) and the driver lowers its clocks: on the H100 (2026-11-26, session
 * 9) nvidia-smi showed the SM clock between 345 and 1980 MHz during `gemm-bench`, reason "GPU
 * idle", and decode M = 16 timed anywhere from 0.036 to 0.063 ms. Returns the spin's iterations
 * (0: not used, on software adapters and without timestamps).
 */
export async function useClockWarmer(backend: WebGPUBackend, targetMs = 60): Promise<number> {
  // A software adapter (CI's lavapipe) has no clocks to keep up, and would spin for seconds.
  if (backend.context.report.software || !backend.context.report.timestampQuery) return 0;
  const out = backend.acquire(WARM_GROUPS * 256 * 4, 'clock warmer');
  const spin = (iters: number) => () =>
    backend.dispatch({
      key: 'spin',
      source: spinSource,
      buffers: [out],
      uniform: new Uint32Array([iters, 0, 0, 0]).buffer,
      workgroups: [WARM_GROUPS, 1, 1],
      label: 'clock warmer',
    });
  let iters = 1024;
  // Scaled toward the target four times: the clocks rise while it calibrates.
  for (let round = 0; round < 4; round++) {
    const ms = await backend.timeRegion(spin(iters));
    iters = Math.max(1, Math.min(1 << 24, Math.round((iters * targetMs) / Math.max(ms, 1e-3))));
  }
  warmers.set(backend, spin(iters));
  return iters;
}

/** `useClockWarmer` unless `off` (the benchmarks' `--no-warm`); returns a line saying which, for their headers. */
export async function clockWarmerLine(backend: WebGPUBackend, off: boolean): Promise<string> {
  if (off) return 'clock warmer: off (--no-warm)';
  const iters = await useClockWarmer(backend);
  return iters ? `clock warmer: a ~60 ms spin (${iters} iterations) before each timed region` : 'clock warmer: not used (software adapter, or no timestamps)';
}

/**
 * Median per-run GPU time of `run` (ms) and the spread of the trials. The GPU first works for
 * ≥ 50 ms so its clocks settle; each of 7 trials then spans ≥ 20 ms, so timestamp granularity and
 * pass gaps at the region's ends stay under 1%. With `useClockWarmer`, each region follows a spin.
 */
export async function timeKernel(backend: WebGPUBackend, run: (i: number) => void): Promise<{ ms: number; spread: number; minMs: number; hostMs: number }> {
  const warm = warmers.get(backend);
  let reps = 1;
  let once = await backend.timeRegion(() => run(0), warm);
  while (once * reps < 50) {
    reps *= 2;
    once = (await backend.timeRegion(() => Array.from({ length: reps }, (_, i) => run(i)), warm)) / reps;
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
  for (let trial = 0; trial < 7; trial++) times.push((await backend.timeRegion(() => Array.from({ length: per }, (_, i) => recorded(i)), warm)) / per);
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
