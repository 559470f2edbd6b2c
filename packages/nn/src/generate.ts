import { type CapturedGraph, captureGraph, getBackend, keep, noGrad, randomBits, type Tensor, tensor, tidy, ValueError } from '@metal-lora/tensor';
import { KVCache } from './kv-cache';
import type { LlamaForCausalLM } from './llama';

/** How the next token is chosen from the logits. Defaults change nothing: greedy decoding. */
export interface SamplingOptions {
  /** 0 (default): the most likely token. Above 0: sample from softmax(logits / temperature). */
  temperature?: number;
  /** Sample among the k most likely tokens only; 0 (default): all. */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities sum to topP; 1 (default): all. */
  topP?: number;
  /** Drop tokens less likely than minP × the most likely one's probability; 0 (default): none. */
  minP?: number;
  /** Logits of tokens already in the prompt or reply divided by it (multiplied where negative), as transformers does; 1 (default): off. */
  repetitionPenalty?: number;
  /** Seed of the sampling stream: the same seed gives the same tokens. Default: a fresh one per call. */
  seed?: number;
}

function checkRange(op: string, name: string, value: number | undefined, ok: (v: number) => boolean, expected: string): void {
  if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && ok(value)))
    throw new ValueError(op, `${name} is out of range`, expected, String(value));
}

/** Checks sampling options, naming the first one out of range. */
export function validateSampling(op: string, o: SamplingOptions): void {
  checkRange(op, 'temperature', o.temperature, (v) => v >= 0, 'a number ≥ 0');
  checkRange(op, 'topK', o.topK, (v) => Number.isInteger(v) && v >= 0, 'an integer ≥ 0');
  checkRange(op, 'topP', o.topP, (v) => v > 0 && v <= 1, 'a number in (0, 1]');
  checkRange(op, 'minP', o.minP, (v) => v >= 0 && v < 1, 'a number in [0, 1)');
  checkRange(op, 'repetitionPenalty', o.repetitionPenalty, (v) => v > 0, 'a number > 0');
  checkRange(op, 'seed', o.seed, (v) => Number.isInteger(v), 'an integer');
}

/**
 * Chooses tokens from rows of logits, in transformers' order: repetition penalty, temperature,
 * top-k, top-p, min-p, then a draw from a seeded counter-based stream.
 */
export class Sampler {
  private readonly options: Required<Omit<SamplingOptions, 'seed'>>;
  private readonly seed: number;
  private draws = 0;
  constructor(options: SamplingOptions = {}) {
    validateSampling('Sampler', options);
    this.options = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, ...options };
    this.seed = (options.seed ?? Math.floor(Math.random() * 2 ** 31)) >>> 0;
  }

  /** The next token for one row of logits (only the first `vocab` ids are candidates), given the ids so far. */
  next(logits: ArrayLike<number>, history: readonly number[], vocab = logits.length): number {
    const { temperature, topK, topP, minP, repetitionPenalty } = this.options;
    if (temperature === 0 && repetitionPenalty === 1) {
      // Greedy: the first of the largest, read in place (a copy of a 128k vocabulary is host time per token).
      let best = 0;
      for (let i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
      return best;
    }
    const scores = new Float64Array(vocab);
    for (let i = 0; i < vocab; i++) scores[i] = logits[i];
    if (repetitionPenalty !== 1) {
      for (const id of new Set(history)) {
        if (id < vocab) scores[id] = scores[id] < 0 ? scores[id] * repetitionPenalty : scores[id] / repetitionPenalty;
      }
    }
    let best = 0;
    for (let i = 1; i < vocab; i++) if (scores[i] > scores[best]) best = i;
    if (temperature === 0) return best;
    // Probabilities at this temperature; every later filter sets dropped ones to zero.
    const probs = scores.map((s) => Math.exp((s - scores[best]) / temperature));
    const cut = (threshold: number) => {
      for (let i = 0; i < vocab; i++) if (probs[i] < threshold) probs[i] = 0;
    };
    if (topK > 0 && topK < vocab) cut(Float64Array.from(probs).sort()[vocab - topK]);
    if (topP < 1) {
      // The smallest probability that must stay for the kept ones to sum to topP.
      const sorted = Float64Array.from(probs).sort().reverse();
      const total = sorted.reduce((a, b) => a + b, 0);
      let sum = 0;
      let k = 0;
      while (k < sorted.length - 1 && sum + sorted[k] < topP * total) sum += sorted[k++];
      cut(sorted[k]);
    }
    if (minP > 0) cut(minP * probs[best]);
    const total = probs.reduce((a, b) => a + b, 0);
    let u = (randomBits(this.seed, this.draws++) / 2 ** 32) * total;
    for (let i = 0; i < vocab; i++) {
      if (probs[i] === 0) continue;
      u -= probs[i];
      if (u < 0) return i;
    }
    return best;
  }
}

/** Options of {@link generateIds}. */
export interface GenerateIdsOptions extends SamplingOptions {
  /** Most tokens generated per prompt. */
  maxTokens: number;
  /** Ids that end a row's reply (not included in it). */
  eosTokenIds?: readonly number[];
  /** Only ids below this are ever chosen (a tokenizer smaller than the embedding). Default: the vocabulary. */
  vocabLimit?: number;
  /** Called with each new token of a row still generating and the row's reply so far (that token included); return true to end the row here. */
  onToken?: (row: number, token: number, reply: readonly number[]) => unknown;
  /**
   * Where the backend records device work (the WebGPU backend): keep the cache in buffers of fixed
   * capacity and replay one captured step per token instead of running the ops' JavaScript again
   * (`captureGraph`). Default true; false runs every step through the ops.
   */
  graph?: boolean;
  /** Slots beyond the prompt that the fixed-capacity cache of captured steps starts with; it doubles when full, up to the prompt + maxTokens. Default 512. */
  cacheSlots?: number;
}

const DEFAULT_CACHE_SLOTS = 512;

/** Why a row stopped: an end-of-reply id, `onToken` (a stop string), or `maxTokens`. */
export type FinishReason = 'eos' | 'stop' | 'length';

export interface GenerateIdsResult {
  /** Each row's new tokens (an end-of-reply id is not included). */
  tokens: number[][];
  finishReasons: FinishReason[];
  /** Seconds to the first new token of every row (the prefill and its logits' read-back). */
  prefillSeconds: number;
  /** Seconds of the steps after the first. */
  decodeSeconds: number;
}

function disposeCaptured(captured: { graph: CapturedGraph; logits: Tensor } | null): null {
  captured?.logits.dispose();
  captured?.graph.dispose();
  return null;
}

/**
 * Continues token prompts with a KV cache: the prompts run once (prefill), then one position per
 * step, each step's logits of the last position only read back. Prompts of different lengths run
 * as one batch, left-padded, with the pad slots masked and positions counted from each row's
 * first token, so every row gets the tokens it would get alone. Runs in eval mode (dropout off)
 * and under `noGrad`; LoRA layers apply as they are (merged or not).
 */
export async function generateIds(model: LlamaForCausalLM, prompts: readonly (readonly number[])[], options: GenerateIdsOptions): Promise<GenerateIdsResult> {
  const op = 'generate';
  const vocab = model.config.vocab_size;
  const limit = options.vocabLimit ?? vocab;
  if (!Array.isArray(prompts) || prompts.length === 0) throw new ValueError(op, 'no prompts', 'at least one prompt of token ids', JSON.stringify(prompts));
  for (const p of prompts) {
    if (!Array.isArray(p) || p.length === 0) throw new ValueError(op, 'a prompt has no tokens', 'at least one token id per prompt', JSON.stringify(p));
    const bad = p.find((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad !== undefined) throw new ValueError(op, 'a prompt token is outside the vocabulary', `an integer in 0..${vocab - 1}`, String(bad));
  }
  if (!Number.isInteger(options.maxTokens) || options.maxTokens < 0)
    throw new ValueError(op, 'maxTokens must be a non-negative integer', 'an integer ≥ 0', String(options.maxTokens));
  if (!Number.isInteger(limit) || limit < 1 || limit > vocab)
    throw new ValueError(op, 'vocabLimit is out of range', `an integer in 1..${vocab}`, String(limit));
  const sampler = new Sampler(options);
  const eos = new Set(options.eosTokenIds ?? []);
  const B = prompts.length;
  const width = Math.max(...prompts.map((p) => p.length));
  const padding = prompts.map((p) => width - p.length);
  const tokens: number[][] = prompts.map(() => []);
  const history = prompts.map((p) => [...p]);
  const finishReasons: (FinishReason | null)[] = prompts.map(() => null);
  const forward = (ids: Tensor) => tidy(() => noGrad(() => model.forward(ids, { cache, logits: 'last' })));
  const graphs = options.graph !== false && typeof getBackend().capture === 'function' && options.maxTokens > 1;
  // Slots the last step needs: the prompt and every new token but the last.
  const needed = width + Math.max(0, options.maxTokens - 1);
  const slots = options.cacheSlots ?? DEFAULT_CACHE_SLOTS;
  if (!Number.isInteger(slots) || slots < 1) throw new ValueError(op, 'cacheSlots must be a positive integer', 'an integer ≥ 1', String(slots));
  const cache = new KVCache(model.config.num_hidden_layers, { padding, capacity: graphs ? Math.min(needed, width + slots) : undefined });
  // A decode step (one position) runs through the ops once for the cache to make its step
  // inputs, is captured the next time, and replayed after that.
  let captured: { graph: CapturedGraph; logits: Tensor } | null = null;
  let plainSteps = 0;
  const wasTraining = model.training;
  model.eval();
  const started = performance.now();
  let prefillSeconds = 0;
  const prompt = tensor(Int32Array.from(prompts.flatMap((p, b) => [...new Array(padding[b]).fill(0), ...p])), [B, width], { dtype: 'int32' });
  let input: Tensor | null = null;
  const next = new Int32Array(B);
  try {
    for (let step = 0; step < options.maxTokens; step++) {
      let logits: Tensor;
      let owned = true;
      if (step === 0) {
        logits = forward(prompt);
        prompt.dispose();
      } else {
        const capacity = cache.capacity;
        if (capacity !== null && cache.length + 1 > capacity) {
          captured = disposeCaptured(captured);
          cache.grow(Math.min(needed, 2 * capacity));
          plainSteps = 0;
        }
        input ??= keep(tensor(new Int32Array(B), [B, 1], { dtype: 'int32' }));
        input.write(next);
        const ids = input;
        if (captured) {
          cache.prepare();
          captured.graph.replay();
          cache.length += 1;
          logits = captured.logits;
          owned = false;
        } else if (graphs && plainSteps > 0) {
          cache.prepare();
          const run = captureGraph(() => forward(ids));
          if (!run) throw new ValueError(op, 'the backend lost its capture', 'a backend that records device work', getBackend().name);
          captured = { graph: run.graph, logits: run.result };
          logits = run.result;
          owned = false;
        } else {
          logits = forward(ids);
          plainSteps++;
        }
      }
      const pending = logits.data();
      // The next replay's commands are encoded while the device runs this step.
      captured?.graph.prepare();
      const values = await pending;
      if (owned) logits.dispose();
      if (step === 0) prefillSeconds = (performance.now() - started) / 1000;
      for (let b = 0; b < B; b++) {
        if (finishReasons[b]) continue;
        const token = sampler.next(values.subarray(b * vocab, (b + 1) * vocab), history[b], limit);
        next[b] = token;
        if (eos.has(token)) {
          finishReasons[b] = 'eos';
          continue;
        }
        tokens[b].push(token);
        history[b].push(token);
        if (options.onToken?.(b, token, tokens[b]) === true) finishReasons[b] = 'stop';
      }
      if (finishReasons.every((r) => r !== null)) break;
    }
  } finally {
    if (!prompt.isDisposed) prompt.dispose();
    input?.dispose();
    disposeCaptured(captured);
    cache.dispose();
    if (wasTraining) model.train();
  }
  return {
    tokens,
    finishReasons: finishReasons.map((r) => r ?? 'length'),
    prefillSeconds,
    decodeSeconds: Math.max(0, (performance.now() - started) / 1000 - prefillSeconds),
  };
}
