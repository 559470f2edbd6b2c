/**
 * metal-lora: the MetalLoRA-TS umbrella package. Fused LoRA kernels on WebGPU (Metal on Apple
 * Silicon), a small training stack, and adapters exchanged with MLX and PEFT.
 *
 * This is the Node entry: everything the browser entry has, plus files by path (`saveAdapter`,
 * `loadAdapter`, `fuseAdapter`, `loadModel`, `saveModel`, the safetensors file helpers).
 * Importing it registers the webgpu backend (Dawn in Node); `await setBackend('auto')` picks it
 * where a hardware adapter exists.
 *
 * Each entry re-exports the packages itself: a re-export shared through a common chunk of the
 * build would be dropped from the entry (esbuild cannot list an external module's names).
 */
export * from '@metal-lora/adapter-io';
export { loadSafetensors, openSafetensors, readAdapterFiles, saveSafetensors, writeFileAtomic } from '@metal-lora/adapter-io/node';
export * from '@metal-lora/metal-kernels';
export * from '@metal-lora/nn';
export * from '@metal-lora/tensor';
export { applyAdapter, fuseAdapter, loadAdapter, loadFineTune, type RequantizedLayer, requantizeFused, saveAdapter, saveFineTune } from './adapters';
export { batchOf } from './batches';
export { type Batch, type BatchOptions, BatchPlan, iterateBatches } from './batching';
export { loadModel, saveModel } from './checkpoint';
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
export { loadDataset } from './dataset-files';
export { kitchenJournal, shipsLog } from './corpus';
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
  type LrSchedule,
  learningRateSchedule,
  type OptimizerName,
  type TrainingOptions,
  type TrainReport,
  type TrainingStore,
  type TrainResult,
} from './training';
export { fileStore, train } from './training-files';
// Both tensor and nn export valueAndGrad; nn's takes both forms (model, lossFn) and (fn, argnums).
export { valueAndGrad } from '@metal-lora/nn';
