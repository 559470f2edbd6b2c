import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crossEntropy, LoRALinear, valueAndGrad } from '@metal-lora/nn';
import { noGrad, setBackend, slice, type Tensor, tensor } from '@metal-lora/tensor';
import { assertClose, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadAdapter, loadModel } from '../src/index';

/**
 * PEFT 0.21 LoRA adapters (r = 4, alpha = 8, every linear layer of the blocks, non-zero B) on the
 * Llama and Qwen3 model fixtures, with the logits, next-token loss and LoRA gradients PEFT
 * computes in float64 (scripts/make_peft_fixtures.py).
 */
const models = new URL('./fixtures/models/', import.meta.url).pathname;
const adapters = new URL('./fixtures/peft/', import.meta.url).pathname;

interface Expected {
  ids: number[][];
  logits: number[];
  shape: number[];
  loss: number;
  grads: Record<string, { shape: number[]; values: number[] }>;
}

describe('PEFT adapters on real architectures: the logits, loss and gradients PEFT computes', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  for (const name of readdirSync(adapters)) {
    it(name, async () => {
      const expected = JSON.parse(readFileSync(join(adapters, name, 'expected.json'), 'utf8')) as Expected;
      const { model } = loadModel(join(models, name));
      const adapter = loadAdapter(model, join(adapters, name));
      expect(adapter.rank).toBe(4);
      expect(adapter.scale).toBe(2);
      const [B, T] = [expected.ids.length, expected.ids[0].length];
      const ids = tensor(Int32Array.from(expected.ids.flat()), [B, T], { dtype: 'int32' });
      const logits = noGrad(() => model.forward(ids));
      const want = Float64Array.from(expected.logits);
      assertClose(await logits.data(), want, scaledTolerance(TOLERANCES.float32Gemm, want), `${name} logits with the adapter`);
      logits.dispose();

      const inputs = slice(ids, [0, 0], [B, T - 1]);
      const targets = slice(ids, [0, 1], [B, T]);
      const step = valueAndGrad(model, (x: Tensor, y: Tensor) => crossEntropy(model.forward(x), y));
      // The loss over the first T - 1 positions: position t's logits depend only on ids ≤ t.
      const [loss, grads] = step(inputs, targets);
      expect(await loss.item()).toBeCloseTo(expected.loss, 4);
      for (const [key, g] of Object.entries(expected.grads)) {
        const m = /^(.*)\.lora_(A|B)$/.exec(key)!;
        expect(model.getModule(m[1])).toBeInstanceOf(LoRALinear);
        const got = grads[`${m[1]}.lora${m[2]}`];
        expect(got.shape).toEqual(g.shape);
        const ref = Float64Array.from(g.values);
        assertClose(await got.data(), ref, scaledTolerance(TOLERANCES.float32Gemm, ref), `${name} ${key} gradient`);
      }
    });
  }
});
