/// <reference path="./wgsl.d.ts" />
/**
 * @metal-lora/metal-kernels: the WebGPU backend. WGSL kernels run as Metal shaders on Apple GPUs
 * (Safari/Chrome in the browser, Dawn in Node) and as Vulkan/D3D12 elsewhere.
 *
 * This is the browser build (the package's `browser` condition): WebGPU comes from
 * `navigator.gpu`, and nothing here imports Node built-ins or Dawn. Importing it registers the
 * `webgpu` backend with @metal-lora/tensor (lazily: no device is opened until
 * `setBackend('webgpu')`).
 */
import { registerWebGPUBackend } from './register';

registerWebGPUBackend();

export * from './api';
