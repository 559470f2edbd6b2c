/**
 * Batches of tokenized examples for training and evaluation, as a pure function of (examples,
 * options, batch index): examples sorted by length and grouped into batches of similar length,
 * the batches' order shuffled per epoch by the seed. A run resumed at step k sees the same batches
 * as one that never stopped.
 *
 * Padded mode (default): each batch is `[rows, T]` with T the longest example's inputs rounded up
 * to a multiple of 32 (at most `maxSeqLength`); pad positions and masked prompt tokens have target
 * -100 (not counted). Packed mode (`pack`): examples are laid end to end in rows of `maxSeqLength`
 * positions, each with its own attention span and positions (`segments`), so no compute is spent
 * on padding.
 */
import { randomBits, ValueError } from '@metal-lora/tensor';
import type { Example } from './dataset';

export interface Batch {
  /** `[rows · length]` input ids (pad: 0). */
  inputs: Int32Array;
  /** `[rows · length]` target ids, -100 where the loss does not count. */
  targets: Int32Array;
  rows: number;
  length: number;
  /** Targets that count. */
  trainedTokens: number;
  /** Packed batches: per row, the lengths of its documents in order (the rest of the row is padding). */
  segments?: number[][];
}

export interface BatchOptions {
  batchSize: number;
  /** Longest sequence (inputs) in a batch; packed rows have exactly this many positions. Default 2048. */
  maxSeqLength?: number;
  /** Order of the batches within each epoch (default 0); the examples' grouping never changes. */
  seed?: number;
  /** Shuffle the batch order per epoch (default true; evaluation passes false). */
  shuffle?: boolean;
  /** Lay examples end to end in rows with per-document attention instead of padding them. */
  pack?: boolean;
}

/** A seeded permutation of 0..n-1 (Fisher–Yates on the counter-based generator). */
function permutation(n: number, key: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = randomBits(key, i) % (i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

/**
 * The batches of a split. `count` per epoch; `at(k)` is the k-th batch of an endless run (epoch
 * `floor(k / count)`), the same whenever it is asked for.
 */
export class BatchPlan {
  /** Example indices of each batch (padded mode) or of each row (packed mode). */
  private readonly groups: number[][];
  readonly count: number;
  readonly maxSeqLength: number;
  private readonly rowsPerBatch: number;

  constructor(
    private readonly examples: readonly Example[],
    private readonly options: BatchOptions,
  ) {
    const { batchSize } = options;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1)
      throw new ValueError('BatchPlan', 'batchSize must be a positive integer', 'an integer ≥ 1', String(batchSize));
    this.maxSeqLength = options.maxSeqLength ?? 2048;
    if (!Number.isSafeInteger(this.maxSeqLength) || this.maxSeqLength < 1)
      throw new ValueError('BatchPlan', 'maxSeqLength must be a positive integer', 'an integer ≥ 1', String(options.maxSeqLength));
    if (examples.length === 0) throw new ValueError('BatchPlan', 'there are no examples', 'at least one example', '0');
    for (const e of examples) {
      if (e.ids.length < 2 || e.weights.length !== e.ids.length)
        throw new ValueError(
          'BatchPlan',
          'an example needs at least 2 ids and one weight per id',
          'ids.length ≥ 2 = weights.length',
          `${e.ids.length} ids, ${e.weights.length} weights`,
        );
      if (e.ids.length > this.maxSeqLength + 1)
        throw new ValueError(
          'BatchPlan',
          'an example is longer than maxSeqLength + 1 tokens (load the data with the same maxSeqLength)',
          `≤ ${this.maxSeqLength + 1}`,
          String(e.ids.length),
        );
    }
    const byLength = examples.map((e, i) => [e.ids.length, i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    if (options.pack) {
      // First fit in length order (longest first) into rows of maxSeqLength positions: an example
      // of n ids takes n - 1 positions (its last id is only a target).
      const rows: { free: number; items: number[] }[] = [];
      for (const [n, i] of byLength.reverse()) {
        const need = n - 1;
        const row = rows.find((r) => r.free >= need);
        if (row) {
          row.free -= need;
          row.items.push(i);
        } else rows.push({ free: this.maxSeqLength - need, items: [i] });
      }
      this.groups = rows.map((r) => r.items);
      this.rowsPerBatch = Math.min(batchSize, this.groups.length);
    } else {
      this.groups = [];
      for (let s = 0; s < byLength.length; s += batchSize) this.groups.push(byLength.slice(s, s + batchSize).map(([, i]) => i));
      this.rowsPerBatch = batchSize;
    }
    this.count = options.pack ? Math.ceil(this.groups.length / this.rowsPerBatch) : this.groups.length;
  }

  /** Batch `k` (0-based) of an endless run. */
  at(k: number): Batch {
    if (!Number.isSafeInteger(k) || k < 0) throw new ValueError('BatchPlan.at', 'the batch index must be a non-negative integer', 'an integer ≥ 0', String(k));
    const epoch = Math.floor(k / this.count);
    const order = this.options.shuffle === false ? null : permutation(this.count, randomBits(this.options.seed ?? 0, epoch));
    const index = order ? order[k % this.count] : k % this.count;
    if (!this.options.pack) return this.padded(this.groups[index]);
    const rows = this.groups.slice(index * this.rowsPerBatch, (index + 1) * this.rowsPerBatch);
    return this.packed(rows);
  }

  /** The batches of one epoch in order (`epoch` 0 unshuffled when `shuffle` is false). */
  *epoch(epoch = 0): Generator<Batch> {
    for (let i = 0; i < this.count; i++) yield this.at(epoch * this.count + i);
  }

  private padded(members: number[]): Batch {
    const longest = Math.max(...members.map((i) => this.examples[i].ids.length - 1));
    const length = Math.min(this.maxSeqLength, Math.ceil(longest / 32) * 32);
    const rows = members.length;
    const inputs = new Int32Array(rows * length);
    const targets = new Int32Array(rows * length).fill(-100);
    let trainedTokens = 0;
    members.forEach((i, r) => {
      trainedTokens += place(this.examples[i], inputs, targets, r * length);
    });
    return { inputs, targets, rows, length, trainedTokens };
  }

  private packed(rowsOfExamples: number[][]): Batch {
    const length = this.maxSeqLength;
    const rows = rowsOfExamples.length;
    const inputs = new Int32Array(rows * length);
    const targets = new Int32Array(rows * length).fill(-100);
    let trainedTokens = 0;
    const segments = rowsOfExamples.map((members, r) => {
      let at = r * length;
      return members.map((i) => {
        const e = this.examples[i];
        trainedTokens += place(e, inputs, targets, at);
        at += e.ids.length - 1;
        return e.ids.length - 1;
      });
    });
    return { inputs, targets, rows, length, trainedTokens, segments };
  }
}

/** Writes one example's inputs and targets at `offset`; returns its trained targets. */
function place(e: Example, inputs: Int32Array, targets: Int32Array, offset: number): number {
  let trained = 0;
  for (let t = 0; t + 1 < e.ids.length; t++) {
    inputs[offset + t] = e.ids[t];
    if (e.weights[t + 1]) {
      targets[offset + t] = e.ids[t + 1];
      trained++;
    }
  }
  return trained;
}

/**
 * The batches of `examples` for `epochs` epochs (default 1) in the order training takes them
 * (`new BatchPlan(examples, options).at(k)` for k = 0, 1, …).
 */
export function* iterateBatches(examples: readonly Example[], options: BatchOptions & { epochs?: number }): Generator<Batch> {
  const plan = new BatchPlan(examples, options);
  const epochs = options.epochs ?? 1;
  if (!Number.isSafeInteger(epochs) || epochs < 1)
    throw new ValueError('iterateBatches', 'epochs must be a positive integer', 'an integer ≥ 1', String(epochs));
  for (let k = 0; k < plan.count * epochs; k++) yield plan.at(k);
}
