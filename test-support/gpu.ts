/**
 * The one way a test gets a WebGPU device (every package's GPU-backed tests import it).
 *
 * Without an adapter (no Vulkan driver, no `webgpu` package) a GPU test is skipped with a one-line
 * reason, printed once per file; under `METAL_LORA_REQUIRE_GPU=1` (CI, which installs lavapipe)
 * the missing adapter is a failure instead. Only a missing adapter skips: any other error while
 * opening the device fails the test.
 */
import { type WebGPUBackend, webgpuBackend } from '@metal-lora/metal-kernels';
import { GPUError } from '@metal-lora/tensor';
import { afterAll, it, type TestContext } from 'vitest';

export const requireGPU = process.env.METAL_LORA_REQUIRE_GPU === '1';

/** Whether `error` means "no WebGPU adapter here" (the only reason a GPU test may skip). */
export function isNoAdapter(error: unknown): error is GPUError {
  return error instanceof GPUError && error.reason === 'no-adapter';
}

let warned = false;

/**
 * Skips the running test because `error` says there is no adapter (or fails it under
 * METAL_LORA_REQUIRE_GPU=1); rethrows any other error.
 */
export function skipWithoutAdapter(ctx: TestContext, error: unknown): never {
  if (!isNoAdapter(error) || requireGPU) throw error;
  if (!warned) console.warn(`[gpu tests] skipping: no WebGPU adapter (${error.message})`);
  warned = true;
  ctx.skip();
  throw error; // not reached: ctx.skip() throws
}

let shared: Promise<WebGPUBackend | Error> | undefined;
/** The process's shared backend with outputs poisoned before kernels write them, or the error that prevented it. */
function sharedBackend(): Promise<WebGPUBackend | Error> {
  shared ??= webgpuBackend().then(
    (b) => {
      b.poisonOutputs = true;
      return b;
    },
    (e: Error) => e,
  );
  return shared;
}

/** Clears the choices forced on the shared backend (`WebGPUBackend.overrides`), where one was opened: for `afterEach`. */
export async function clearOverrides(): Promise<void> {
  const backend = await shared;
  if (backend && !(backend instanceof Error)) backend.overrides = {};
}

export interface GpuItOptions {
  timeout?: number;
  /**
   * A backend of the test's own (e.g. `createWebGPUBackend({ preciseTimestamps: true })`) instead
   * of the shared one; its device is destroyed when the test ends.
   */
  open?: () => Promise<WebGPUBackend>;
}

/** `it` for GPU tests: the body gets a backend; skipped with its reason (or failed under CI) without an adapter. */
export function gpuIt(name: string, body: (backend: WebGPUBackend, ctx: TestContext) => Promise<void>, options: number | GpuItOptions = {}): void {
  const { timeout, open } = typeof options === 'number' ? { timeout: options, open: undefined } : options;
  it(
    name,
    async (ctx: TestContext) => {
      let backend: WebGPUBackend;
      try {
        if (open) backend = await open();
        else {
          const b = await sharedBackend();
          if (b instanceof Error) throw b;
          backend = b;
        }
      } catch (error) {
        skipWithoutAdapter(ctx, error);
      }
      try {
        await body(backend, ctx);
      } finally {
        if (open) {
          await backend.sync().catch(() => undefined);
          backend.context.device.destroy();
        }
      }
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
  const backend = await shared;
  if (backend && !(backend instanceof Error)) {
    await backend.sync();
    backend.context.device.destroy();
  }
});
