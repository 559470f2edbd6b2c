import {
  type Backend,
  concat,
  type DType,
  isGradEnabled,
  keep,
  StateError,
  type Tensor,
  tensor,
  ValueError,
  writeKV,
  writeSlice,
  zeros,
} from '@metal-lora/tensor';
import { type RopeTables, ropeTables, ropeTableValues } from './rope';

/** A kept tensor of a cache's step inputs: `fill(length)` gives its values, last written at length `at`. */
interface StepInput {
  tensor: Tensor;
  fill: (length: number) => ArrayLike<number>;
  at: number;
}

/**
 * The keys and values a causal model has computed, per layer, so that generation runs the prompt
 * once (prefill) and then one position per token. Keys are stored after RoPE, before grouped heads
 * are shared: `[B, kvHeads, length, headDim]`.
 *
 * A batch of prompts of different lengths is left-padded: `padding[b]` slots at the start of row
 * b hold no token, are never attended to, and the row's positions count from its first real
 * token (as transformers' `generate` does with an attention mask).
 *
 * With a `capacity` the keys and values live in buffers of that many slots, allocated once
 * (zeros) and written in place, and attention reads all of them (the unwritten slots masked): a
 * step's shapes and buffers are then the same at every length, which lets generation capture one
 * step and replay it (`captureGraph`). The masks, RoPE tables and write position such a step
 * needs are kept in the cache too ({@link KVCache.stepInput}) and rewritten when the length moves.
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
  /** Slots per row of a fixed-capacity cache, or null (the cache grows by concatenation). */
  get capacity(): number | null {
    return this.slots;
  }
  private slots: number | null;
  private readonly entries: ({ k: Tensor; v: Tensor } | undefined)[];
  private readonly inputs = new Map<string, StepInput>();

  constructor(
    readonly layers: number,
    options: { padding?: readonly number[]; capacity?: number } = {},
  ) {
    if (!Number.isInteger(layers) || layers < 1)
      throw new ValueError('KVCache', 'the layer count must be a positive integer', 'an integer ≥ 1', String(layers));
    const padding = options.padding ?? null;
    if (padding && !padding.every((p) => Number.isInteger(p) && p >= 0))
      throw new ValueError('KVCache', 'padding must be non-negative integers', 'one count per row', JSON.stringify(padding));
    this.padding = padding?.some((p) => p > 0) ? [...padding] : null;
    const capacity = options.capacity ?? null;
    if (capacity !== null && !(Number.isInteger(capacity) && capacity >= 1))
      throw new ValueError('KVCache', 'the capacity must be a positive integer', 'an integer ≥ 1', String(capacity));
    this.slots = capacity;
    this.entries = new Array(layers).fill(undefined);
  }

  /**
   * A tensor that depends only on the cache's length (a mask, a RoPE table, the write position),
   * made by `fill(length)` once and kept across steps, rewritten in place whenever the length has
   * moved since: a captured step bound to it reads the current values after {@link prepare}.
   */
  stepInput(key: string, shape: readonly number[], dtype: DType, backend: Backend, fill: (length: number) => ArrayLike<number>): Tensor {
    const entry = this.inputs.get(key);
    if (!entry) {
      const tensorOf = keep(tensor(Float64Array.from(fill(this.length)), shape, { dtype, backend }));
      this.inputs.set(key, { tensor: tensorOf, fill, at: this.length });
      return tensorOf;
    }
    this.refresh(entry);
    return entry.tensor;
  }

  /** Rewrites every step input for the current length (before replaying a captured step). */
  prepare(): void {
    for (const entry of this.inputs.values()) this.refresh(entry);
  }

  /** A step input rewritten in place if the length has moved since it was written. */
  private refresh(entry: StepInput): void {
    if (entry.at === this.length) return;
    entry.tensor.write(entry.fill(this.length));
    entry.at = this.length;
  }

  /**
   * Moves a fixed-capacity cache's contents into `capacity` slots (more than now). The step
   * inputs are dropped (their shapes follow the capacity): a step captured before must be
   * captured again.
   */
  grow(capacity: number): void {
    const current = this.slots;
    if (current === null) throw new StateError('KVCache', 'only a fixed-capacity cache grows; expected one made with a capacity, got one without');
    if (!(Number.isInteger(capacity) && capacity > current))
      throw new ValueError('KVCache', 'a cache grows to more slots than it has', `an integer > ${current}`, String(capacity));
    const at = tensor(new Int32Array(1), [1], { dtype: 'int32' });
    try {
      this.entries.forEach((e, i) => {
        if (!e) return;
        const [B, H, , D] = e.k.shape;
        const next = zeroedSlots([B, H, capacity, D], e.k);
        writeSlice(next.k, e.k, at, 2);
        writeSlice(next.v, e.v, at, 2);
        e.k.dispose();
        e.v.dispose();
        this.entries[i] = next;
      });
    } finally {
      at.dispose();
    }
    this.slots = capacity;
    this.disposeInputs();
  }

  /**
   * Appends layer `layer`'s keys and values for the new positions and returns all of them. The
   * stored tensors outlive `tidy` scopes; the ones they replace are disposed.
   */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    if (isGradEnabled()) throw new StateError('KVCache', 'a cache holds inference results: run the forward pass under noGrad');
    if (this.slots !== null)
      return this.write(layer, k.shape[2], [k.shape[0], k.shape[1], k.shape[3]], k, (e, at) => {
        writeSlice(e.k, k, at, 2);
        writeSlice(e.v, v, at, 2);
      });
    const old = this.entries[layer];
    const next = old ? { k: keep(concat([old.k, k], 2)), v: keep(concat([old.v, v], 2)) } : { k: keep(k), v: keep(v) };
    if (old) {
      old.k.dispose();
      old.v.dispose();
    }
    this.entries[layer] = next;
    return next;
  }

  /**
   * A fixed-capacity cache's update from the projections, one `writeKV`: k and v in the
   * projection's layout `[B, T, kvHeads, headDim]`, the keys rotated by `rotary` (RoPE's tables)
   * on the way in. Returns all of the layer's slots, as {@link update} does.
   */
  writeProjected(layer: number, k: Tensor, v: Tensor, rotary?: RopeTables): { k: Tensor; v: Tensor } {
    if (isGradEnabled()) throw new StateError('KVCache', 'a cache holds inference results: run the forward pass under noGrad');
    if (this.slots === null)
      throw new StateError('KVCache', 'only a fixed-capacity cache is written in place; expected one made with a capacity, got one without');
    const [B, T, H, D] = k.shape;
    return this.write(layer, T, [B, H, D], k, (e, at) => writeKV(e.k, e.v, k, v, at, rotary));
  }

  /** A fixed-capacity cache's update: the new positions written in place at the current length. */
  private write(layer: number, T: number, [B, H, D]: number[], like: Tensor, put: (e: { k: Tensor; v: Tensor }, at: Tensor) => void): { k: Tensor; v: Tensor } {
    const capacity = this.slots!;
    if (this.length + T > capacity)
      throw new ValueError('KVCache', 'the cache is full', `at most ${capacity} slots (grow() it first)`, `${this.length} + ${T}`);
    let e = this.entries[layer];
    if (!e) this.entries[layer] = e = zeroedSlots([B, H, capacity, D], like);
    put(
      e,
      this.stepInput('write position', [1], 'int32', like.backend, (length) => [length]),
    );
    return e;
  }

  private disposeInputs(): void {
    for (const { tensor } of this.inputs.values()) tensor.dispose();
    this.inputs.clear();
  }

  /** Frees every cached tensor; the cache is empty afterwards. */
  dispose(): void {
    for (const e of this.entries) {
      e?.k.dispose();
      e?.v.dispose();
    }
    this.entries.fill(undefined);
    this.disposeInputs();
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
  /** Whether attention keeps q, k, v and recomputes its probabilities in backward: set by `LlamaModel` for a training pass without a cache or whole-block checkpoints (`recomputeAttention`). */
  recompute = false;
  /** Whether attention runs as one fused op (`LlamaModel.fusedAttention`). */
  fused = false;
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
   * Whether the masks and RoPE tables are the cache's step inputs (kept and rewritten in place):
   * one new position per row in a fixed-capacity cache, the step generation captures. A prefill
   * makes its own.
   */
  private get stepInputs(): boolean {
    return !!this.cache?.capacity && this.steps === 1;
  }

  /** Key slots attention reads: {@link total}, or every slot of a fixed-capacity cache (those past the total masked). */
  get keys(): number {
    return this.cache?.capacity ?? this.total;
  }

  /**
   * The additive mask `[T, keys]` (or `[B, 1, 1, T, keys]` with padding): query slot i sees key
   * slot j when j ≤ i, i − j < window, and j is not a pad slot of its row.
   */
  mask(window: number | null): Tensor {
    const key = window ?? 0;
    let m = this.masks.get(key);
    if (m) return m;
    const { steps: T, keys } = this;
    const options = { dtype: this.like.dtype, backend: this.like.backend };
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
      m = tensor(values, [this.batch, 1, 1, T, T], options);
      this.masks.set(key, m);
      return m;
    }
    const padding = this.cache?.padding ?? null;
    const rows = padding ?? [0];
    const fill = (offset: number) => {
      const values = new Float64Array(rows.length * T * keys);
      rows.forEach((pad, b) => {
        for (let t = 0; t < T; t++) {
          const i = offset + t;
          const base = (b * T + t) * keys;
          for (let j = 0; j < keys; j++) if (j > i || j < pad || (window !== null && i - j >= window)) values[base + j] = -1e9;
        }
      });
      return values;
    };
    const shape = padding ? [rows.length, 1, 1, T, keys] : [T, keys];
    m = this.stepInputs ? this.cache!.stepInput(`mask ${key}`, shape, options.dtype, options.backend, fill) : tensor(fill(this.offset), shape, options);
    this.masks.set(key, m);
    return m;
  }

  /** RoPE tables of this pass's positions for one set of inverse frequencies. */
  rope(invFreq: Float64Array): RopeTables {
    let t = this.tables.get(invFreq);
    if (t) return t;
    const { steps: T } = this;
    const padding = this.cache?.padding;
    const starts = this.starts;
    const positions = (offset: number) =>
      starts
        ? starts.map((start) => Array.from(start, (s, i) => i - s))
        : padding
          ? padding.map((pad) => Array.from({ length: T }, (_, s) => Math.max(0, offset + s - pad)))
          : Array.from({ length: T }, (_, s) => offset + s);
    const cache = this.cache;
    if (cache && this.stepInputs) {
      // Kept in the cache, keyed by the frequencies' values: layers that share them share the tables.
      const id = `rope ${frequencyKey(invFreq)}`;
      const { shape } = ropeTableValues(invFreq, positions(0));
      const { dtype, backend } = this.like;
      t = {
        cos: cache.stepInput(`${id} cos`, shape, dtype, backend, (offset) => ropeTableValues(invFreq, positions(offset)).cos),
        sin: cache.stepInput(`${id} sin`, shape, dtype, backend, (offset) => ropeTableValues(invFreq, positions(offset)).sin),
      };
    } else t = ropeTables(invFreq, positions(this.offset), this.like);
    this.tables.set(invFreq, t);
    return t;
  }
}

/** Zeroed buffers of `shape` for a layer's keys and values, in the dtype and backend of `like`, kept beyond `tidy`. */
function zeroedSlots(shape: number[], like: Tensor): { k: Tensor; v: Tensor } {
  const zeroed = () => keep(zeros(shape, { dtype: like.dtype, backend: like.backend }));
  return { k: zeroed(), v: zeroed() };
}

const frequencyKeys = new WeakMap<Float64Array, string>();
function frequencyKey(invFreq: Float64Array): string {
  let key = frequencyKeys.get(invFreq);
  if (key === undefined) frequencyKeys.set(invFreq, (key = Array.from(invFreq).join(',')));
  return key;
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
