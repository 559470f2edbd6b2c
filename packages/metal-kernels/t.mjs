import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
const device = await adapter.requestDevice({requiredFeatures: ['shader-f16','subgroups','timestamp-query']});
const n = 1000;
const out = device.createBuffer({ size: n*4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const module = device.createShaderModule({ code: `
        @group(0) @binding(0) var<storage, read_write> y: array<f32>;
        @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
          if (id.x < arrayLength(&y)) { y[id.x] = f32(id.x); }
        }`});
console.log('module');
const pipeline = device.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
console.log('pipeline');
const bind = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{binding:0, resource:{buffer: out}}] });
const read = device.createBuffer({ size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass(); pass.setPipeline(pipeline); pass.setBindGroup(0, bind); pass.dispatchWorkgroups(16); pass.end();
enc.copyBufferToBuffer(out, 0, read, 0, n * 4);
device.queue.submit([enc.finish()]);
console.log('submitted');
await read.mapAsync(GPUMapMode.READ);
console.log(new Float32Array(read.getMappedRange()).slice(0, 5));
