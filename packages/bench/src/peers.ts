/**
 * Peers measured in the same run: tfjs with its WebGPU backend (the same LoRA math through its
 * ops, on the same Dawn instance) and PyTorch (the Python script, where `import torch` works).
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import type { PeerTimes } from './peers-types';

export type { PeerTimes };

/** tfjs-webgpu on `gpu` (Dawn): forward and forward+backward (dx, dA, dB) of the unfused LoRA layer. */
export async function tfjsPeer(gpu: GPU, shapes: { M: number; inF: number; outF: number; r: number }[]): Promise<Map<string, PeerTimes> | string> {
  try {
    const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
    if (!nav?.gpu) Object.defineProperty(globalThis, 'navigator', { value: { gpu, userAgent: 'node' }, configurable: true });
    const tf = await import('@tensorflow/tfjs-core');
    // tfjs-core alone registers no gradients; the bundle `@tensorflow/tfjs` does this import.
    await import('@tensorflow/tfjs-core/dist/register_all_gradients');
    await import('@tensorflow/tfjs-backend-webgpu');
    if (!(await tf.setBackend('webgpu'))) return 'tfjs: the webgpu backend did not initialise';
    await tf.ready();
    const out = new Map<string, PeerTimes>();
    for (const { M, inF, outF, r } of shapes) {
      const x = tf.randomNormal([M, inF]);
      const w = tf.randomNormal([outF, inF], 0, 1 / Math.sqrt(inF));
      const a = tf.randomNormal([r, inF], 0, 1 / Math.sqrt(inF));
      const b = tf.randomNormal([outF, r], 0, 0.1);
      const dy = tf.randomNormal([M, outF]);
      const s = 16 / r;
      const forward = (xs: typeof x, as: typeof a, bs: typeof b) =>
        tf.add(tf.matMul(xs, w, false, true), tf.mul(tf.matMul(tf.matMul(xs, as, false, true), bs, false, true), s));
      const gradsFn = tf.grads((xs, as, bs) => tf.sum(tf.mul(forward(xs as typeof x, as as typeof a, bs as typeof b), dy)));
      const time = async (fn: () => void): Promise<number> => {
        for (let i = 0; i < 3; i++) await tf.time(fn);
        const t: number[] = [];
        for (let i = 0; i < 7; i++) t.push((await tf.time(fn)).kernelMs as number);
        t.sort((p, q) => p - q);
        return t[3];
      };
      const fwdMs = await time(() => tf.tidy(() => forward(x, a, b)));
      const stepMs = await time(() => tf.tidy(() => gradsFn([x, a, b])));
      out.set(`${M}x${inF}x${outF}r${r}`, { fwdMs, stepMs });
      tf.dispose([x, w, a, b, dy]);
    }
    return out;
  } catch (error) {
    return `tfjs: ${(error as Error).message.split('\n')[0]}`;
  }
}

/** PyTorch/cuBLAS through python/torch_lora.py, where `python3` has torch with CUDA. */
export function torchPeer(quick: boolean): { device: string; results: Map<string, PeerTimes & { baseMs: number; peakBytes: number }> } | string {
  const probe = spawnSync('python3', ['-c', 'import torch; print(torch.cuda.is_available())'], { encoding: 'utf8' });
  if (probe.status !== 0) return 'pytorch: python3 with torch is not available here';
  if (probe.stdout.trim() !== 'True') return 'pytorch: torch has no CUDA device here';
  const script = fileURLToPath(new URL(process.env.METAL_LORA_TORCH_SCRIPT ?? '../python/torch_lora.py', import.meta.url));
  const run = spawnSync('python3', [script, ...(quick ? ['--quick'] : [])], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) return `pytorch: the script failed (${run.stderr.trim().split('\n').pop()})`;
  const json = JSON.parse(run.stdout) as {
    device: string;
    M: number;
    in: number;
    out: number;
    results: { M?: number; r: number; baseMs: number; unfusedFwdMs: number; unfusedStepMs: number; stepPeakBytes: number }[];
  };
  const results = new Map<string, PeerTimes & { baseMs: number; peakBytes: number }>();
  for (const r of json.results)
    results.set(`${r.M ?? json.M}x${json.in}x${json.out}r${r.r}`, {
      fwdMs: r.unfusedFwdMs,
      stepMs: r.unfusedStepMs,
      baseMs: r.baseMs,
      peakBytes: r.stepPeakBytes,
    });
  return { device: json.device, results };
}
