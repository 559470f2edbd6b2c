/// <reference path="./wgsl.d.ts" />
/**
 * `@metal-lora/metal-kernels/internal`: the kernels' tuning surface for benchmarks and tests —
 * forced configs, the recorders behind each kernel, tile constants and the selector's helpers. No
 * stability promise: these change whenever the kernels do. (It registers nothing; import the
 * package itself for the backend.)
 */
export { gpuBytesPerElement, sizeClass, wgslType } from './backend';
export {
  bigTile,
  concatConfig,
  forceGemmConfig,
  type GemmConfig,
  type GemmDevice,
  type GemvColsConfig,
  type GemvConfig,
  type GemvRowsConfig,
  gemmDevice,
  gemvChoice,
  gemvRowBucket,
  recordGemm,
  splitVec4Config,
  TILED_VARIANTS,
  type TiledConfig,
  tiledStorageBytes,
  VEC4_128,
  VEC4_128_G4,
  VEC4_128x32,
  VEC4_128x64,
  VEC4_128x64_T128,
  VEC4_32x128,
  VEC4_64x128,
  type Vec4Config,
  vec4Aligned,
  withSplits,
} from './gemm';
export { fixedSubgroupSize, gemvColsStream, gemvRowsStorage, gemvRowsStream, recordGemvCols, recordGemvRows, subgroupFlushFits } from './gemv';
export { forceLoraPlan } from './kernels/lora';
export { LORA_DUAL_MAX_RANK, type LoraDualRoles, loraDualApplies, loraDualGrid, recordLoraDual } from './kernels/lora-dual';
export { recordSgmat, type SgmatConfig, sgmatShader, subgroupMatrixChoice } from './sgmat';
export { specialize } from './shader';
