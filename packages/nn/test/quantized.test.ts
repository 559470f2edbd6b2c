import '@metal-lora/metal-kernels'; // registers the webgpu backend (tests only: nn itself never imports it)
import * as T from '@metal-lora/tensor';
import type { Tensor } from '@metal-lora/tensor';
import { assertClose, TOLERANCES } from '@metal-lora/tensor/testing';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { skipWithoutAdapter } from '../../../test-support/gpu';
import {
  AdamW,
  crossEntropy,
  Embedding,
  Linear,
  LlamaForCausalLM,
  linearToLoRALayers,
  QuantizedEmbedding,
  QuantizedLinear,
  QuantizedLoRALinear,
  quantizeModel,
  valueAndGrad,
} from '../src/index';

const CONFIG = {
  vocab_size: 48,
  hidden_size: 64,
  intermediate_size: 96,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  initializer_range: 0.3,
  tie_word_embeddings: true,
};

function ids(step: number, rows: number, length: number): { inputs: Tensor; targets: Tensor } {
  const all = Int32Array.from({ length: rows * (length + 1) }, (_, i) => (step * 5 + i * 7 + ((i * i) % 3)) % CONFIG.vocab_size);
  const at = (o: number) => Int32Array.from({ length: rows * length }, (_, i) => all[Math.floor(i / length) * (length + 1) + (i % length) + o]);
  return { inputs: T.tensor(at(0), [rows, length], { dtype: 'int32' }), targets: T.tensor(at(1), [rows, length], { dtype: 'int32' }) };
}

/** The same model with every quantized layer replaced by a float one holding its dequantized weights. */
function dequantizedTwin(model: LlamaForCausalLM): LlamaForCausalLM {
  const twin = new LlamaForCausalLM(model.config, { seed: 1 });
  const weights: Record<string, Tensor> = {};
  for (const [path, m] of model.namedModules()) {
    if (m instanceof QuantizedLinear || m instanceof QuantizedEmbedding) weights[`${path}.weight`] = m.dequantized();
    else if (m instanceof Linear || m instanceof Embedding || path.endsWith('norm'))
      for (const [n, p] of m.namedParameters()) if (!n.includes('.')) weights[`${path}.${n}`] = p;
  }
  twin.loadWeights(weights, { strict: false });
  return twin;
}

describe('quantized layers and models (MLX affine)', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });

  for (const backend of ['cpu', 'webgpu'] as const) {
    it(`${backend}: quantizeModel packs every Linear and the embedding; logits equal a float model of the dequantized weights`, async (ctx) => {
      try {
        await T.setBackend(backend);
      } catch (error) {
        skipWithoutAdapter(ctx, error);
      }
      const model = new LlamaForCausalLM(CONFIG, { seed: 3 });
      const paths = await quantizeModel(model, { bits: 4, groupSize: 32 });
      expect(paths).toContain('model.embed_tokens');
      expect(paths).toContain('model.layers.1.mlp.down_proj');
      expect(paths).toHaveLength(1 + 2 * 7);
      expect(model.config.quantization).toEqual({ group_size: 32, bits: 4, mode: 'affine' });
      expect(model.trainableParameters().filter(([n]) => /\.(weight|scales|biases)$/.test(n) && n.includes('proj'))).toEqual([]);
      const { inputs } = ids(0, 2, 9);
      model.eval();
      const twin = dequantizedTwin(model);
      twin.eval();
      assertClose(await model.forward(inputs).data(), await twin.forward(inputs).data(), { atol: 2e-4, rtol: 2e-4 });
      // 4-bit weights at a quarter of the float ones' bytes, plus one scale and bias per 32.
      const bytes = (m: LlamaForCausalLM) => m.namedParameters().reduce((n, [, p]) => n + p.size * 4, 0);
      expect(bytes(model) / bytes(twin)).toBeLessThan(0.25);
    });
  }

  it('QLoRA: LoRA over the quantized layers trains the adapter only, the packed weights stay as they were, and merged() equals the forward', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(CONFIG, { seed: 3 });
    await quantizeModel(model, { bits: 4, groupSize: 64 });
    const converted = linearToLoRALayers(model, { rank: 4, scale: 2, seed: 7 });
    expect(converted).toHaveLength(14);
    const layer = model.getModule(converted[0]);
    expect(layer).toBeInstanceOf(QuantizedLoRALinear);
    // unfreeze() reaches the adapter, never the packed parts.
    model.unfreeze();
    const packedTrainable = model.trainableParameters().filter(([n, p]) => p.dtype === 'int32' || n.endsWith('.scales') || n.endsWith('.biases'));
    expect(packedTrainable).toEqual([]);
    // (down_proj's input, 96, is no multiple of 64: it stayed a float Linear, as mlx-lm leaves it.)
    expect(model.getModule('model.layers.0.mlp.down_proj')).not.toBeInstanceOf(QuantizedLoRALinear);
    model.freeze();
    model.unfreeze(['loraA', 'loraB']);
    const packed = Array.from(
      model
        .getModule('model.layers.0.self_attn.q_proj')!
        .namedParameters()
        .find(([n]) => n === 'weight')![1]
        .dataSync(),
    );
    const optimizer = new AdamW(model, { lr: 3e-2 });
    const step = valueAndGrad(model, (x: Tensor, y: Tensor) => model.loss(x, y));
    const losses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const { inputs, targets } = ids(0, 2, 12);
      const loss = T.tidy(() => {
        const [l, grads] = step(inputs, targets);
        optimizer.update(model, grads);
        return l;
      });
      losses.push(loss.itemSync());
      loss.dispose();
    }
    expect(losses.every(Number.isFinite)).toBe(true);
    expect(losses[11]).toBeLessThan(losses[0] - 0.1);
    expect(
      Array.from(
        model
          .getModule('model.layers.0.self_attn.q_proj')!
          .namedParameters()
          .find(([n]) => n === 'weight')![1]
          .dataSync(),
      ),
    ).toEqual(packed);
    // The trained adapter folded into a float weight gives the same output.
    const q = model.getModule('model.layers.1.mlp.up_proj') as QuantizedLoRALinear;
    q.eval();
    const x = T.randn([3, 64], { seed: 2 });
    assertClose(q.merged().forward(x).dataSync(), q.forward(x).dataSync(), TOLERANCES.float32);
    // Switched off, it is its quantized base exactly.
    q.enabled = false;
    expect(Array.from(q.forward(x).dataSync())).toEqual(Array.from(q.base.forward(x).dataSync()));
    q.enabled = true;
  });

  it('model.loss reads a quantized head in chunks (tied and untied): the loss and LoRA gradients of the full logits', async () => {
    await T.setBackend('cpu');
    for (const tie of [true, false]) {
      const model = new LlamaForCausalLM({ ...CONFIG, tie_word_embeddings: tie }, { seed: 4 });
      await quantizeModel(model, { bits: 8, groupSize: 32 });
      linearToLoRALayers(model, { rank: 2, scale: 1, seed: 3 });
      // A non-zero B, so that the LoRA gradients reach A too.
      for (const [name, p] of model.trainableParameters()) if (name.endsWith('loraB')) p.assign(T.randn([...p.shape], { seed: 9, std: 0.1 }));
      const { inputs, targets } = ids(1, 2, 7);
      const run = (chunked: boolean) => {
        const step = valueAndGrad(model, (x: Tensor, y: Tensor) => (chunked ? model.loss(x, y) : crossEntropy(model.forward(x), y)));
        const [loss, grads] = step(inputs, targets);
        return { loss: loss.itemSync(), grads: Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.dataSync()])) };
      };
      // The chunked path never forms the logits through the model's forward.
      const forward = vi.spyOn(model, 'forward');
      const chunked = run(true);
      expect(forward).not.toHaveBeenCalled();
      forward.mockRestore();
      const whole = run(false);
      expect(chunked.loss).toBeCloseTo(whole.loss, 5);
      for (const [k, g] of Object.entries(whole.grads)) assertClose(chunked.grads[k], g, TOLERANCES.float32, `${tie ? 'tied' : 'untied'} ${k}`);
    }
  });

  it('refuses layers the groups do not divide, and packed parts of the wrong shape', () => {
    expect(() => new QuantizedLinear(48, 8, { bits: 4, groupSize: 32 })).toThrow(
      'QuantizedLinear: the input dimension must be a multiple of the group size 32; expected a multiple of 32, got 48',
    );
    const q = T.quantize(T.randn([8, 64], { seed: 1 }), { bits: 4, groupSize: 32 });
    expect(() => new QuantizedLinear(64, 8, { bits: 8, groupSize: 32, quantized: q })).toThrow(
      /QuantizedLinear: the packed weight does not fit 8 × 64 at 8 bits/,
    );
  });
});
