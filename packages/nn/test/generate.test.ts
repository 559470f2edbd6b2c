import '@metal-lora/metal-kernels'; // registers the webgpu backend (tests only: nn itself never imports it)
import * as T from '@metal-lora/tensor';
import { ValueError } from '@metal-lora/tensor';
import { assertClose } from '@metal-lora/tensor/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuIt, withDispatchLabels } from '../../../test-support/gpu';
import { base, CONFIGS } from './configs';
import { crossEntropy as crossEntropyOf, generateIds, KVCache, LlamaForCausalLM, linearToLoRALayers, Sampler } from '../src/index';

const ids = (rows: number[][]) => T.tensor(Int32Array.from(rows.flat()), [rows.length, rows[0].length], { dtype: 'int32' });
const seq = [5, 17, 3, 29, 11, 8, 36, 2, 21];

/** Logits of the full forward pass at every position, against prefill of `split` tokens then one position at a time through the cache. */
async function cachedVersusFull(model: LlamaForCausalLM, split: number, capacity?: number): Promise<{ full: Float64Array; cached: Float64Array }> {
  const full = Float64Array.from(await T.noGrad(() => model.forward(ids([seq]))).data());
  // With a capacity: a fixed-capacity cache that grows by 3 slots whenever the next step would not fit.
  const cache = new KVCache(model.config.num_hidden_layers, { capacity });
  const parts: number[] = [];
  const prefill = T.noGrad(() => model.forward(ids([seq.slice(0, split)]), { cache }));
  parts.push(...(await prefill.data()));
  for (let t = split; t < seq.length; t++) {
    if (capacity && cache.length + 1 > cache.capacity!) cache.grow(cache.capacity! + 3);
    parts.push(...(await T.noGrad(() => model.forward(ids([[seq[t]]]), { cache })).data()));
  }
  expect(cache.length).toBe(seq.length);
  cache.dispose();
  return { full, cached: Float64Array.from(parts) };
}

describe('KV cache: prefill then one position at a time gives the full pass', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  for (const [name, config] of Object.entries(CONFIGS)) {
    it(`${name} (cpu)`, async () => {
      await T.setBackend('cpu');
      const model = new LlamaForCausalLM(config, { seed: 3 });
      for (const split of [1, 4]) {
        const { full, cached } = await cachedVersusFull(model, split);
        assertClose(cached, full, { atol: 1e-5, rtol: 1e-5 }, `${name}: cached logits (prefill ${split})`);
      }
      for (const [split, capacity] of [
        [1, 9],
        [4, 5],
      ]) {
        const { full, cached } = await cachedVersusFull(model, split, capacity);
        assertClose(cached, full, { atol: 1e-5, rtol: 1e-5 }, `${name}: fixed-capacity cache of ${capacity} (prefill ${split})`);
      }
      // LoRA layers (non-zero B) are used by the cached path as by the full one.
      linearToLoRALayers(model, { rank: 2, seed: 4 });
      for (const [, p] of model.trainableParameters()) if (p.shape[1] === 2) p.assign(T.randn([...p.shape], { seed: 9, std: 0.3 }));
      const { full, cached } = await cachedVersusFull(model, 3);
      assertClose(cached, full, { atol: 1e-5, rtol: 1e-5 }, `${name}: cached logits with LoRA`);
    });
  }
  gpuIt('gemma3 and phi3 on webgpu', async () => {
    await T.setBackend('webgpu');
    for (const name of ['gemma3', 'phi3']) {
      const model = new LlamaForCausalLM(CONFIGS[name], { seed: 3 });
      const { full, cached } = await cachedVersusFull(model, 2);
      assertClose(cached, full, { atol: 2e-4, rtol: 2e-4 }, `${name}: cached logits on webgpu`);
    }
  });

  it('a fixed-capacity cache gives a left-padded batch the logits of the growing one', async () => {
    await T.setBackend('cpu');
    for (const [name, config] of Object.entries(CONFIGS)) {
      const model = new LlamaForCausalLM(config, { seed: 7 });
      const padding = [2, 0, 3];
      const prompt = ids([
        [0, 0, 5, 17, 3],
        [4, 9, 5, 17, 3],
        [0, 0, 0, 29, 11],
      ]);
      const logits: Float64Array[] = [];
      for (const capacity of [undefined, 8]) {
        const cache = new KVCache(config.num_hidden_layers, { padding, capacity });
        const out = [...(await T.noGrad(() => model.forward(prompt, { cache, logits: 'last' })).data())];
        for (const next of [7, 2, 30]) out.push(...(await T.noGrad(() => model.forward(ids([[next], [next], [next]]), { cache, logits: 'last' })).data()));
        logits.push(Float64Array.from(out));
        cache.dispose();
      }
      assertClose(logits[1], logits[0], { atol: 1e-5, rtol: 1e-5 }, name);
    }
  });

  it('a fixed-capacity cache refuses to overflow, and grows only as one', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(base, { seed: 1 });
    const cache = new KVCache(2, { capacity: 3 });
    T.noGrad(() => model.forward(ids([[1, 2, 3]]), { cache }));
    expect(() => T.noGrad(() => model.forward(ids([[4]]), { cache }))).toThrow(
      'KVCache: the cache is full; expected at most 3 slots (grow() it first), got 3 + 1',
    );
    expect(() => cache.grow(3)).toThrow('KVCache: a cache grows to more slots than it has; expected an integer > 3, got 3');
    cache.grow(4);
    expect(cache.capacity).toBe(4);
    T.noGrad(() => model.forward(ids([[4]]), { cache }));
    cache.dispose();
    expect(() => new KVCache(2).grow(8)).toThrow('KVCache: only a fixed-capacity cache grows');
    expect(() => new KVCache(2, { capacity: 0 })).toThrow('KVCache: the capacity must be a positive integer');
    expect(() => new KVCache(2, { capacity: 2.5 })).toThrow(ValueError);
  });

  it('a cache is for inference only', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(base, { seed: 1 });
    const cache = new KVCache(2);
    expect(() => model.forward(ids([[1, 2]]), { cache })).toThrow('KVCache: a cache holds inference results: run the forward pass under noGrad');
    expect(() => new KVCache(0)).toThrow(ValueError);
    expect(() => new KVCache(2, { padding: [1, -1] })).toThrow(ValueError);
  });
});

describe('generateIds', () => {
  it('greedy continuation equals argmax of full recompute, alone and in a left-padded batch', async () => {
    await T.setBackend('cpu');
    for (const [name, config] of Object.entries(CONFIGS)) {
      const model = new LlamaForCausalLM(config, { seed: 5 });
      const recompute = async (prompt: number[], n: number) => {
        const out = [...prompt];
        for (let i = 0; i < n; i++) {
          const logits = await T.noGrad(() => model.forward(ids([out]))).data();
          const last = logits.subarray((out.length - 1) * config.vocab_size, out.length * config.vocab_size);
          out.push(last.indexOf(Math.max(...last)));
        }
        return out.slice(prompt.length);
      };
      const prompts = [seq.slice(0, 2), seq.slice(0, 6), seq.slice(3, 7)];
      const want = await Promise.all(prompts.map((p) => recompute(p, 6)));
      const alone = await generateIds(model, [prompts[1]], { maxTokens: 6 });
      expect(alone.tokens[0], name).toEqual(want[1]);
      expect(alone.finishReasons).toEqual(['length']);
      const batch = await generateIds(model, prompts, { maxTokens: 6 });
      expect(batch.tokens, name).toEqual(want);
      expect(model.training).toBe(true); // restored after generation
    }
  });

  it('stops a row at an end-of-reply id or when onToken says so; others go on', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(base, { seed: 5 });
    const free = await generateIds(model, [seq.slice(0, 3), seq.slice(0, 5)], { maxTokens: 5 });
    const eos = free.tokens[0][2];
    const stopped = await generateIds(model, [seq.slice(0, 3), seq.slice(0, 5)], { maxTokens: 5, eosTokenIds: [eos] });
    expect(stopped.tokens[0]).toEqual(free.tokens[0].slice(0, free.tokens[0].indexOf(eos)));
    expect(stopped.finishReasons[0]).toBe('eos');
    const seen: [number, number][] = [];
    const byCallback = await generateIds(model, [seq.slice(0, 3), seq.slice(0, 5)], {
      maxTokens: 5,
      onToken: (row, token) => {
        seen.push([row, token]);
        return row === 1;
      },
    });
    expect(byCallback.tokens[1]).toEqual(free.tokens[1].slice(0, 1));
    expect(byCallback.finishReasons).toEqual(['length', 'stop']);
    expect(seen.filter(([r]) => r === 0).map(([, t]) => t)).toEqual(free.tokens[0]);
  });

  gpuIt('webgpu: replaying a captured step chooses the tokens the ops choose, through a left-padded batch, LoRA and a growing cache', async (backend) => {
    const start = backend.memory().liveBytes;
    await T.setBackend('webgpu');
    const prompts = [seq.slice(0, 2), seq.slice(0, 6), seq.slice(3, 7)];
    for (const [name, config] of Object.entries(CONFIGS)) {
      const model = new LlamaForCausalLM(config, { seed: 5 });
      if (name === 'llama') {
        linearToLoRALayers(model, { rank: 2, seed: 4 });
        for (const [, p] of model.trainableParameters()) {
          if (p.shape[1] !== 2) continue;
          const b = T.randn([...p.shape], { seed: 9, std: 0.3 });
          p.assign(b);
          b.dispose();
        }
      }
      const ops = await withDispatchLabels(backend, () => generateIds(model, prompts, { maxTokens: 12, graph: false }));
      const replayed = await withDispatchLabels(backend, () => generateIds(model, prompts, { maxTokens: 12 }));
      expect(replayed.result.tokens, name).toEqual(ops.result.tokens);
      // Prefill, one step through the ops and the captured one; the nine replays record nothing through the ops.
      expect(replayed.labels.length, name).toBeLessThan(ops.labels.length / 2);
      // A cache of 3 slots past the prompt grows to 6, then to the 11 the last step needs; the step is captured again each time.
      const grown = await generateIds(model, prompts, { maxTokens: 12, cacheSlots: 3 });
      expect(grown.tokens, `${name}, growing`).toEqual(ops.result.tokens);
      for (const [, p] of model.namedParameters()) p.dispose();
    }
    expect(backend.memory().liveBytes).toBe(start);
  });

  it('refuses bad prompts and options clearly', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(base, { seed: 5 });
    await expect(generateIds(model, [], { maxTokens: 1 })).rejects.toThrow('generate: no prompts');
    await expect(generateIds(model, [[]], { maxTokens: 1 })).rejects.toThrow('generate: a prompt has no tokens');
    await expect(generateIds(model, [[1, 40]], { maxTokens: 1 })).rejects.toThrow(
      'generate: a prompt token is outside the vocabulary; expected an integer in 0..39, got 40',
    );
    await expect(generateIds(model, [[1]], { maxTokens: -1 })).rejects.toThrow(ValueError);
    await expect(generateIds(model, [[1]], { maxTokens: 1, temperature: -1 })).rejects.toThrow('Sampler: temperature is out of range');
    await expect(generateIds(model, [[1]], { maxTokens: 1, topP: 0 })).rejects.toThrow('Sampler: topP is out of range');
    await expect(generateIds(model, [[1]], { maxTokens: 1, cacheSlots: 0 })).rejects.toThrow('generate: cacheSlots must be a positive integer');
  });
});

describe('Sampler', () => {
  const logits = Float32Array.from([0.5, 2, -1, 1.5, 0, 1.9, -3, 0.2]);
  const softmax = (xs: ArrayLike<number>, t = 1) => {
    const e = Array.from(xs, (x) => Math.exp(x / t));
    const s = e.reduce((a, b) => a + b, 0);
    return e.map((v) => v / s);
  };
  const frequencies = (sampler: Sampler, n: number, history: number[] = []) => {
    const counts = new Array(logits.length).fill(0);
    for (let i = 0; i < n; i++) counts[sampler.next(logits, history)]++;
    return counts.map((c) => c / n);
  };

  it('greedy by default; temperature 1 draws from the softmax', () => {
    expect(new Sampler().next(logits, [])).toBe(1);
    const f = frequencies(new Sampler({ temperature: 1, seed: 1 }), 20000);
    const p = softmax(logits);
    for (let i = 0; i < p.length; i++) expect(Math.abs(f[i] - p[i])).toBeLessThan(0.015);
  });

  it('top-k, top-p and min-p keep only the tokens they should, renormalized', () => {
    const k2 = frequencies(new Sampler({ temperature: 1, topK: 2, seed: 2 }), 4000);
    expect(k2.map((v, i) => (v > 0 ? i : -1)).filter((i) => i >= 0)).toEqual([1, 5]);
    expect(Math.abs(k2[1] - Math.exp(2) / (Math.exp(2) + Math.exp(1.9)))).toBeLessThan(0.03);
    // Probabilities sorted: 1 (0.324), 5 (0.293), 3 (0.196), 0 (0.072)...: the first two sum to 0.616.
    const kept = (topP: number) =>
      frequencies(new Sampler({ temperature: 1, topP, seed: 3 }), 4000)
        .map((v, i) => (v > 0 ? i : -1))
        .filter((i) => i >= 0);
    expect(kept(0.6)).toEqual([1, 5]);
    expect(kept(0.65)).toEqual([1, 3, 5]);
    // min-p 0.5 keeps tokens at least half as likely as the best: logits ≥ 2 − ln 2.
    const m = frequencies(new Sampler({ temperature: 1, minP: 0.5, seed: 4 }), 4000);
    expect(m.map((v, i) => (v > 0 ? i : -1)).filter((i) => i >= 0)).toEqual([1, 3, 5]);
  });

  it('the same seed gives the same draws; repetition penalty lowers seen tokens as transformers does', () => {
    const a = new Sampler({ temperature: 0.8, seed: 7 });
    const b = new Sampler({ temperature: 0.8, seed: 7 });
    const draws = Array.from({ length: 50 }, () => a.next(logits, []));
    expect(Array.from({ length: 50 }, () => b.next(logits, []))).toEqual(draws);
    // Token 1 (2.0) divided by 2 → 1.0 falls behind 5 (1.9); a negative logit is multiplied instead.
    expect(new Sampler({ repetitionPenalty: 2 }).next(logits, [1, 1])).toBe(5);
    expect(new Sampler({ repetitionPenalty: 2 }).next(Float32Array.from([-1, -1.5]), [0])).toBe(1);
    // Only ids below the limit are candidates.
    expect(new Sampler().next(logits, [], 1)).toBe(0);
  });
});

describe('packed rows (segments): each document as if alone', () => {
  const docs = [seq.slice(0, 3), seq.slice(2, 7), seq.slice(5, 9)];
  for (const [name, config] of Object.entries(CONFIGS)) {
    it(`${name} (cpu): logits and loss of a packed row equal the documents' own`, async () => {
      await T.setBackend('cpu');
      const model = new LlamaForCausalLM(config, { seed: 6 });
      const V = config.vocab_size;
      // Row 0: docs 0 and 1 then 2 pad positions; row 1: doc 2 then 6 pad positions.
      const L = 10;
      const row0 = [...docs[0], ...docs[1], 0, 0];
      const row1 = [...docs[2], 0, 0, 0, 0, 0, 0];
      const segments = [[3, 5], [4]];
      const packed = await T.noGrad(() => model.forward(ids([row0, row1]), { segments })).data();
      const alone = await Promise.all(docs.map(async (d) => T.noGrad(() => model.forward(ids([d]))).data()));
      const at = (row: number, t: number) => packed.subarray((row * L + t) * V, (row * L + t + 1) * V);
      const where: [number, number, number][] = [
        [0, 0, 0],
        [0, 3, 1],
        [1, 0, 2],
      ];
      for (const [row, offset, d] of where)
        for (let t = 0; t < docs[d].length; t++)
          assertClose(
            Float64Array.from(at(row, offset + t)),
            Float64Array.from(alone[d].subarray(t * V, (t + 1) * V)),
            { atol: 1e-5, rtol: 1e-5 },
            `${name}: doc ${d} position ${t}`,
          );
      // The loss through the packed path counts only the documents' own next tokens.
      const targets = T.tensor(Int32Array.from([17, 3, -100, 29, 11, 8, 36, -100, -100, -100, 8, 36, 2, -100, -100, -100, -100, -100, -100, -100]), [2, L], {
        dtype: 'int32',
      });
      const loss = await T.noGrad(() => model.loss(ids([row0, row1]), targets, { segments })).item();
      const plain = await T.noGrad(() => crossEntropyOf(model.forward(ids([row0, row1]), { segments }), targets)).item();
      expect(loss).toBeCloseTo(plain, 5);
    });
  }

  gpuIt('mistral window 3 and gemma3 on webgpu', async () => {
    await T.setBackend('webgpu');
    for (const name of ['mistral window 3', 'gemma3']) {
      const model = new LlamaForCausalLM(CONFIGS[name], { seed: 6 });
      const V = CONFIGS[name].vocab_size;
      const packed = await T.noGrad(() => model.forward(ids([[...docs[0], ...docs[1]]]), { segments: [[3, 5]] })).data();
      const alone = await T.noGrad(() => model.forward(ids([docs[1]]))).data();
      assertClose(Float64Array.from(packed.subarray(3 * V)), Float64Array.from(alone), { atol: 2e-4, rtol: 2e-4 }, `${name}: second document on webgpu`);
    }
    await T.setBackend('cpu');
  });

  it('bad segments are refused', async () => {
    await T.setBackend('cpu');
    const model = new LlamaForCausalLM(base, { seed: 6 });
    const x = ids([[1, 2, 3, 4]]);
    expect(() => model.forward(x, { segments: [[3, 2]] })).toThrow("forward: row 0's document lengths must be positive integers that fit the row");
    expect(() => model.forward(x, { segments: [[2], [2]] })).toThrow('forward: segments must list the document lengths of every row');
    expect(() => model.forward(x, { segments: [[0, 4]] })).toThrow(ValueError);
  });
});
