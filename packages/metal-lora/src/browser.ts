/**
 * metal-lora in the browser (the package's `browser` condition, also `metal-lora/browser`): the
 * whole library without Node built-ins or Dawn. WebGPU comes from `navigator.gpu`; files come
 * from fetched bytes, `Blob`s and downloads instead of paths (`modelFromFiles`, `adapterFromBlobs`,
 * `fetchAdapter`, `downloadAdapter`).
 *
 * Each entry re-exports the packages itself: a re-export shared through a common chunk of the
 * build would be dropped from the entry (esbuild cannot list an external module's names).
 */
export * from '@metal-lora/adapter-io';
export * from '@metal-lora/metal-kernels';
export * from '@metal-lora/nn';
export * from '@metal-lora/tensor';
export { batchOf } from './batches';
export { type Batch, type BatchOptions, BatchPlan, iterateBatches } from './batching';
export { kitchenJournal, shipsLog } from './corpus';
export {
  type DataFeatures,
  type DataFormat,
  type Dataset,
  type DatasetOptions,
  type DatasetSplit,
  datasetFromJsonl,
  describeSplit,
  type Example,
  type SplitName,
} from './dataset';
export { encodePrompt, type GenerateOptions, type GenerateResult, generate, generateBatch, type Prompt } from './generate';
export { type GenerationDefaults, type LoadedModel, type LoadOptions, modelFromFiles } from './model-bytes';
export { adapterFiles, modelAdapter } from './lora-adapter';
export {
  type FolderFile,
  fetchModelFolder,
  type ModelFolder,
  type ModelFolderInfo,
  modelFromBlobs,
  type OpenOptions,
  openModelFolder,
} from './model-folder';
export { type ChatMessage, HFTokenizer, type TokenizerFiles } from './hf-tokenizer';
export { CharTokenizer, type TextTokenizer, tokenizerFromFiles } from './tokenizer';
export { evaluate, type TrainOptions, trainLoop } from './trainer';
export {
  type EvalReport,
  evaluateLoss,
  learningRateSchedule,
  type LrSchedule,
  type OptimizerName,
  type TrainingOptions,
  type TrainingStore,
  type TrainReport,
  type TrainResult,
  train,
} from './training';
// Both tensor and nn export valueAndGrad; nn's takes both forms (model, lossFn) and (fn, argnums).
export { valueAndGrad } from '@metal-lora/nn';
