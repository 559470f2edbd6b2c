import { afterAll, it, type TestContext } from 'vitest';
import { type GPUContext, requestGPU } from '../src/index';

/**
 * GPU-backed tests run only where an adapter exists. Without one they skip with a one-line
 * reason, unless METAL_LORA_REQUIRE_GPU=1 (set by CI, which installs lavapipe): then the missing
 * adapter is a failure.
 */
export const requireGPU = process.env.METAL_LORA_REQUIRE_GPU === '1';

let cached: Promise<GPUContext | Error> | undefined;
function gpuContext(): Promise<GPUContext | Error> {
  cached ??= requestGPU().catch((e: Error) => e);
  return cached;
}

let warned = false;

/** `it` for GPU tests: the body gets the shared device; skipped (or failed under CI) without one. */
export function gpuIt(name: string, body: (gpu: GPUContext) => Promise<void>, timeout?: number): void {
  it(
    name,
    async (ctx: TestContext) => {
      const gpu = await gpuContext();
      if (gpu instanceof Error) {
        if (requireGPU) throw gpu;
        if (!warned) console.warn(`[metal-kernels] skipping GPU tests: no WebGPU adapter (${gpu.message})`);
        warned = true;
        ctx.skip();
        return;
      }
      await body(gpu);
    },
    timeout,
  );
}

// Dawn aborts the process if it exits with a live device: release it when the file's tests end.
afterAll(async () => {
  const ctx = await cached;
  if (ctx && !(ctx instanceof Error)) ctx.device.destroy();
  cached = undefined;
});
