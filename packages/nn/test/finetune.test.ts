import '@metal-lora/metal-kernels'; // registers the webgpu backend (tests only: nn itself never imports it)
import * as T from '@metal-lora/tensor';
import type { Tensor } from '@metal-lora/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { skipWithoutAdapter } from '../../../test-support/gpu';
import { Adam, crossEntropy, LlamaForCausalLM, linearToLoRALayers, valueAndGrad } from '../src/index';

/** Sequences where token[t+1] = (3·token[t] + 1) mod 32: a rule the random base model does not know. */
function batch(step: number, size: number, length: number): { inputs: Tensor; targets: Tensor } {
  const ids = new Int32Array(size * (length + 1));
  for (let b = 0; b < size; b++) {
    let tok = (step * 7 + b * 13) % 32;
    for (let t = 0; t <= length; t++) {
      ids[b * (length + 1) + t] = tok;
      tok = (3 * tok + 1) % 32;
    }
  }
  const all = T.tensor(ids, [size, length + 1]);
  return { inputs: T.slice(all, [0, 0], [size, length]), targets: T.slice(all, [0, 1], [size, length + 1]) };
}

async function fineTune(
  backendName: 'cpu' | 'webgpu',
  dtype: T.DType = 'float32',
): Promise<{ first: number; last: number; baseUnchanged: boolean; losses: number[] }> {
  await T.setBackend(backendName);
  T.manualSeed(11);
  // A base with weights of some size, as a trained one has, so that LoRA has something to steer
  // (transformers' default initializer_range, 0.02, leaves the logits near uniform).
  const model = new LlamaForCausalLM(
    { vocab_size: 32, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.3 },
    { seed: 3, dtype },
  );
  linearToLoRALayers(model, { numLayers: 2, rank: 8, scale: 2, seed: 5 });
  const frozen = model.namedParameters().filter(([, p]) => !p.requiresGrad);
  const before = await Promise.all(frozen.map(async ([, p]) => Float32Array.from(await p.data())));
  const optimizer = new Adam(model, { lr: 2e-2 });
  const step = valueAndGrad(model, (x: Tensor, y: Tensor) => crossEntropy(model.forward(x), y));
  const losses: number[] = [];
  for (let i = 0; i < 30; i++) {
    const { inputs, targets } = batch(i, 4, 8);
    const loss = T.tidy(() => {
      const [l, grads] = step(inputs, targets);
      optimizer.update(model, grads);
      return l;
    });
    losses.push(await loss.item());
    loss.dispose();
  }
  const after = await Promise.all(frozen.map(async ([, p]) => Float32Array.from(await p.data())));
  const baseUnchanged = before.every((b, i) => b.every((v, j) => Object.is(v, after[i][j])));
  const first = (losses[0] + losses[1] + losses[2]) / 3;
  const last = (losses[27] + losses[28] + losses[29]) / 3;
  return { first, last, baseUnchanged, losses };
}

describe('LoRA fine-tuning of a small Llama on each backend', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  it('cpu: the loss falls and the base weights stay bit-identical', async () => {
    const r = await fineTune('cpu');
    expect(r.baseUnchanged).toBe(true);
    expect(r.last).toBeLessThan(r.first * 0.7);
  });
  it('webgpu: a target outside the classes makes the loss NaN, not a smaller number', async (ctx) => {
    try {
      await T.setBackend('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    const logits = T.tensor([
      [2, 1, 0, 1, 2],
      [0, 0, 3, 1, 1],
    ]);
    expect(await crossEntropy(logits, T.tensor([0, 2], undefined, { dtype: 'int32' })).item()).toBeCloseTo(
      -(2 - Math.log(2 * Math.exp(2) + 2 * Math.E + 1) + 3 - Math.log(2 + Math.exp(3) + 2 * Math.E)) / 2,
      4,
    );
    expect(await crossEntropy(logits, T.tensor([0, 7], undefined, { dtype: 'int32' })).item()).toBeNaN();
    expect(await crossEntropy(logits, T.tensor([-100, 2], undefined, { dtype: 'int32' })).item()).toBeCloseTo(-(3 - Math.log(2 + Math.exp(3) + 2 * Math.E)), 4);
  });
  it('webgpu: the same, through the fused kernels', async (ctx) => {
    let r: Awaited<ReturnType<typeof fineTune>>;
    try {
      r = await fineTune('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    expect(r.baseUnchanged).toBe(true);
    expect(r.last).toBeLessThan(r.first * 0.7);
  });
});

describe('LoRA fine-tuning in float16 (Adam steps an f32 copy of each half parameter)', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  for (const backend of ['cpu', 'webgpu'] as const)
    it(`${backend}: never NaN, the loss falls, and it follows the f32 run`, async (ctx) => {
      let half: Awaited<ReturnType<typeof fineTune>>;
      let full: Awaited<ReturnType<typeof fineTune>>;
      try {
        full = await fineTune(backend, 'float32');
        half = await fineTune(backend, 'float16');
      } catch (error) {
        if (backend === 'cpu') throw error;
        skipWithoutAdapter(ctx, error);
      }
      expect(half.losses.every(Number.isFinite)).toBe(true);
      expect(half.baseUnchanged).toBe(true);
      expect(half.last).toBeLessThan(half.first * 0.7);
      // f16 rounding of the weights and activations: within 5% of the f32 run's first loss at every step
      // (the two runs drift apart as steps compound their rounding, as any two precisions do).
      const worst = Math.max(...half.losses.map((l, i) => Math.abs(l - full.losses[i])));
      console.log(`${backend}: f16 against f32 losses, largest difference ${worst.toFixed(4)} of a first loss ${full.losses[0].toFixed(4)}`);
      expect(worst).toBeLessThan(0.05 * full.losses[0]);
    });
});
