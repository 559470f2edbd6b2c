import { type FinishReason, generateIds, type LlamaForCausalLM, type SamplingOptions } from '@metal-lora/nn';
import { ValueError } from '@metal-lora/tensor';
import type { ChatMessage } from './hf-tokenizer';
import type { TextTokenizer } from './tokenizer';

/** A prompt: plain text (encoded as is, with the tokenizer's BOS), or a conversation rendered by the model's chat template. */
export type Prompt = string | readonly ChatMessage[];

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens (default 256). */
  maxTokens?: number;
  /** Text that ends the reply where it first appears (not included in it). */
  stop?: string | readonly string[];
  /** Ids that end the reply, besides the tokenizer's EOS token (e.g. `loadModel`'s `generation.eosTokenIds`). */
  eosTokenIds?: readonly number[];
  /**
   * Streams the reply: called with each new piece of text as soon as it is whole (a character
   * split across tokens waits for its last byte; text that may begin a stop string waits until it
   * does not). The pieces of one prompt join to its `text`.
   */
  onText?: (piece: string, prompt: number) => void;
}

export interface GenerateResult {
  /** The reply (special tokens left out). */
  text: string;
  /** Its token ids (without the end-of-reply id; through the token that completed a stop string). */
  tokens: number[];
  finishReason: FinishReason;
  promptTokens: number;
  /** Seconds to the first token, and tokens per second after it. */
  timeToFirstToken: number;
  tokensPerSecond: number;
}

/** Tokenizers that can render a conversation (`HFTokenizer` with a chat template). */
interface ChatTokenizer extends TextTokenizer {
  applyChatTemplate(messages: readonly ChatMessage[], options?: { addGenerationPrompt?: boolean }): string;
  tokenId?(token: string): number | undefined;
  readonly eosToken?: string;
}

/** The prompt's token ids: text with the tokenizer's special tokens, a conversation through its chat template. */
export function encodePrompt(tokenizer: TextTokenizer, prompt: Prompt): number[] {
  if (typeof prompt === 'string') return tokenizer.encode(prompt);
  const chat = tokenizer as Partial<ChatTokenizer>;
  if (typeof chat.applyChatTemplate !== 'function')
    throw new ValueError('generate', 'a conversation needs a tokenizer with a chat template', 'an HFTokenizer, or a text prompt', 'a character tokenizer');
  // The template writes BOS itself where the model wants one.
  return tokenizer.encode(chat.applyChatTemplate(prompt, { addGenerationPrompt: true }), { addSpecialTokens: false });
}

/** Streams one prompt's reply as text: whole characters only, a possible stop string held back, the reply cut at a stop string. */
class TextStream {
  text = '';
  private sent = 0;
  constructor(
    private readonly tokenizer: TextTokenizer,
    private readonly stops: readonly string[],
    private readonly onText?: (piece: string) => void,
  ) {}

  /** Takes the reply's tokens so far; returns true when a stop string has appeared. */
  update(tokens: readonly number[]): boolean {
    const decoded = this.tokenizer.decode(tokens, { skipSpecialTokens: true });
    let end = decoded.length;
    let stopped = false;
    for (const s of this.stops) {
      const at = decoded.indexOf(s);
      if (at >= 0 && at < end) {
        end = at;
        stopped = true;
      }
    }
    this.text = decoded.slice(0, end);
    if (stopped) return true;
    // A character whose bytes are still coming decodes to U+FFFD; the tail that may start a stop string waits.
    const ready = this.text.replace(/\uFFFD+$/, '').length;
    let hold = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, ready); k > hold; k--) {
        if (this.text.slice(ready - k, ready) === s.slice(0, k)) {
          hold = k;
          break;
        }
      }
    }
    this.flush(ready - hold);
    return false;
  }

  flush(upTo = this.text.length): void {
    if (upTo > this.sent) {
      this.onText?.(this.text.slice(this.sent, upTo));
      this.sent = upTo;
    }
  }
}

/**
 * Continues each prompt with the model (a KV cache: the prompts run once, then one position per
 * token), as one left-padded batch. Greedy unless `temperature` > 0; ends at the tokenizer's EOS
 * token, `eosTokenIds`, a stop string or `maxTokens`. LoRA layers apply as they are.
 *
 * @example
 * const { model, tokenizer, generation } = loadModel('SmolLM2-135M-Instruct');
 * const [reply] = await generateBatch(model, tokenizer, [[{ role: 'user', content: 'Hi!' }]], {
 *   maxTokens: 64, eosTokenIds: generation.eosTokenIds,
 * });
 */
export async function generateBatch(
  model: LlamaForCausalLM,
  tokenizer: TextTokenizer,
  prompts: readonly Prompt[],
  options: GenerateOptions = {},
): Promise<GenerateResult[]> {
  const stops = options.stop === undefined ? [] : typeof options.stop === 'string' ? [options.stop] : [...options.stop];
  if (!stops.every((s) => typeof s === 'string' && s.length > 0))
    throw new ValueError('generate', 'stop strings must be non-empty', 'non-empty strings', JSON.stringify(options.stop));
  const encoded = prompts.map((p) => encodePrompt(tokenizer, p));
  const chat = tokenizer as Partial<ChatTokenizer>;
  const eos = [...(options.eosTokenIds ?? [])];
  const own = chat.eosToken !== undefined ? chat.tokenId?.(chat.eosToken) : undefined;
  if (own !== undefined) eos.push(own);
  const streams = prompts.map((_, i) => new TextStream(tokenizer, stops, options.onText && ((piece) => options.onText!(piece, i))));
  const result = await generateIds(model, encoded, {
    ...options,
    maxTokens: options.maxTokens ?? 256,
    eosTokenIds: eos,
    vocabLimit: Math.min(tokenizer.size, model.config.vocab_size),
    onToken: (row, _token, reply) => streams[row].update(reply),
  });
  return result.tokens.map((tokens, i) => {
    streams[i].flush();
    const decode = result.decodeSeconds;
    return {
      text: streams[i].text,
      tokens,
      finishReason: result.finishReasons[i],
      promptTokens: encoded[i].length,
      timeToFirstToken: result.prefillSeconds,
      tokensPerSecond: tokens.length > 1 && decode > 0 ? (tokens.length - 1) / decode : 0,
    };
  });
}

/** {@link generateBatch} for one prompt. */
export async function generate(model: LlamaForCausalLM, tokenizer: TextTokenizer, prompt: Prompt, options: GenerateOptions = {}): Promise<GenerateResult> {
  const [result] = await generateBatch(model, tokenizer, [prompt], options);
  return result;
}
