/** Runs a hand-written compute shader on the raw device (the smoke and hash tests): no backend, no pool. */

/**
 * Runs `code`'s `main` (workgroup size 64) over `n` invocations with `inputs` bound at 0.. and an
 * output of `n` 32-bit words, poisoned with NaN bits, bound after them; returns the output's bytes.
 * A validation error while recording or submitting throws.
 */
export async function runRawShader(device: GPUDevice, label: string, code: string, inputs: (Float32Array | Uint32Array)[], n: number): Promise<ArrayBuffer> {
  device.pushErrorScope('validation');
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const make = (data: Float32Array | Uint32Array, name: string) => {
    const buffer = device.createBuffer({ label: `${label} ${name}`, size: data.byteLength, usage });
    device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return buffer;
  };
  const out = make(new Uint32Array(n).fill(0x7fc00000), 'out (poisoned)');
  const buffers = [...inputs.map((data, i) => make(data, `in${i}`)), out];
  const module = device.createShaderModule({ label, code });
  const pipeline = device.createComputePipeline({ label, layout: 'auto', compute: { module, entryPoint: 'main' } });
  const bind = device.createBindGroup({
    label,
    layout: pipeline.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const read = device.createBuffer({ label: `${label} read`, size: n * 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder({ label });
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bind);
  pass.dispatchWorkgroups(Math.ceil(n / 64));
  pass.end();
  enc.copyBufferToBuffer(out, 0, read, 0, n * 4);
  device.queue.submit([enc.finish()]);
  const error = await device.popErrorScope();
  if (error) throw new Error(`${label}: ${error.message}`);
  await read.mapAsync(GPUMapMode.READ);
  const bytes = read.getMappedRange().slice(0);
  read.unmap();
  for (const b of [...buffers, read]) b.destroy();
  return bytes;
}
