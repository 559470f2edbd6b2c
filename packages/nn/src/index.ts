/**
 * @metal-lora/nn: modules, LoRA layers, a Llama-style model, optimizers and losses, on any backend
 * of @metal-lora/tensor (chosen at run time; this package never imports the kernels).
 */
export { Dropout, Embedding, LayerNorm, Linear, type ParamOptions, RMSNorm } from './layers';
export { llamaConfigFromJson, SUPPORTED_MODEL_TYPES } from './hf-config';
export {
  applyRope,
  Attention,
  DecoderLayer,
  LLAMA_CONFIG_LIMITS,
  type LlamaConfig,
  LlamaForCausalLM,
  LlamaModel,
  MLP,
  type RopeScaling,
  ropeInverseFrequencies,
  validateLlamaConfig,
} from './llama';
export { linearToLoRALayers, LoRALinear, type LoRAOptions, mergeWeights } from './lora';
export { crossEntropy, mse } from './losses';
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
