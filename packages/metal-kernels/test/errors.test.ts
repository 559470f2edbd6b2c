import * as T from '@metal-lora/tensor';
import { GPUError } from '@metal-lora/tensor';
import { describe, expect } from 'vitest';
import { createWebGPUBackend } from '../src/index';
import { gpuIt } from '../../../test-support/gpu';

describe('GPU failures are typed errors, not hangs', () => {
  gpuIt('a buffer beyond the device limit is refused as out-of-memory before allocation', async (shared) => {
    const tooBig = shared.device.limits.maxStorageBufferBindingSize + 1;
    let error: unknown;
    try {
      shared.acquire(tooBig, 'too big');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(GPUError);
    expect((error as GPUError).reason).toBe('out-of-memory');
    expect((error as Error).message).toMatch(/exceeds the device's largest storage binding/);
  });

  gpuIt('after the device is lost, ops and reads throw GPUError(device-lost)', async () => {
    const backend = await createWebGPUBackend();
    const x = T.tensor([1, 2, 3], undefined, { backend });
    backend.context.device.destroy();
    await backend.context.device.lost;
    let error: unknown;
    try {
      T.exp(x);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(GPUError);
    expect((error as GPUError).reason).toBe('device-lost');
    await expect(x.data()).rejects.toThrow(/device was lost/);
  });

  gpuIt('a validation error reported by the device surfaces on the next call, once', async (shared) => {
    shared.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE }); // an invalid usage combination
    let error: unknown;
    for (let i = 0; i < 20 && !error; i++) {
      try {
        await shared.sync();
        await new Promise((resolve) => setTimeout(resolve, 10));
      } catch (e) {
        error = e;
      }
    }
    expect(error).toBeInstanceOf(GPUError);
    expect((error as GPUError).reason).toBe('validation');
    await shared.sync(); // reported once, then cleared
  });
});
