/// <reference path="./wgsl.d.ts" />
/**
 * @metal-lora/metal-kernels: the WebGPU backend. WGSL kernels run as Metal shaders on Apple GPUs
 * (Dawn in Node, Safari/Chrome in the browser) and as Vulkan/D3D12 elsewhere.
 *
 * This is the Node build: where there is no `navigator.gpu` it loads Dawn (npm `webgpu`) on the
 * first device request. Bundlers targeting the browser resolve the package's `browser` condition
 * to `./browser` instead and never see `webgpu`. Importing it registers the `webgpu` backend with
 * @metal-lora/tensor (lazily: no device is opened until `setBackend('webgpu')`).
 */
import { existsSync, readdirSync } from 'node:fs';
import { type DawnBinding, setDawnLoader } from './device';
import { registerWebGPUBackend } from './register';

/**
 * On Linux a GPU is reached through a device node: a DRM render node, NVIDIA's device files, or
 * WSL's /dev/dxg. Without one only a software Vulkan driver (lavapipe) can answer, which is slower
 * than the CPU backend, so `setBackend('auto')` does not open Dawn at all (which also keeps Dawn's
 * start-up warnings about lavapipe's limits off the user's terminal).
 */
function noGpuDevice(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    if (existsSync('/dev/dxg') || readdirSync('/dev').some((f) => /^nvidia\d+$/.test(f))) return undefined;
    if (existsSync('/dev/dri') && readdirSync('/dev/dri').some((f) => f.startsWith('renderD'))) return undefined;
  } catch {
    return undefined;
  }
  return "no GPU device on this Linux machine (no /dev/dri render node, /dev/nvidia* or /dev/dxg), and a software Vulkan driver is slower than the CPU backend (setBackend('webgpu') uses one anyway)";
}

setDawnLoader(async () => (await import('webgpu')) as unknown as DawnBinding, noGpuDevice);
registerWebGPUBackend();

export * from './api';
