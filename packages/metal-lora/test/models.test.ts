import { copyFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LlamaForCausalLM, linearToLoRALayers } from '@metal-lora/nn';
import { readSafetensors, toFloat32, type WriteEntry, writeSafetensors } from '@metal-lora/adapter-io';
import { noGrad, setBackend, tensor } from '@metal-lora/tensor';
import { assertClose, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { evaluate, HFTokenizer, loadModel, trainLoop } from '../src/index';

/**
 * Tiny random checkpoints saved by transformers 5.17 (scripts/make_model_fixtures.py), with the
 * logits transformers computes for two rows of token ids in float64 (eager attention): Llama,
 * Llama 3 with its RoPE scaling and bf16 weights, Mistral with a sliding window shorter than the
 * sequence and f16 weights, Qwen2 (q/k/v bias), Qwen3 (q/k norm, bf16), Gemma 3 (sandwich (1 + w)
 * norms, GeGLU, a sliding and a global layer with their own RoPE, bf16), Phi-3 (fused projections,
 * partial rotary features, a sliding window).
 */
const fixtures = new URL('./fixtures/models/', import.meta.url).pathname;

describe('checkpoints of each architecture give the logits transformers gives', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  for (const name of readdirSync(fixtures)) {
    it(name, async () => {
      const expected = JSON.parse(readFileSync(join(fixtures, name, 'expected.json'), 'utf8')) as {
        modelType: string;
        ids: number[][];
        logits: number[];
        shape: number[];
      };
      const { model, config, tokenizer } = loadModel(join(fixtures, name));
      expect(model).toBeInstanceOf(LlamaForCausalLM);
      expect(config.model_type).toBe(expected.modelType);
      expect(tokenizer).toBeInstanceOf(HFTokenizer);
      const [B, T] = [expected.ids.length, expected.ids[0].length];
      const logits = noGrad(() => model.forward(tensor(Int32Array.from(expected.ids.flat()), [B, T], { dtype: 'int32' })));
      expect(logits.shape).toEqual(expected.shape);
      const want = Float64Array.from(expected.logits);
      assertClose(await logits.data(), want, scaledTolerance(TOLERANCES.float32Gemm, want), `${name} logits`);
      logits.dispose();
    });
  }
});

describe('each architecture fine-tunes: LoRA on every block, the loss falls', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  for (const name of readdirSync(fixtures)) {
    it(name, async () => {
      const { model, tokenizer } = loadModel(join(fixtures, name));
      const stream = Int32Array.from(tokenizer.encode('the cat sat on the mat. the dog sat on the log. '.repeat(6)));
      const options = { batches: 1, batch: 2, length: 12 };
      const before = await evaluate(model, stream, options);
      linearToLoRALayers(model, { rank: 4, scale: 2, seed: 1 });
      await trainLoop(model, stream, { iters: 12, batch: 2, length: 12, lr: 2e-2, reportEvery: 12 });
      expect(await evaluate(model, stream, options)).toBeLessThan(before - 0.1);
    });
  }
});

describe('folders as MLX writes them, and bad folders', () => {
  it('reads weights.safetensors or model-*.safetensors without an index', async () => {
    await setBackend('cpu');
    const dir = mkdtempSync(join(tmpdir(), 'mlx-model-'));
    for (const f of readdirSync(join(fixtures, 'qwen3'))) {
      if (f !== 'model.safetensors') copyFileSync(join(fixtures, 'qwen3', f), join(dir, f));
    }
    copyFileSync(join(fixtures, 'qwen3', 'model.safetensors'), join(dir, 'weights.safetensors'));
    const ids = tensor(Int32Array.from([1, 2, 3]), [1, 3], { dtype: 'int32' });
    const want = await noGrad(() => loadModel(join(fixtures, 'qwen3')).model.forward(ids)).data();
    expect(await noGrad(() => loadModel(dir).model.forward(ids)).data()).toEqual(want);
    writeFileSync(join(dir, 'generation_config.json'), '{"eos_token_id": [7, "x"]}');
    expect(() => loadModel(dir)).toThrow('loadModel: eos_token_id must be a token id or a list of them; expected integers ≥ 0, got [7,"x"]');
    writeFileSync(join(dir, 'generation_config.json'), '{"eos_token_id": [7, 9]}');
    expect(loadModel(dir).generation.eosTokenIds).toEqual([7, 9]);
  });
});

describe('loadModel in float16', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  it('holds every weight in f16 (bf16 ones included) and gives the f32 logits to f16 precision', async () => {
    for (const name of ['llama3-rope-scaling', 'gemma3']) {
      const expected = JSON.parse(readFileSync(join(fixtures, name, 'expected.json'), 'utf8')) as { ids: number[][]; logits: number[] };
      const { model } = loadModel(join(fixtures, name), { dtype: 'float16' });
      expect(new Set(model.namedParameters().map(([, p]) => p.dtype))).toEqual(new Set(['float16']));
      const [B, T] = [expected.ids.length, expected.ids[0].length];
      const logits = noGrad(() => model.forward(tensor(Int32Array.from(expected.ids.flat()), [B, T], { dtype: 'int32' })));
      expect(logits.dtype).toBe('float16');
      const want = Float64Array.from(expected.logits);
      // Half-precision weights and activations: about 1e-3 relative per rounding, a few of them deep.
      assertClose(await logits.data(), want, scaledTolerance({ rtol: 2e-2, atol: 2e-2 }, want), `${name} logits in f16`);
      logits.dispose();
    }
  });
  it('refuses a weight outside f16 range, naming it, and a dtype it does not hold', () => {
    const dir = mkdtempSync(join(tmpdir(), 'f16-range-'));
    for (const f of readdirSync(join(fixtures, 'llama'))) copyFileSync(join(fixtures, 'llama', f), join(dir, f));
    const { tensors } = readSafetensors(new Uint8Array(readFileSync(join(dir, 'model.safetensors'))));
    const entries: Record<string, WriteEntry> = Object.create(null);
    for (const [name, e] of Object.entries(tensors)) {
      const data = Float32Array.from(toFloat32(e));
      if (name === 'model.norm.weight') data[1] = -1.5e5;
      entries[name] = { dtype: 'F32', shape: [...e.shape], data };
    }
    writeFileSync(join(dir, 'model.safetensors'), writeSafetensors(entries));
    expect(() => loadModel(dir, { dtype: 'float16' })).toThrow(
      "loadModel: model.norm.weight has 1 value outside float16's range; load it as float32; expected |values| ≤ 65504, got 1.500e+5",
    );
    expect(new Map(loadModel(dir).model.namedParameters()).get('model.norm.weight')?.dtype).toBe('float32');
    expect(() => loadModel(dir, { dtype: 'bfloat16' as 'float16' })).toThrow(
      "loadModel: dtype must be float32 or float16; expected 'float32' or 'float16', got \"bfloat16\"",
    );
  });
});
