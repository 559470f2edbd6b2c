/// <reference path="./wgsl.d.ts" />
/**
 * The public API of @metal-lora/metal-kernels, without side effects: the entries (`./index` for
 * Node, `./browser` for browsers) register the backend and re-export this. The kernels' tuning
 * surface (forced configs, recorders, tile constants) is `@metal-lora/metal-kernels/internal`.
 */

export { type DispatchSpec, type GpuData, WebGPUBackend } from './backend';
export { type AdapterReport, type DawnBinding, type GPUContext, hasWebGPU, requestGPU, type RequestGPUOptions, setDawnLoader } from './device';
export { type GemmShape, selectGemm } from './gemm';
export { type LoraPlan, loraPlan } from './kernels/lora';
export { createWebGPUBackend, registerWebGPUBackend, registerWebGPUKernels, webgpuBackend } from './register';
