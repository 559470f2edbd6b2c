import '@metal-lora/metal-kernels'; // registers the webgpu backend (tests only: nn itself never imports it)
import { WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import type { Tensor } from '@metal-lora/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import { skipWithoutAdapter } from '../../../test-support/gpu';
import { AdamW, cosineDecay, type LearningRate, LlamaForCausalLM, linearToLoRALayers, valueAndGrad } from '../src/index';

/** Token ids of one batch, from host values each step as a training loop makes them. */
function batch(step: number, rows: number, length: number): { inputs: Tensor; targets: Tensor } {
  const ids = Int32Array.from({ length: rows * (length + 1) }, (_, i) => (step * 31 + i * 7 + ((i * i) % 5)) % 40);
  const at = (offset: number) => Int32Array.from({ length: rows * length }, (_, i) => ids[Math.floor(i / length) * (length + 1) + (i % length) + offset]);
  return { inputs: T.tensor(at(0), [rows, length], { dtype: 'int32' }), targets: T.tensor(at(1), [rows, length], { dtype: 'int32' }) };
}

interface RunOptions {
  dropout?: number;
  /** The optimizer's own capture (default true). */
  optimizerCapture?: boolean;
  lr?: LearningRate;
  dtype?: 'float32' | 'float16';
}

/**
 * Losses and recorded dispatches of each step (and of its optimizer update alone), and the LoRA
 * weights at the end, with or without capture.
 */
async function run(
  capture: boolean,
  lengths: number[],
  { dropout = 0, optimizerCapture = true, lr = 1e-2, dtype = 'float32' }: RunOptions = {},
): Promise<{ losses: number[]; dispatches: number[]; updates: number[]; weights: Float32Array[] }> {
  const model = new LlamaForCausalLM(
    { vocab_size: 40, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, initializer_range: 0.3 },
    { seed: 3, dtype },
  );
  linearToLoRALayers(model, { rank: 4, scale: 2, seed: 5, dropout });
  model.train();
  const optimizer = new AdamW(model, { lr });
  optimizer.capture = optimizerCapture;
  const step = valueAndGrad(model, (x: Tensor, y: Tensor) => model.loss(x, y), { capture });
  const backend = T.getBackend();
  const losses: number[] = [];
  const dispatches: number[] = [];
  const updates: number[] = [];
  try {
    for (const [i, length] of lengths.entries()) {
      const { inputs, targets } = batch(i, 2, length);
      // Dispatches the ops recorded (a replay's are counted apart).
      const recorded = () => (backend instanceof WebGPUBackend ? backend.stats.dispatches - backend.stats.replayed : 0);
      const before = recorded();
      let update = 0;
      const loss = T.tidy(() => {
        const [l, grads] = step(inputs, targets);
        const start = recorded();
        optimizer.update(model, grads);
        update = recorded() - start;
        return l;
      });
      dispatches.push(recorded() - before);
      updates.push(update);
      losses.push(await loss.item());
      loss.dispose();
      inputs.dispose();
      targets.dispose();
    }
    const weights = await Promise.all(model.trainableParameters().map(async ([, p]) => Float32Array.from(await p.data())));
    return { losses, dispatches, updates, weights };
  } finally {
    step.dispose();
    optimizer.dispose();
  }
}

describe('valueAndGrad(model, fn, { capture: true }): the step recorded once and replayed', () => {
  afterAll(async () => {
    await T.setBackend('cpu');
  });
  it('webgpu: the same losses and weights as the plain step, with the ops recorded only until the capture; a new shape is captured anew', async (ctx) => {
    try {
      await T.setBackend('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    // Seven steps of one shape, four of another, then the first again. Captured: step 2 (step 1 ran
    // with the parameters the optimizer's first step made), 9 and 13; replayed: those after.
    const lengths = [8, 8, 8, 8, 8, 8, 8, 6, 6, 6, 6, 8, 8, 8, 8];
    const plain = await run(false, lengths);
    const captured = await run(true, lengths);
    expect(captured.losses).toEqual(plain.losses);
    for (const [i, w] of captured.weights.entries()) expect(Array.from(w)).toEqual(Array.from(plain.weights[i]));
    expect(plain.losses.every(Number.isFinite)).toBe(true);
    // Replayed steps record only the input copies and the optimizer: well under half the plain step's dispatches.
    const replayed = [3, 4, 5, 6, 9, 10, 13, 14];
    for (const i of replayed) expect(captured.dispatches[i], `step ${i}`).toBeLessThan(plain.dispatches[i] / 2);
    for (const i of [0, 1, 2, 7, 8, 11, 12]) expect(captured.dispatches[i], `step ${i}`).toBeGreaterThanOrEqual(plain.dispatches[i]);
  });
  it('webgpu: steps that draw random numbers (LoRA dropout while training) run the plain way', async (ctx) => {
    try {
      await T.setBackend('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    T.manualSeed(5);
    const plain = await run(false, [8, 8, 8, 8, 8], { dropout: 0.1 });
    T.manualSeed(5);
    const asked = await run(true, [8, 8, 8, 8, 8], { dropout: 0.1 });
    expect(asked.losses).toEqual(plain.losses);
    expect(asked.dispatches).toEqual(plain.dispatches);
  });
  it("webgpu: AdamW's updates are captured once the same gradients come back and replay each step's learning rate (f32 and f16)", async (ctx) => {
    try {
      await T.setBackend('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    const report = (T.getBackend() as WebGPUBackend).context.report;
    // A schedule, so that every replay must read a new learning rate; one change of shape.
    const lengths = [8, 8, 8, 8, 8, 8, 8, 6, 6, 6, 6, 6];
    const lr = cosineDecay(2e-2, lengths.length);
    for (const dtype of report.shaderF16 ? (['float32', 'float16'] as const) : (['float32'] as const)) {
      const stepByStep = await run(true, lengths, { optimizerCapture: false, lr, dtype });
      const captured = await run(true, lengths, { lr, dtype });
      expect(captured.losses, dtype).toEqual(stepByStep.losses);
      for (const [i, w] of captured.weights.entries()) expect(Array.from(w), `${dtype} weight ${i}`).toEqual(Array.from(stepByStep.weights[i]));
      expect(stepByStep.losses.every(Number.isFinite)).toBe(true);
      // Step 0 makes the moments; the model's step is captured at 2 and its gradients come back at
      // 3, where the updates are captured, to be replayed at 4–6; the new shape's step is captured
      // at 8, the updates at 9, replayed at 10 and 11.
      for (const i of [0, 1, 2, 3, 7, 8, 9]) expect(captured.updates[i], `${dtype} step ${i}`).toBe(stepByStep.updates[i]);
      for (const i of [4, 5, 6, 10, 11]) {
        expect(stepByStep.updates[i], `${dtype} step ${i}`).toBeGreaterThan(0);
        expect(captured.updates[i], `${dtype} step ${i}`).toBe(0);
      }
    }
  });
  it('cpu: nothing to record, the plain step', async () => {
    await T.setBackend('cpu');
    const plain = await run(false, [8, 8, 8, 8]);
    const asked = await run(true, [8, 8, 8, 8]);
    expect(asked.losses).toEqual(plain.losses);
  });
});
