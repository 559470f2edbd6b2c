import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LlamaForCausalLM } from '@metal-lora/nn';
import { noGrad, setBackend, tensor } from '@metal-lora/tensor';
import { assertClose, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { HFTokenizer, loadModel } from '../src/index';

/**
 * Tiny random checkpoints saved by transformers 5.17 (scripts/make_model_fixtures.py), with the
 * logits transformers computes for two rows of token ids in float64 (eager attention): Llama,
 * Llama 3 with its RoPE scaling and bf16 weights, Mistral with a sliding window shorter than the
 * sequence and f16 weights, Qwen2 (q/k/v bias), Qwen3 (q/k norm, bf16).
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
