/**
 * @metal-lora/metal-kernels: the WebGPU backend. WGSL kernels run as Metal shaders on Apple GPUs
 * (Dawn in Node, Safari/Chrome in the browser) and as Vulkan/D3D12 elsewhere.
 */
export { type AdapterReport, type GPUContext, hasWebGPU, requestGPU, type RequestGPUOptions } from './device';
