import '@metal-lora/metal-kernels'; // registers the webgpu backend (tests only)
import * as T from '@metal-lora/tensor';
import { assertClose } from '@metal-lora/tensor/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';
import { base, CONFIGS } from './configs';
import { type LlamaConfig, LlamaForCausalLM, linearToLoRALayers, valueAndGrad } from '../src/index';

const configs: Record<string, LlamaConfig> = { llama: CONFIGS.llama, 'mistral window 3': CONFIGS['mistral window 3'], gemma3: CONFIGS.gemma3 };

/** Loss and LoRA gradients of one step, with or without checkpointing, from the same RNG state (dropout 0.2). */
async function step(
  config: LlamaConfig,
  checkpointing: boolean,
  rows: number,
  length: number,
  recomputeAttention = true,
  fusedAttention: boolean | 'auto' = false,
) {
  const model = new LlamaForCausalLM(config, { seed: 4 });
  linearToLoRALayers(model, { rank: 3, dropout: 0.2, seed: 5 });
  for (const [, p] of model.trainableParameters()) p.assign(T.randn([...p.shape], { seed: p.size, std: 0.2 }));
  model.gradientCheckpointing = checkpointing;
  model.recomputeAttention = recomputeAttention;
  model.fusedAttention = fusedAttention;
  const ids = T.tensor(
    Int32Array.from({ length: rows * length }, (_, i) => (i * 7 + 3) % config.vocab_size),
    [rows, length],
    { dtype: 'int32' },
  );
  const targets = T.tensor(
    Int32Array.from({ length: rows * length }, (_, i) => (i * 5 + 1) % config.vocab_size),
    [rows, length],
    { dtype: 'int32' },
  );
  T.manualSeed(11);
  const backend = T.getBackend();
  backend.resetPeak();
  const before = backend.memory().liveBytes;
  const [loss, grads] = T.tidy(() => valueAndGrad(model, (x: T.Tensor, y: T.Tensor) => model.loss(x, y))(ids, targets));
  const peak = backend.memory().peakBytes - before;
  const values = Object.fromEntries(await Promise.all(Object.entries(grads).map(async ([k, g]) => [k, Float64Array.from(await g.data())] as const)));
  return { loss: await loss.item(), grads: values, peak };
}

describe('gradient checkpointing per decoder block', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  for (const [name, config] of Object.entries(configs)) {
    it(`${name} (cpu): the same loss and LoRA gradients (dropout included)`, async () => {
      await T.setBackend('cpu');
      const plain = await step(config, false, 2, 9);
      const checkpointed = await step(config, true, 2, 9);
      expect(checkpointed.loss).toBe(plain.loss);
      expect(Object.keys(checkpointed.grads).sort()).toEqual(Object.keys(plain.grads).sort());
      for (const [k, g] of Object.entries(plain.grads)) assertClose(checkpointed.grads[k], g, { atol: 1e-6, rtol: 1e-5 }, `${name}: ${k}`);
    });
  }

  gpuIt('webgpu: the same gradients, and a lower allocator peak', async () => {
    await T.setBackend('webgpu');
    const config = { ...base, hidden_size: 64, intermediate_size: 160, num_hidden_layers: 6 };
    const plain = await step(config, false, 4, 64);
    const checkpointed = await step(config, true, 4, 64);
    expect(checkpointed.loss).toBeCloseTo(plain.loss, 5);
    for (const [k, g] of Object.entries(plain.grads)) assertClose(checkpointed.grads[k], g, { atol: 2e-5, rtol: 2e-4 }, k);
    console.log(`allocator peak of a step: ${plain.peak} bytes plain, ${checkpointed.peak} checkpointed`);
    expect(checkpointed.peak).toBeLessThan(plain.peak * 0.7);
  });
});

describe('attention probabilities recomputed in backward (recomputeAttention)', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  for (const [name, config] of Object.entries(configs)) {
    it(`${name} (cpu): the loss and LoRA gradients of the model that keeps them`, async () => {
      await T.setBackend('cpu');
      const kept = await step(config, false, 2, 9, false);
      const recomputed = await step(config, false, 2, 9, true);
      expect(recomputed.loss).toBe(kept.loss);
      for (const [k, g] of Object.entries(kept.grads)) assertClose(recomputed.grads[k], g, { atol: 1e-6, rtol: 1e-5 }, `${name}: ${k}`);
    });
  }

  gpuIt('webgpu: the same gradients, and a lower allocator peak', async () => {
    await T.setBackend('webgpu');
    const config = { ...base, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 3 };
    const kept = await step(config, false, 2, 128, false);
    const recomputed = await step(config, false, 2, 128, true);
    expect(recomputed.loss).toBeCloseTo(kept.loss, 5);
    for (const [k, g] of Object.entries(kept.grads)) assertClose(recomputed.grads[k], g, { atol: 2e-5, rtol: 2e-4 }, k);
    // Each block kept 2 × heads × 128 × 128 probabilities (f32) from forward to backward.
    const probabilities = 2 * config.num_attention_heads * 128 * 128 * 4;
    console.log(`allocator peak of a step: ${kept.peak} bytes keeping the probabilities, ${recomputed.peak} recomputing them`);
    expect(recomputed.peak).toBeLessThanOrEqual(kept.peak - probabilities);
  });
});

describe('attention as one fused op (fusedAttention)', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  for (const [name, config] of Object.entries(configs)) {
    it(`${name} (cpu): the loss and LoRA gradients of the composed attention, with and without checkpointing`, async () => {
      await T.setBackend('cpu');
      for (const checkpointing of [false, true]) {
        const composed = await step(config, checkpointing, 2, 9);
        const fused = await step(config, checkpointing, 2, 9, true, true);
        expect(fused.loss).toBeCloseTo(composed.loss, 5);
        for (const [k, g] of Object.entries(composed.grads)) assertClose(fused.grads[k], g, { atol: 1e-5, rtol: 1e-4 }, `${name}: ${k}`);
      }
    });
  }

  it("'auto' (the default) composes on the CPU backend", async () => {
    await T.setBackend('cpu');
    expect(new LlamaForCausalLM(CONFIGS.llama).fusedAttention).toBe('auto');
    const auto = await step(CONFIGS.llama, false, 2, 9, true, 'auto');
    const composed = await step(CONFIGS.llama, false, 2, 9, true, false);
    expect(auto.loss).toBe(composed.loss);
    for (const [k, g] of Object.entries(composed.grads)) expect(Array.from(auto.grads[k])).toEqual(Array.from(g));
  });

  gpuIt("webgpu: the same gradients, and a lower allocator peak than recomputing the probabilities; 'auto' fuses", async () => {
    await T.setBackend('webgpu');
    const config = { ...base, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 3 };
    const recomputed = await step(config, false, 2, 128, true);
    const fused = await step(config, false, 2, 128, true, true);
    const auto = await step(config, false, 2, 128, true, 'auto');
    expect(auto.loss).toBe(fused.loss);
    for (const [k, g] of Object.entries(fused.grads)) expect(Array.from(auto.grads[k])).toEqual(Array.from(g));
    expect(fused.loss).toBeCloseTo(recomputed.loss, 4);
    // f32 through three blocks of random LoRA weights: each GPU path's gradients stand up to 4e-4 (of
    // values up to 3.3) from the CPU's; the op alone matches float64 to ~1e-6 (metal-kernels' tests).
    for (const [k, g] of Object.entries(recomputed.grads)) assertClose(fused.grads[k], g, { atol: 1e-4, rtol: 1e-3 }, k);
    console.log(`allocator peak of a step: ${recomputed.peak} bytes recomputing the probabilities, ${fused.peak} fused`);
    expect(fused.peak).toBeLessThan(recomputed.peak);
  });
});
