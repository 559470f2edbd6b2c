/**
 * @metal-lora/nn: modules, LoRA layers, a Llama-style model, optimizers and losses, on any backend
 * of @metal-lora/tensor (chosen at run time; this package never imports the kernels).
 */
export { Dropout, dropout, Embedding, LayerNorm, Linear, type ParamOptions, RMSNorm } from './layers';
export { llamaConfigFromJson, SUPPORTED_MODEL_TYPES } from './hf-config';
export {
  ACTIVATIONS,
  ARCHITECTURES,
  type ArchitectureTraits,
  architectureOf,
  LLAMA_CONFIG_LIMITS,
  type LlamaConfig,
  rotaryDimOf,
  validateLlamaConfig,
} from './config';
export { AttentionContext, KVCache } from './kv-cache';
export { Attention, DecoderLayer, type ForwardOptions, LlamaForCausalLM, LlamaModel, MLP } from './llama';
export { applyRope, type Llama3RopeScaling, type LinearRopeScaling, type RopeScaling, type RopeTables, ropeInverseFrequencies, ropeTables } from './rope';
export { linearToLoRALayers, LoRALinear, type LoRAOptions, mergeWeights, QuantizedLoRALinear, setAdapterEnabled } from './lora';
export { dequantizeModel, QuantizedEmbedding, type QuantizedLayerOptions, QuantizedLinear, quantizeModel } from './quantized';
export { type CrossEntropyOptions, crossEntropy, headCrossEntropy, mse } from './losses';
export { type LoadReport, Module, ModuleList } from './module';
export {
  Adam,
  type AdamOptions,
  AdamW,
  clipGradNorm,
  clipGradNormAsync,
  cosineDecay,
  type LearningRate,
  linearWarmup,
  Optimizer,
  SGD,
  type SGDOptions,
  warmupCosine,
} from './optim';
export { valueAndGrad } from './train';
export { type FinishReason, type GenerateIdsOptions, type GenerateIdsResult, generateIds, Sampler, type SamplingOptions, validateSampling } from './generate';
