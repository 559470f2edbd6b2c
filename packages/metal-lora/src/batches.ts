import { FormatError, type Tensor, tensor } from '@metal-lora/tensor';

/**
 * Fixed-length training windows from a token stream: `inputs` and `targets` `[batch, length]`
 * (targets shifted by one), windows chosen by a seeded counter so runs repeat.
 */
export function batchOf(
  stream: Int32Array,
  batch: number,
  length: number,
  step: number,
  seed: number,
  pick: (key: number, counter: number) => number,
): { inputs: Tensor; targets: Tensor } {
  const span = stream.length - length - 1;
  if (span <= 0) throw new FormatError('data', 'not enough tokens for one sequence', {}, `more than ${length + 1} tokens`, `${stream.length}`);
  const x = new Int32Array(batch * length);
  const y = new Int32Array(batch * length);
  for (let b = 0; b < batch; b++) {
    const start = pick(seed, step * batch + b) % span;
    x.set(stream.subarray(start, start + length), b * length);
    y.set(stream.subarray(start + 1, start + 1 + length), b * length);
  }
  return { inputs: tensor(x, [batch, length]), targets: tensor(y, [batch, length]) };
}
