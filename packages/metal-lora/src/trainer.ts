import { Adam, type LlamaForCausalLM, valueAndGrad, warmupCosine } from '@metal-lora/nn';
import { noGrad, randomBits, type Tensor, tidy, ValueError } from '@metal-lora/tensor';
import { batchOf } from './batches';

export interface TrainOptions {
  iters: number;
  batch: number;
  length: number;
  lr: number;
  seed?: number;
  /** Called after each step with the step (1-based), its loss and the tokens per second so far. */
  onStep?: (step: number, loss: number, tokensPerSecond: number) => void;
  /** How often to read the loss back (a GPU sync); the progress display uses these steps. */
  reportEvery?: number;
}

/** Mean cross-entropy over `batches` fixed windows of a token stream (no gradients). */
export async function evaluate(
  model: LlamaForCausalLM,
  stream: Int32Array,
  options: { batches: number; batch: number; length: number; seed?: number },
): Promise<number> {
  const wasTraining = model.training;
  model.eval();
  let total = 0;
  for (let i = 0; i < options.batches; i++) {
    const { inputs, targets } = batchOf(stream, options.batch, options.length, i, options.seed ?? 999, randomBits);
    const loss = tidy(() => noGrad(() => model.loss(inputs, targets)));
    total += await loss.item();
    for (const t of [loss, inputs, targets]) t.dispose();
  }
  model.train(wasTraining);
  return total / options.batches;
}

/**
 * Trains the model's trainable parameters with Adam and a warm-up + cosine schedule. A loss that
 * is not finite when it is read back (every `reportEvery` steps) stops training with a `ValueError`.
 */
export async function trainLoop(model: LlamaForCausalLM, stream: Int32Array, options: TrainOptions): Promise<number> {
  const optimizer = new Adam(model, { lr: warmupCosine(options.lr, Math.max(1, Math.floor(options.iters / 10)), options.iters, options.lr / 10) });
  // Captured after its first steps and replayed: the loss is read right after its step, before the next replay overwrites it.
  const step = valueAndGrad(model, (x: Tensor, y: Tensor) => model.loss(x, y), { capture: true });
  const started = performance.now();
  const every = options.reportEvery ?? 10;
  let last = Number.NaN;
  try {
    for (let i = 1; i <= options.iters; i++) {
      const { inputs, targets } = batchOf(stream, options.batch, options.length, i, options.seed ?? 1, randomBits);
      const loss = tidy(() => {
        const [l, grads] = step(inputs, targets);
        optimizer.update(model, grads);
        return l;
      });
      inputs.dispose();
      targets.dispose();
      if (i % every === 0 || i === options.iters || i === 1) {
        last = await loss.item();
        if (!Number.isFinite(last)) {
          loss.dispose();
          throw new ValueError(
            'trainLoop',
            `the loss is ${last} at step ${i}: training diverged`,
            'a finite loss (a lower learning rate usually helps)',
            String(last),
          );
        }
        const seconds = (performance.now() - started) / 1000;
        options.onStep?.(i, last, (i * options.batch * options.length) / seconds);
      }
      loss.dispose();
    }
  } finally {
    step.dispose();
  }
  return last;
}
