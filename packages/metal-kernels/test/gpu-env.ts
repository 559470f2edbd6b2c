import { afterAll, it, type TestContext } from 'vitest';
import { type WebGPUBackend, webgpuBackend } from '../src/index';

/**
 * GPU-backed tests run only where an adapter exists. Without one they skip with a one-line
 * reason, unless METAL_LORA_REQUIRE_GPU=1 (set by CI, which installs lavapipe): then the missing
 * adapter is a failure.
 */
export const requireGPU = process.env.METAL_LORA_REQUIRE_GPU === '1';

let cached: Promise<WebGPUBackend | Error> | undefined;
function backendOrError(): Promise<WebGPUBackend | Error> {
  cached ??= webgpuBackend().then(
    (b) => {
      b.poisonOutputs = true;
      return b;
    },
    (e: Error) => e,
  );
  return cached;
}

let warned = false;

/** `it` for GPU tests: the body gets the shared backend; skipped (or failed under CI) without one. */
export function gpuIt(name: string, body: (backend: WebGPUBackend, ctx: TestContext) => Promise<void>, timeout?: number): void {
  it(
    name,
    async (ctx: TestContext) => {
      const backend = await backendOrError();
      if (backend instanceof Error) {
        if (requireGPU) throw backend;
        if (!warned) console.warn(`[metal-kernels] skipping GPU tests: no WebGPU adapter (${backend.message})`);
        warned = true;
        ctx.skip();
        return;
      }
      await body(backend, ctx);
    },
    timeout,
  );
}

/** Runs `fn` with the backend's dispatches recorded: its result and the labels of what it dispatched, in order. */
export async function withDispatchLabels<R>(backend: WebGPUBackend, fn: () => R | Promise<R>): Promise<{ result: R; labels: string[] }> {
  const labels: string[] = [];
  const dispatch = backend.dispatch.bind(backend);
  backend.dispatch = (spec) => {
    labels.push(spec.label ?? spec.key);
    dispatch(spec);
  };
  try {
    return { result: await fn(), labels };
  } finally {
    backend.dispatch = dispatch;
  }
}

// Dawn aborts the process if it exits with a live device: release it when the file's tests end.
afterAll(async () => {
  const backend = await cached;
  if (backend && !(backend instanceof Error)) {
    await backend.sync();
    backend.context.device.destroy();
  }
});
