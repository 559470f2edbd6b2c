import { registerBackend, resolveBackend } from '@metal-lora/tensor';
import { WebGPUBackend } from './backend';
import { autoSkipReason, requestGPU, type RequestGPUOptions } from './device';
import { registerBlockKernels } from './kernels/block';
import { registerElementwiseKernels } from './kernels/elementwise';
import { registerLayoutKernels } from './kernels/layout';
import { registerLoraKernels } from './kernels/lora';
import { registerLossKernels } from './kernels/loss';
import { registerMatmulKernel } from './kernels/matmul';
import { registerOptimizerKernels } from './kernels/optim';
import { registerQuantizedKernels } from './kernels/quantized';
import { registerReduceKernels } from './kernels/reduce';

let kernelsRegistered = false;

/** Registers every WebGPU kernel under its op name (once). */
export function registerWebGPUKernels(): void {
  if (kernelsRegistered) return;
  kernelsRegistered = true;
  registerElementwiseKernels();
  registerLayoutKernels();
  registerReduceKernels();
  registerMatmulKernel();
  registerLoraKernels();
  registerOptimizerKernels();
  registerLossKernels();
  registerBlockKernels();
  registerQuantizedKernels();
}

/** Opens a device and wraps it as a backend (kernels registered). */
export async function createWebGPUBackend(options: RequestGPUOptions = {}): Promise<WebGPUBackend> {
  registerWebGPUKernels();
  return new WebGPUBackend(await requestGPU(options));
}

/**
 * Makes `setBackend('webgpu')` available (the device opens on first use). Importing the package
 * does this once; call it again with options to change how the device is requested.
 */
export function registerWebGPUBackend(options: RequestGPUOptions = {}): void {
  registerBackend('webgpu', () => createWebGPUBackend(options), { skipReason: autoSkipReason });
}

/** The webgpu backend, created on first call. */
export async function webgpuBackend(): Promise<WebGPUBackend> {
  return (await resolveBackend('webgpu')) as WebGPUBackend;
}
