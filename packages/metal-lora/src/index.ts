/**
 * metal-lora: the MetalLoRA-TS umbrella package. Fused LoRA kernels on WebGPU (Metal on Apple
 * Silicon), a small training stack, and adapters exchanged with MLX and PEFT.
 *
 * Importing it registers the webgpu backend; `await setBackend('auto')` picks it where an adapter
 * exists.
 */
import '@metal-lora/metal-kernels';

export * from '@metal-lora/adapter-io';
export { loadSafetensors, openSafetensors, readAdapterFiles, saveSafetensors } from '@metal-lora/adapter-io/node';
export { type AdapterReport, createWebGPUBackend, hasWebGPU, requestGPU, webgpuBackend } from '@metal-lora/metal-kernels';
export * from '@metal-lora/nn';
export * from '@metal-lora/tensor';
export { loadAdapter, mergeWeights, saveAdapter } from './adapters';
export { valueAndGrad } from './value-and-grad';
export { type LoadedModel, loadModel, saveModel } from './checkpoint';
export { generate } from './generate';
export { CharTokenizer } from './tokenizer';
