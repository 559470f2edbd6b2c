/// <reference path="./wgsl.d.ts" />
/**
 * Everything @metal-lora/metal-kernels exports, without side effects: the entries (`./index` for
 * Node, `./browser` for browsers) register the backend and re-export this.
 */

export { type DispatchSpec, type GpuData, gpuBytesPerElement, sizeClass, WebGPUBackend, wgslType } from './backend';
export { type AdapterReport, type DawnBinding, type GPUContext, hasWebGPU, requestGPU, type RequestGPUOptions, setDawnLoader } from './device';
export {
  forceGemmConfig,
  type GemmConfig,
  type GemmDevice,
  type GemmShape,
  type GemvColsConfig,
  type GemvConfig,
  type GemvRowsConfig,
  recordGemm,
  selectGemm,
  TILED_VARIANTS,
  type TiledConfig,
  tiledStorageBytes,
  VEC4_128,
  VEC4_128x64,
  VEC4_64x128,
  VEC4_128x32,
  VEC4_128x64_T128,
  VEC4_32x128,
  VEC4_128_G4,
  bigTile,
  gemvChoice,
  gemmDevice,
  gemvRowBucket,
  concatConfig,
  splitVec4Config,
  type Vec4Config,
  vec4Aligned,
  withSplits,
} from './gemm';
export { fixedSubgroupSize, gemvColsStream, gemvRowsStorage, gemvRowsStream, recordGemvCols, recordGemvRows, subgroupFlushFits } from './gemv';
export { forceLoraPlan, type LoraPlan, loraPlan } from './kernels/lora';
export { LORA_DUAL_MAX_RANK, type LoraDualRoles, loraDualApplies, loraDualGrid, recordLoraDual } from './kernels/lora-dual';
export { createWebGPUBackend, registerWebGPUBackend, registerWebGPUKernels, webgpuBackend } from './register';
export { recordSgmat, type SgmatConfig, sgmatShader, subgroupMatrixChoice } from './sgmat';
export { specialize } from './shader';
