/// <reference path="./wgsl.d.ts" />
/**
 * `@metal-lora/metal-kernels/internal`: the kernels' tuning surface for benchmarks and tests —
 * the recorders behind each kernel, tile constants and the selector's parts (configs are forced
 * through `WebGPUBackend.overrides`). No
 * stability promise: these change whenever the kernels do. (It registers nothing; import the
 * package itself for the backend.)
 */
export { gpuBytesPerElement, sizeClass, wgslType } from './backend';
export { recordGemvCols } from './gemm/gemv-cols';
export { recordGemvRows } from './gemm/gemv-rows';
export { type LoraDualRoles, loraDualGrid, recordLoraDual } from './gemm/lora-dual';
export { recordGemm } from './gemm/record';
export {
  bigTile,
  chooseGemm,
  gemvChoice,
  LORA_DUAL_MAX_RANK,
  LORA_TILE,
  type LoraBackward,
  type LoraDims,
  type LoraForward,
  type LoraNeeds,
  loraDualApplies,
  quantConfig,
  quantLoraFuses,
  selectLoraBackward,
  selectLoraForward,
  selectQLoraForward,
  sgmatConfig,
  sgmatPrefetches,
  sgmatQuantApplies,
  sgmatStorageBytes,
  subgroupMatrixChoice,
  TILED_VARIANTS,
  VEC4_128,
  VEC4_128_G4,
  VEC4_128x32,
  VEC4_128x64,
  VEC4_128x64_T128,
  VEC4_32x128,
  VEC4_64x128,
} from './gemm/select';
export { subgroupMatrixMajorness } from './device';
export { sgmatShader } from './gemm/sgmat';
export {
  fixedSubgroupSize,
  type GemmConfig,
  type GemmOperands,
  type GemmTarget,
  type GemvColsConfig,
  type GemvConfig,
  type GemvRowsConfig,
  gemvColsStream,
  gemvRowBucket,
  gemvRowsStorage,
  gemvRowsStream,
  type Product,
  type SgmatConfig,
  subgroupFlushFits,
  type TiledConfig,
  tiledStorageBytes,
  type Vec4Config,
  vec4Aligned,
  withSplits,
} from './gemm/types';
export { specialize } from './shader';
