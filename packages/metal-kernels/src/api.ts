/// <reference path="./wgsl.d.ts" />
/**
 * The public API of @metal-lora/metal-kernels, without side effects: the entries (`./index` for
 * Node, `./browser` for browsers) register the backend and re-export this. The kernels' tuning
 * surface (forced configs, recorders, tile constants) is `@metal-lora/metal-kernels/internal`.
 */

export { type DispatchSpec, type GpuData, WebGPUBackend } from './backend';
export {
  type AdapterReport,
  type DawnBinding,
  DAWN_TOGGLES_ENV,
  GPU_EXPERIMENTAL_ENV,
  type GPUContext,
  hasWebGPU,
  requestGPU,
  type RequestGPUOptions,
  setDawnLoader,
  subgroupMatrixConfigsText,
} from './device';
export { gemmDevice, subgroupMatrixPath } from './gemm/record';
export { loraPlan, selectGemm } from './gemm/select';
export { DEFAULT_GEMM_DEVICE, type GemmDevice, type GemmOverrides, type GemmShape, type LoraPlan } from './gemm/types';
export { createWebGPUBackend, registerWebGPUBackend, registerWebGPUKernels, webgpuBackend } from './register';
