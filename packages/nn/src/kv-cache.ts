import { concat, isGradEnabled, keep, StateError, type Tensor, tensor, ValueError } from '@metal-lora/tensor';
import { type RopeTables, ropeTables } from './rope';

/**
 * The keys and values a causal model has computed, per layer, so that generation runs the prompt
 * once (prefill) and then one position per token. Keys are stored after RoPE, before grouped heads
 * are shared: `[B, kvHeads, length, headDim]`.
 *
 * A batch of prompts of different lengths is left-padded: `padding[b]` slots at the start of row
 * b hold no token, are never attended to, and the row's positions count from its first real
 * token (as transformers' `generate` does with an attention mask).
 *
 * @example
 * const cache = new KVCache(model.config.num_hidden_layers);
 * let logits = model.forward(promptIds, { cache, logits: 'last' }); // prefill
 * logits = model.forward(nextId, { cache, logits: 'last' });        // one step
 * cache.dispose();
 */
export class KVCache {
  /** Slots cached so far in every row, pad slots included. */
  length = 0;
  readonly padding: readonly number[] | null;
  private readonly entries: ({ k: Tensor; v: Tensor } | undefined)[];

  constructor(
    readonly layers: number,
    options: { padding?: readonly number[] } = {},
  ) {
    if (!Number.isInteger(layers) || layers < 1)
      throw new ValueError('KVCache', 'the layer count must be a positive integer', 'an integer ≥ 1', String(layers));
    const padding = options.padding ?? null;
    if (padding && !padding.every((p) => Number.isInteger(p) && p >= 0))
      throw new ValueError('KVCache', 'padding must be non-negative integers', 'one count per row', JSON.stringify(padding));
    this.padding = padding?.some((p) => p > 0) ? [...padding] : null;
    this.entries = new Array(layers).fill(undefined);
  }

  /**
   * Appends layer `layer`'s keys and values for the new positions and returns all of them. The
   * stored tensors outlive `tidy` scopes; the ones they replace are disposed.
   */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    if (isGradEnabled()) throw new StateError('KVCache', 'a cache holds inference results: run the forward pass under noGrad');
    const old = this.entries[layer];
    const next = old ? { k: keep(concat([old.k, k], 2)), v: keep(concat([old.v, v], 2)) } : { k: keep(k), v: keep(v) };
    if (old) {
      old.k.dispose();
      old.v.dispose();
    }
    this.entries[layer] = next;
    return next;
  }

  /** Frees every cached tensor; the cache is empty afterwards. */
  dispose(): void {
    for (const e of this.entries) {
      e?.k.dispose();
      e?.v.dispose();
    }
    this.entries.fill(undefined);
    this.length = 0;
  }
}

/**
 * What every attention layer of one forward pass shares: the positions of the new tokens, and the
 * masks and RoPE tables, computed once per pass (per window size and per frequency set) rather
 * than once per layer.
 */
export class AttentionContext {
  readonly batch: number;
  /** New positions in this pass. */
  readonly steps: number;
  /** Cache slots before this pass. */
  readonly offset: number;
  readonly cache: KVCache | undefined;
  private readonly like: Tensor;
  private readonly masks = new Map<number, Tensor>();
  private readonly tables = new Map<Float64Array, RopeTables>();

  /** Packed rows: per row, the start of each position's document (positions count from it; attention stays inside it). */
  private readonly starts: Int32Array[] | null;

  constructor(x: Tensor, cache?: KVCache, segments?: readonly (readonly number[])[]) {
    [this.batch, this.steps] = x.shape;
    this.cache = cache;
    this.offset = cache?.length ?? 0;
    this.like = x;
    const padding = cache?.padding;
    if (padding && padding.length !== this.batch)
      throw new ValueError('KVCache', 'padding must have one count per row of the batch', `${this.batch} counts`, String(padding.length));
    this.starts = segments ? documentStarts(segments, this.batch, this.steps, cache) : null;
  }

  /** Keys visible to this pass: the cached ones and the new ones. */
  get total(): number {
    return this.offset + this.steps;
  }

  /**
   * The additive mask `[T, total]` (or `[B, 1, 1, T, total]` with padding): query slot i sees key
   * slot j when j ≤ i, i − j < window, and j is not a pad slot of its row.
   */
  mask(window: number | null): Tensor {
    const key = window ?? 0;
    let m = this.masks.get(key);
    if (m) return m;
    const { steps: T, total, offset } = this;
    if (this.starts) {
      const starts = this.starts;
      // The mask is [B, 1, 1, T, T] on the host and the device: refuse sizes that cannot be held.
      if (this.batch * T * T > 1 << 28)
        throw new ValueError(
          'forward',
          'packed rows this long need a mask too large to hold',
          `batch · T² ≤ ${1 << 28} (a shorter maximum length or fewer rows)`,
          `${this.batch} · ${T}²`,
        );
      const values = new Float32Array(this.batch * T * T);
      starts.forEach((start, b) => {
        for (let i = 0; i < T; i++)
          for (let j = 0; j < T; j++) if (j > i || j < start[i] || (window !== null && i - j >= window)) values[(b * T + i) * T + j] = -1e9;
      });
      m = tensor(values, [this.batch, 1, 1, T, T], { dtype: this.like.dtype, backend: this.like.backend });
      this.masks.set(key, m);
      return m;
    }
    const padding = this.cache?.padding ?? null;
    const rows = padding ?? [0];
    const values = new Float64Array(rows.length * T * total);
    rows.forEach((pad, b) => {
      for (let t = 0; t < T; t++) {
        const i = offset + t;
        const base = (b * T + t) * total;
        for (let j = 0; j < total; j++) if (j > i || j < pad || (window !== null && i - j >= window)) values[base + j] = -1e9;
      }
    });
    m = tensor(values, padding ? [rows.length, 1, 1, T, total] : [T, total], { dtype: this.like.dtype, backend: this.like.backend });
    this.masks.set(key, m);
    return m;
  }

  /** RoPE tables of this pass's positions for one set of inverse frequencies. */
  rope(invFreq: Float64Array): RopeTables {
    let t = this.tables.get(invFreq);
    if (t) return t;
    const { steps: T, offset } = this;
    const padding = this.cache?.padding;
    const starts = this.starts;
    const positions = starts
      ? starts.map((start) => Array.from(start, (s, i) => i - s))
      : padding
        ? padding.map((pad) => Array.from({ length: T }, (_, s) => Math.max(0, offset + s - pad)))
        : Array.from({ length: T }, (_, s) => offset + s);
    t = ropeTables(invFreq, positions, this.like);
    this.tables.set(invFreq, t);
    return t;
  }
}

/**
 * Per row, the first position of each position's document, from the rows' document lengths (the
 * positions after the last document form one more span of padding).
 */
function documentStarts(segments: readonly (readonly number[])[], batch: number, steps: number, cache: KVCache | undefined): Int32Array[] {
  const op = 'forward';
  if (cache) throw new ValueError(op, 'segments (packed documents) cannot be used with a KV cache', 'no cache', 'a cache');
  if (!Array.isArray(segments) || segments.length !== batch)
    throw new ValueError(op, 'segments must list the document lengths of every row', `${batch} rows`, String((segments as unknown[])?.length));
  return segments.map((lengths, b) => {
    const start = new Int32Array(steps);
    let at = 0;
    for (const n of lengths) {
      if (!Number.isInteger(n) || n < 1 || at + n > steps)
        throw new ValueError(op, `row ${b}'s document lengths must be positive integers that fit the row`, `a sum ≤ ${steps}`, JSON.stringify(lengths));
      start.fill(at, at, at + n);
      at += n;
    }
    start.fill(at, at, steps);
    return start;
  });
}
