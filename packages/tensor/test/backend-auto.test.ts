import { afterEach, describe, expect, it, vi } from 'vitest';
import { type Backend, getBackend, registerBackend, setBackend, ValueError } from '../src/index';

/** A stand-in GPU backend: the CPU backend's storage under another name. */
async function fakeGpu(software: boolean): Promise<Backend> {
  const cpu = await setBackend('cpu');
  return {
    ...cpu,
    name: 'webgpu',
    software,
    upload: cpu.upload.bind(cpu),
    read: cpu.read.bind(cpu),
    free: cpu.free.bind(cpu),
    memory: cpu.memory.bind(cpu),
    resetPeak: cpu.resetPeak.bind(cpu),
  };
}

describe("setBackend('auto')", () => {
  afterEach(async () => {
    vi.restoreAllMocks();
    await setBackend('cpu');
  });

  it("names the import that registers 'webgpu' when it is missing", async () => {
    await expect(setBackend('webgpu')).rejects.toThrow(ValueError);
    await expect(setBackend('webgpu')).rejects.toThrow(
      "setBackend: unknown backend ('webgpu' is not registered: import '@metal-lora/metal-kernels' (or 'metal-lora') first: importing it registers the webgpu backend); expected one of cpu, got 'webgpu'",
    );
  });

  it('takes a hardware GPU backend, and the CPU over a software one, saying why once', async () => {
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    registerBackend('webgpu', await fakeGpu(false));
    expect((await setBackend('auto')).name).toBe('webgpu');
    expect(warn).not.toHaveBeenCalled();

    registerBackend('webgpu', await fakeGpu(true));
    expect((await setBackend('auto')).name).toBe('cpu');
    expect(getBackend().name).toBe('cpu');
    expect((await setBackend('auto')).name).toBe('cpu');
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0][0]).toMatch(/^metal-lora: setBackend\('auto'\) chose the cpu backend: the WebGPU adapter is a software renderer/);
    // Asked for by name, the software backend is used.
    expect((await setBackend('webgpu')).name).toBe('webgpu');
  });

  it('does not open a backend whose hint rules it out, and falls back when opening fails', async () => {
    const opened = vi.fn(async () => fakeGpu(false));
    registerBackend('webgpu', opened, { skipReason: () => 'no GPU device here' });
    expect((await setBackend('auto')).name).toBe('cpu');
    expect(opened).not.toHaveBeenCalled();
    registerBackend('webgpu', async () => {
      throw new Error('no adapter');
    });
    expect((await setBackend('auto')).name).toBe('cpu');
  });
});
