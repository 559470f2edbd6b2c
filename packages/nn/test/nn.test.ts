import { readFileSync } from 'node:fs';
import * as T from '@metal-lora/tensor';
import { ShapeError, type Tensor, ValueError } from '@metal-lora/tensor';
import { assertClose, gradCheck, randomTensor } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import {
  Adam,
  AdamW,
  applyRope,
  clipGradNorm,
  cosineDecay,
  crossEntropy,
  Dropout,
  Embedding,
  LayerNorm,
  Linear,
  type LlamaConfig,
  LlamaForCausalLM,
  linearToLoRALayers,
  LoRALinear,
  linearWarmup,
  mergeWeights,
  mse,
  RMSNorm,
  SGD,
  setAdapterEnabled,
  valueAndGrad,
  warmupCosine,
} from '../src/index';

const tiny: LlamaConfig = {
  vocab_size: 32,
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 3,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
};

describe('Module tree', () => {
  const model = new LlamaForCausalLM(tiny, { seed: 1 });
  it('names parameters like Hugging Face / MLX Llama checkpoints', () => {
    const names = model.namedParameters().map(([n]) => n);
    expect(names).toContain('model.embed_tokens.weight');
    expect(names).toContain('model.layers.0.self_attn.q_proj.weight');
    expect(names).toContain('model.layers.2.mlp.down_proj.weight');
    expect(names).toContain('model.layers.1.post_attention_layernorm.weight');
    expect(names).toContain('model.norm.weight');
    expect(names).toContain('lm_head.weight');
    expect(model.stateDict()['model.layers.0.self_attn.k_proj.weight'].shape).toEqual([8, 16]); // 2 KV heads × 4
  });
  it('freeze / unfreeze by key, train / eval', () => {
    model.freeze();
    expect(model.trainableParameters()).toHaveLength(0);
    model.unfreeze(['model.norm']);
    expect(model.trainableParameters().map(([n]) => n)).toEqual(['model.norm.weight']);
    model.unfreeze(['q_proj.weight']);
    expect(model.trainableParameters()).toHaveLength(4);
    expect(() => model.freeze(['nothing_like_this'])).toThrow(ValueError);
    model.eval();
    expect(model.namedModules().every(([, m]) => !m.training)).toBe(true);
    model.train();
  });
  it('loadWeights reports missing, unexpected and mis-shaped keys; strict throws', () => {
    const other = new LlamaForCausalLM(tiny, { seed: 2 });
    const weights = { ...other.stateDict() };
    const report = model.loadWeights(weights);
    expect(report).toEqual({ missing: [], unexpected: [], mismatched: [] });
    expect(Array.from(model.stateDict()['model.norm.weight'].dataSync())).toEqual(Array.from(other.stateDict()['model.norm.weight'].dataSync()));
    const broken = { ...weights, extra: T.zeros([1]), 'model.norm.weight': T.zeros([3]) };
    delete (broken as Record<string, Tensor>)['lm_head.weight'];
    expect(() => model.loadWeights(broken)).toThrow(ShapeError);
    const lax = model.loadWeights(broken, { strict: false });
    expect(lax.missing).toEqual(['lm_head.weight']);
    expect(lax.unexpected).toEqual(['extra']);
    expect(lax.mismatched[0]).toMatchObject({ name: 'model.norm.weight', expected: [16], got: [3] });
  });
});

describe('layers', () => {
  it('Linear, Embedding, RMSNorm, LayerNorm compute what they should', () => {
    const lin = new Linear(3, 2, { bias: true, seed: 4 });
    const x = randomTensor([2, 5, 3], 1);
    const manual = T.add(T.matmul(T.reshape(x, [10, 3]), lin.weight, { transposeB: true }), lin.bias!);
    assertClose(lin.forward(x).dataSync(), manual.dataSync(), { rtol: 1e-6, atol: 1e-7 });
    const emb = new Embedding(10, 4, { seed: 2 });
    expect(emb.forward(T.tensor([[3, 3]], undefined, { dtype: 'int32' })).shape).toEqual([1, 2, 4]);
    const norm = new RMSNorm(4).forward(T.tensor([[1, 2, 3, 4]]));
    const rms = Math.sqrt((1 + 4 + 9 + 16) / 4 + 1e-5);
    assertClose(
      norm.dataSync(),
      [1, 2, 3, 4].map((v) => v / rms),
      { rtol: 1e-6, atol: 0 },
    );
    const ln = new LayerNorm(4).forward(T.tensor([[1, 2, 3, 4]]));
    assertClose(ln.dataSync(), [-1.3416355, -0.4472118, 0.4472118, 1.3416355], { rtol: 1e-5, atol: 1e-6 });
  });
  it('Dropout drops in training only', () => {
    const d = new Dropout(0.5);
    const x = T.ones([1000]);
    const y = Array.from(d.forward(x).dataSync());
    expect(y.filter((v) => v === 0).length).toBeGreaterThan(400);
    expect(y.filter((v) => v === 2).length).toBeGreaterThan(400);
    d.eval();
    expect(d.forward(x)).toBe(x);
  });
  it('RoPE rotates pairs (i, i + d/2) by position-dependent angles', () => {
    const x = randomTensor([1, 1, 3, 4], 5, { dtype: 'float64' });
    const v = x.dataSync();
    const y = applyRope(x, 100).dataSync();
    const t = 2;
    const angle = t / 100 ** ((2 * 1) / 4); // pair i = 1 at position 2
    const [a, b] = [v[t * 4 + 1], v[t * 4 + 3]];
    expect(y[t * 4 + 1]).toBeCloseTo(a * Math.cos(angle) - b * Math.sin(angle), 12);
    expect(y[t * 4 + 3]).toBeCloseTo(b * Math.cos(angle) + a * Math.sin(angle), 12);
  });
  it('attention is causal: earlier outputs ignore later tokens', () => {
    const model = new LlamaForCausalLM(tiny, { seed: 3 });
    const a = model.forward(T.tensor([[1, 2, 3, 4]], undefined, { dtype: 'int32' })).dataSync();
    const b = model.forward(T.tensor([[1, 2, 9, 9]], undefined, { dtype: 'int32' })).dataSync();
    assertClose(b.slice(0, 2 * 32), a.slice(0, 2 * 32), { rtol: 1e-5, atol: 1e-6 });
    expect(Array.from(b.slice(2 * 32))).not.toEqual(Array.from(a.slice(2 * 32)));
  });
  it('model.loss equals crossEntropy of the logits, value and LoRA gradients, ignored targets included', () => {
    for (const tied of [true, false]) {
      const model = new LlamaForCausalLM({ ...tiny, tie_word_embeddings: tied }, { seed: 4, dtype: 'float64' });
      linearToLoRALayers(model, { rank: 2, seed: 3 });
      for (const [, p] of model.trainableParameters()) if (p.shape[1] === 2) p.assign(randomTensor([...p.shape], 8, { dtype: 'float64' }));
      const ids = T.tensor(
        [
          [1, 2, 3, 4, 5],
          [6, 7, 8, 9, 10],
        ],
        undefined,
        { dtype: 'int32' },
      );
      const targets = T.tensor(
        [
          [2, 3, -100, 5, 6],
          [7, 8, 9, 10, 31],
        ],
        undefined,
        { dtype: 'int32' },
      );
      const [plain, plainGrads] = valueAndGrad(model, () => crossEntropy(model.forward(ids), targets))();
      const [fused, fusedGrads] = valueAndGrad(model, () => model.loss(ids, targets))();
      expect(fused.itemSync()).toBeCloseTo(plain.itemSync(), 12);
      for (const [name, g] of Object.entries(plainGrads)) assertClose(fusedGrads[name].dataSync(), g.dataSync(), { rtol: 1e-9, atol: 1e-12 }, name);
    }
  });
  it('model.loss with an adapter on lm_head counts the adapter (and trains it)', () => {
    const model = new LlamaForCausalLM({ ...tiny, tie_word_embeddings: false }, { seed: 6, dtype: 'float64' });
    model.freeze();
    const head = LoRALinear.fromBase(model.getModule('lm_head') as Linear, { rank: 2, seed: 1 });
    head.loraB.assign(randomTensor([32, 2], 9, { dtype: 'float64' }));
    model.setModule('lm_head', head);
    const ids = T.tensor([[1, 2, 3, 4]], undefined, { dtype: 'int32' });
    const targets = T.tensor([[2, 3, 4, 5]], undefined, { dtype: 'int32' });
    const [plain, plainGrads] = valueAndGrad(model, () => crossEntropy(model.forward(ids), targets))();
    const [viaLoss, lossGrads] = valueAndGrad(model, () => model.loss(ids, targets))();
    expect(viaLoss.itemSync()).toBeCloseTo(plain.itemSync(), 12);
    expect(Object.keys(lossGrads).sort()).toEqual(Object.keys(plainGrads).sort());
    expect(Object.keys(lossGrads)).toContain('lm_head.loraB');
  });
  it('gradients of RMSNorm and a whole decoder block check by finite differences (float64)', () => {
    const norm = new RMSNorm(5, 1e-5, { dtype: 'float64' });
    const x = randomTensor([3, 5], 1, { dtype: 'float64' });
    assertClose(norm.forward(x).dataSync(), T.div(x, T.sqrt(T.add(T.mean(T.mul(x, x), -1, true), 1e-5))).dataSync(), { rtol: 1e-12, atol: 1e-14 });
    gradCheck((v) => norm.forward(v), [randomTensor([3, 5], 1, { dtype: 'float64' })]);
    const model = new LlamaForCausalLM({ ...tiny, num_hidden_layers: 1 }, { seed: 5, dtype: 'float64' });
    const layer = model.getModule('model.layers.0') as unknown as { forward(x: Tensor): Tensor };
    gradCheck((x) => layer.forward(x), [randomTensor([1, 3, 16], 2, { dtype: 'float64' })]);
  });
});

describe('LoRA', () => {
  it('a new LoRALinear leaves the output unchanged (B = 0) and shares the base weight', () => {
    const base = new Linear(8, 6, { seed: 1, bias: true });
    const lora = LoRALinear.fromBase(base, { rank: 4, alpha: 8 });
    expect(lora.weight).toBe(base.weight);
    expect(lora.scale).toBe(2);
    expect(lora.weight.requiresGrad).toBe(false);
    expect(lora.trainableParameters().map(([n]) => n)).toEqual(['loraA', 'loraB']);
    const x = randomTensor([3, 8], 2);
    assertClose(lora.forward(x).dataSync(), base.forward(x).dataSync(), { rtol: 0, atol: 0 });
    expect(new LoRALinear({ inFeatures: 4, outFeatures: 4, rank: 2, scale: 20 }).scale).toBe(20);
    const bound = 1 / Math.sqrt(8);
    expect(Array.from(lora.loraA.dataSync()).every((v) => Math.abs(v) <= bound)).toBe(true);
  });
  it('setAdapterEnabled: off, every LoRA layer computes its base exactly; on again, the adapter is back unchanged', () => {
    const model = new LlamaForCausalLM(tiny, { seed: 4 });
    model.eval();
    const ids = T.tensor(Int32Array.from([3, 1, 4, 1, 5, 9]), [1, 6], { dtype: 'int32' });
    const base = Array.from(model.forward(ids).dataSync());
    linearToLoRALayers(model, { numLayers: 1, rank: 2, scale: 3, seed: 2 });
    for (const [, p] of model.trainableParameters()) p.assign(randomTensor(p.shape, 9));
    const adapted = Array.from(model.forward(ids).dataSync());
    expect(adapted).not.toEqual(base);
    expect(setAdapterEnabled(model, false)).toBe(7);
    expect(Array.from(model.forward(ids).dataSync())).toEqual(base);
    expect(setAdapterEnabled(model, true)).toBe(7);
    expect(Array.from(model.forward(ids).dataSync())).toEqual(adapted);
  });
  it('linearToLoRALayers: last numLayers blocks, block-relative keys, unknown keys refused', () => {
    const model = new LlamaForCausalLM(tiny, { seed: 1 });
    const paths = linearToLoRALayers(model, { numLayers: 2, keys: ['self_attn.q_proj', 'self_attn.v_proj'], rank: 4, scale: 10 });
    expect(paths).toEqual([
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.self_attn.v_proj',
      'model.layers.2.self_attn.q_proj',
      'model.layers.2.self_attn.v_proj',
    ]);
    expect(model.trainableParameters().map(([n]) => n)).toEqual(paths.flatMap((p) => [`${p}.loraA`, `${p}.loraB`]));
    expect(() => linearToLoRALayers(new LlamaForCausalLM(tiny), { keys: ['q_proj'] })).toThrow(/keys match no Linear layer in the selected blocks: q_proj/);
    const all = linearToLoRALayers(new LlamaForCausalLM(tiny), { numLayers: 1 });
    expect(all).toHaveLength(7);
  });
  it('mergeWeights folds W + s·B·A: merged and unmerged outputs agree; unmerge restores', () => {
    const model = new LlamaForCausalLM(tiny, { seed: 1 });
    linearToLoRALayers(model, { numLayers: 3, rank: 4, scale: 2, seed: 7 });
    for (const [, p] of model.trainableParameters()) p.assign(T.randn([...p.shape], { seed: p.id, std: 0.1 }));
    const ids = T.tensor([[1, 5, 7, 2]], undefined, { dtype: 'int32' });
    const before = model.forward(ids).dataSync();
    const { merged, unmerge } = mergeWeights(model);
    expect(merged).toHaveLength(21);
    expect(model.namedModules().some(([, m]) => m instanceof LoRALinear)).toBe(false);
    assertClose(model.forward(ids).dataSync(), before, { rtol: 1e-4, atol: 1e-5 });
    unmerge();
    expect(model.namedModules().filter(([, m]) => m instanceof LoRALinear)).toHaveLength(21);
    assertClose(model.forward(ids).dataSync(), before, { rtol: 0, atol: 0 });
  });
});

describe('optimizers match torch.optim (fixture from PyTorch, float64)', () => {
  const fixture = JSON.parse(readFileSync(new URL('./fixtures/optimizers.json', import.meta.url), 'utf8')) as {
    init: number[];
    trajectories: Record<string, { optimizer: string; options: Record<string, unknown>; params: number[][] }>;
  };
  const make = (name: string, p: Tensor) => {
    const o = fixture.trajectories[name].options as Record<string, number & boolean & [number, number]>;
    const params: [string, Tensor][] = [['p', p]];
    switch (fixture.trajectories[name].optimizer) {
      case 'SGD':
        return new SGD(params, { lr: o.lr, momentum: o.momentum, dampening: o.dampening, nesterov: o.nesterov, weightDecay: o.weight_decay });
      case 'Adam':
        return new Adam(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
      default:
        return new AdamW(params, { lr: o.lr, betas: o.betas, eps: o.eps, weightDecay: o.weight_decay });
    }
  };
  it.each(Object.keys(fixture.trajectories))('%s', (name) => {
    const p = T.tensor(fixture.init, undefined, { dtype: 'float64', requiresGrad: true });
    const opt = make(name, p);
    fixture.trajectories[name].params.forEach((expected, i) => {
      const t = i + 1;
      p.grad = T.tensor(
        Array.from(p.dataSync(), (v) => Math.sin(3 * v + t) + 0.1 * t),
        undefined,
        { dtype: 'float64' },
      );
      opt.step();
      assertClose(p.dataSync(), expected, { rtol: 1e-12, atol: 1e-14 }, `${name} step ${t}`);
    });
  });
});

describe('training utilities', () => {
  it('schedules', () => {
    const warm = linearWarmup(1, 4);
    expect([0, 1, 3, 10].map(warm)).toEqual([0.25, 0.5, 1, 1]);
    const cos = cosineDecay(1, 10, 0.1);
    expect(cos(0)).toBe(1);
    expect(cos(5)).toBeCloseTo(0.55, 12);
    expect(cos(10)).toBe(0.1);
    expect(warmupCosine(2, 2, 12)(1)).toBe(2);
  });
  it("an optimizer's state dict restores the run: the same steps follow", async () => {
    await T.setBackend('cpu');
    for (const make of [(m: LlamaForCausalLM) => new AdamW(m, { lr: 1e-2 }), (m: LlamaForCausalLM) => new SGD(m, { lr: 1e-2, momentum: 0.9 })]) {
      const model = new LlamaForCausalLM(tiny, { seed: 2 });
      linearToLoRALayers(model, { rank: 2, seed: 3 });
      const x = T.tensor(Int32Array.from([1, 5, 9, 2, 7, 3]), [1, 6], { dtype: 'int32' });
      const y = T.tensor(Int32Array.from([5, 9, 2, 7, 3, 1]), [1, 6], { dtype: 'int32' });
      const step = valueAndGrad(model, (a: Tensor, b: Tensor) => model.loss(a, b));
      const run = (opt: ReturnType<typeof make>, n: number) => {
        for (let i = 0; i < n; i++) T.tidy(() => opt.update(model, step(x, y)[1]));
      };
      const weights = () => model.trainableParameters().map(([, p]) => Array.from(p.dataSync()));
      const a = make(model);
      run(a, 2);
      const saved = a.stateDict(model);
      const copies = {
        step: saved.step,
        tensors: Object.fromEntries(Object.entries(saved.tensors).map(([k, t]) => [k, T.tensor(t.dataSync(), [...t.shape])])),
      };
      const at2 = model.trainableParameters().map(([, p]) => T.tensor(p.dataSync(), [...p.shape]));
      run(a, 2);
      const want = weights();
      for (const [i, [, p]] of model.trainableParameters().entries()) p.assign(at2[i]);
      const b = make(model);
      b.loadStateDict(model, copies);
      expect(b.stepCount).toBe(2);
      run(b, 2);
      expect(weights()).toEqual(want);
      expect(() => b.loadStateDict(model, { step: 1, tensors: { 'model.nope.m': copies.tensors[Object.keys(copies.tensors)[0]] } })).toThrow(
        "Optimizer.loadStateDict: 'model.nope.m' is not <parameter>.<slot> of a parameter of the model",
      );
      const [key, t] = Object.entries(copies.tensors)[0];
      expect(() => b.loadStateDict(model, { step: 1, tensors: { [key]: T.tensor([1, 2, 3]) } })).toThrow(`'${key}' does not fit its parameter`);
      expect(() => b.loadStateDict(model, { step: -1, tensors: {} })).toThrow(ValueError);
      t.dispose();
    }
  });
  it('clipGradNorm scales by maxNorm / norm only above the threshold', () => {
    const g = { a: T.tensor([3, 0]), b: T.tensor([4]) };
    const { grads, norm } = clipGradNorm(g, 1);
    expect(norm).toBe(5);
    assertClose(grads.a.dataSync(), [0.6, 0], { rtol: 1e-6, atol: 0 });
    expect(clipGradNorm(g, 10).grads).toBe(g);
  });
  it('crossEntropy with ignore index and mask; mse', () => {
    const logits = T.tensor([
      [
        [2, 1, 0],
        [0, 0, 3],
      ],
    ]);
    const targets = T.tensor([[0, -100]], undefined, { dtype: 'int32' });
    const expected = -(2 - Math.log(Math.exp(2) + Math.exp(1) + 1));
    expect(crossEntropy(logits, targets).itemSync()).toBeCloseTo(expected, 5);
    const both = T.tensor([[0, 2]], undefined, { dtype: 'int32' });
    const second = -(3 - Math.log(2 + Math.exp(3)));
    expect(crossEntropy(logits, both).itemSync()).toBeCloseTo((expected + second) / 2, 5);
    expect(crossEntropy(logits, both, { mask: T.tensor([[0, 1]]) }).itemSync()).toBeCloseTo(second, 5);
    expect(mse(T.tensor([1, 2]), T.tensor([0, 0])).itemSync()).toBe(2.5);
    expect(() => crossEntropy(logits, T.tensor([[0, 1]]))).toThrow(/int32/);
  });
  it('crossEntropy refuses targets that are not classes (unless ignored)', () => {
    const logits = T.tensor([
      [2, 1, 0, 1, 2],
      [0, 0, 3, 1, 1],
    ]);
    const ids = (v: number[]) => T.tensor(v, undefined, { dtype: 'int32' });
    expect(() => crossEntropy(logits, ids([0, 7]))).toThrow(T.ValueError);
    expect(() => crossEntropy(logits, ids([0, 7]))).toThrow(
      'crossEntropy: target 7 at position 1 is not a class of the 5 logits; expected 0 <= target < 5 or the ignore index -100, got 7',
    );
    expect(() => crossEntropy(logits, ids([-1, 0]))).toThrow(/target -1 at position 0/);
    expect(crossEntropy(logits, ids([-1, 0]), { ignoreIndex: -1 }).itemSync()).toBeCloseTo(Math.log(2 + Math.exp(3) + 2 * Math.E), 5);
  });
  it('valueAndGrad(model, lossFn) returns gradients of trainable parameters only, by name', () => {
    const model = new LlamaForCausalLM(tiny, { seed: 1 });
    linearToLoRALayers(model, { numLayers: 1, keys: ['self_attn.q_proj'], rank: 2 });
    const ids = T.tensor([[1, 2, 3]], undefined, { dtype: 'int32' });
    const [loss, grads] = valueAndGrad(model, (x: Tensor) => crossEntropy(model.forward(x), x))(ids);
    expect(loss.itemSync()).toBeGreaterThan(0);
    expect(Object.keys(grads)).toEqual(['model.layers.2.self_attn.q_proj.loraA', 'model.layers.2.self_attn.q_proj.loraB']);
  });
});

describe('LlamaForCausalLM refuses configs before allocating', () => {
  it('names the field and its range', () => {
    const ok = { vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2 };
    const refuse = (patch: Record<string, unknown>, message: string | RegExp) => {
      expect(() => new LlamaForCausalLM({ ...ok, ...patch } as LlamaConfig)).toThrow(T.ValueError);
      expect(() => new LlamaForCausalLM({ ...ok, ...patch } as LlamaConfig)).toThrow(message);
    };
    refuse({ intermediate_size: 4e6 }, 'LlamaConfig: intermediate_size is out of range; expected an integer in 1..262144, got 4000000');
    refuse({ num_hidden_layers: 100000 }, 'LlamaConfig: num_hidden_layers is out of range; expected an integer in 1..1024, got 100000');
    refuse({ vocab_size: 0 }, /vocab_size is out of range/);
    refuse({ hidden_size: 16.5 }, /hidden_size is out of range/);
    refuse({ num_attention_heads: '2' }, /num_attention_heads is out of range; expected an integer in 1\.\.1024, got "2"/);
    refuse({ rope_theta: -1 }, 'LlamaConfig: rope_theta must be a positive finite number; expected a number > 0, got -1');
    refuse({ num_key_value_heads: 3, num_attention_heads: 4 }, /multiple of num_key_value_heads/);
    refuse({ vocab_size: 1 << 22, hidden_size: 1 << 10, num_attention_heads: 8 }, /a weight matrix would not fit in one tensor/);
  });
});

describe('optimizers refuse hyperparameters that would silently break training', () => {
  it('lr, betas, eps, weight decay and momentum outside their ranges', () => {
    const params: [string, T.Tensor][] = [['w', T.tensor([1, 2], undefined, { requiresGrad: true })]];
    expect(() => new Adam(params, { lr: Number.NaN })).toThrow('Adam: lr is out of range; expected a finite number ≥ 0, got NaN');
    expect(() => new AdamW(params, { lr: -1 })).toThrow('AdamW: lr is out of range; expected a finite number ≥ 0, got -1');
    expect(() => new Adam(params, { lr: 1e-3, betas: [0.9, 1] })).toThrow(/betas\[1\] is out of range; expected a finite number ≥ 0 and < 1, got 1/);
    expect(() => new Adam(params, { lr: 1e-3, eps: Number.POSITIVE_INFINITY })).toThrow(/eps is out of range/);
    expect(() => new SGD(params, { lr: 0.1, momentum: -0.5 })).toThrow(/SGD: momentum is out of range/);
    // A schedule is checked at the step that uses it.
    const scheduled = new Adam(params, { lr: () => Number.NaN });
    params[0][1].grad = T.tensor([1, 1]);
    expect(() => scheduled.step()).toThrow('Adam: lr at step 0 is out of range; expected a finite number ≥ 0, got NaN');
  });
});

describe('a fresh model is initialized as transformers does', () => {
  it('normal(0, initializer_range) weights, zero biases: the loss starts near ln(vocab)', () => {
    const vocab = 4096;
    const model = new LlamaForCausalLM(
      { vocab_size: vocab, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, model_type: 'qwen2', qkv_bias: true },
      { seed: 1 },
    );
    const ids = T.tensor(
      Int32Array.from({ length: 32 }, (_, i) => (i * 131) % vocab),
      [2, 16],
      { dtype: 'int32' },
    );
    const loss = crossEntropy(model.forward(T.slice(ids, [0, 0], [2, 15])), T.slice(ids, [0, 1], [2, 16])).itemSync();
    expect(Math.abs(loss - Math.log(vocab))).toBeLessThan(0.05);
    const q = model.getModule('model.layers.0.self_attn.q_proj') as Linear;
    const w = Array.from(q.weight.dataSync());
    const std = Math.sqrt(w.reduce((a, v) => a + v * v, 0) / w.length);
    expect(std).toBeGreaterThan(0.018);
    expect(std).toBeLessThan(0.022);
    expect(Array.from(q.bias!.dataSync()).every((v) => v === 0)).toBe(true);
    const wide = new LlamaForCausalLM(
      { vocab_size: 64, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 1, num_attention_heads: 4, initializer_range: 0.2 },
      { seed: 1 },
    );
    const e = Array.from(new Map(wide.namedParameters()).get('model.embed_tokens.weight')!.dataSync());
    expect(Math.sqrt(e.reduce((a, v) => a + v * v, 0) / e.length)).toBeGreaterThan(0.18);
  });
});
