import { Template } from '@huggingface/jinja';
import { Tokenizer as TokenizersJs } from '@huggingface/tokenizers';
import { FormatError, ValueError } from '@metal-lora/tensor';
import { parseJsonObject } from './json';

/** One message of a conversation, as chat templates take it. */
export interface ChatMessage {
  role: string;
  content: string;
  [key: string]: unknown;
}

/** The files of a model folder that describe its tokenizer (their text, as read or fetched). */
export interface TokenizerFiles {
  /** `tokenizer.json`. */
  tokenizer: string;
  /** `tokenizer_config.json`, where the folder has one (special tokens, and older models' chat template). */
  tokenizerConfig?: string;
  /** `chat_template.jinja`, where the folder has one (newer transformers save the template there). */
  chatTemplate?: string;
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object. */
function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

/**
 * A Hugging Face tokenizer (`tokenizer.json`: byte-level BPE as Llama 3, Qwen and GPT-2 use, Metaspace
 * BPE with byte fallback as Llama 2 and Mistral, WordPiece, Unigram) through `@huggingface/tokenizers`,
 * with its special tokens and the model's chat template rendered by `@huggingface/jinja`.
 *
 * @example
 * const tok = HFTokenizer.fromFiles({ tokenizer: tokenizerJsonText, tokenizerConfig: configText });
 * const ids = tok.encode('Hello world');                  // with BOS where the tokenizer adds it
 * const text = tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
 */
export class HFTokenizer {
  readonly kind = 'hf' as const;
  private readonly tokenizer: TokenizersJs;
  private readonly config: Record<string, unknown>;
  private readonly template: Template | null;
  /** The files it was made from, written back unchanged by `saveModel`. */
  readonly files: TokenizerFiles;
  /** Vocabulary size, added tokens included. */
  readonly size: number;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;

  private constructor(files: TokenizerFiles, parsed?: Record<string, unknown>) {
    const op = 'HFTokenizer';
    const json = parsed ?? parseJsonObject(op, files.tokenizer, 'tokenizer.json');
    if (!json.model || typeof json.model !== 'object')
      throw new FormatError(
        op,
        'tokenizer.json has no model',
        { key: 'model' },
        'a Hugging Face tokenizer.json (BPE, WordPiece or Unigram)',
        Object.keys(json).join(', '),
      );
    this.config = files.tokenizerConfig === undefined ? {} : parseJsonObject(op, files.tokenizerConfig, 'tokenizer_config.json');
    try {
      this.tokenizer = new TokenizersJs(json, this.config);
    } catch (error) {
      const type = (json.model as { type?: unknown }).type;
      throw new FormatError(
        op,
        `tokenizer.json could not be loaded (${(error as Error).message})`,
        { key: 'tokenizer.json' },
        'a BPE, WordPiece or Unigram tokenizer',
        `model type ${JSON.stringify(type)}`,
      );
    }
    this.files = files;
    this.size = this.tokenizer.get_vocab(true).size;
    this.bosToken = tokenText(this.config.bos_token);
    this.eosToken = tokenText(this.config.eos_token);
    const source = files.chatTemplate ?? HFTokenizer.configTemplate(this.config);
    try {
      this.template = source === undefined ? null : new Template(source);
    } catch (error) {
      throw new FormatError(op, `the chat template does not parse (${(error as Error).message})`, {
        key: files.chatTemplate !== undefined ? 'chat_template.jinja' : 'chat_template',
      });
    }
  }

  /**
   * A tokenizer from a model folder's files (see {@link TokenizerFiles}); `parsed` is
   * `tokenizer.json` already parsed, where the caller has it (it can be tens of megabytes).
   */
  static fromFiles(files: TokenizerFiles, parsed?: Record<string, unknown>): HFTokenizer {
    return new HFTokenizer(files, parsed);
  }

  /** tokenizer_config.json's `chat_template`: a string, or a list of named templates (the `default` one). */
  private static configTemplate(config: Record<string, unknown>): string | undefined {
    const t = config.chat_template;
    if (typeof t === 'string') return t;
    if (Array.isArray(t)) {
      const named = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') ?? t[0];
      const template = (named as { template?: unknown } | undefined)?.template;
      if (typeof template === 'string') return template;
    }
    return undefined;
  }

  /** Token ids of `text`; `addSpecialTokens` (default true) adds what the tokenizer's post-processor adds (BOS, CLS/SEP). */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    if (typeof text !== 'string') throw new ValueError('encode', 'the text is not a string', 'a string', typeof text);
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /** The text of `ids`; `skipSpecialTokens` leaves out special tokens (BOS, EOS, template markers). */
  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    const list = Array.from(ids);
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0 || id >= this.size)
        throw new ValueError('decode', 'a token id is outside the vocabulary', `an integer in 0..${this.size - 1}`, String(id));
    }
    return list.length === 0 ? '' : this.tokenizer.decode(list, { skip_special_tokens: options.skipSpecialTokens ?? false });
  }

  /** The id of a token (special tokens included), or undefined. */
  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Whether the model's files include a chat template. */
  get hasChatTemplate(): boolean {
    return this.template !== null;
  }

  /**
   * Renders a conversation with the model's own chat template, as transformers'
   * `apply_chat_template(messages, tokenize=False)` does; encode the result with
   * `{ addSpecialTokens: false }` (the template writes BOS itself where the model wants one).
   */
  applyChatTemplate(messages: readonly ChatMessage[], options: { addGenerationPrompt?: boolean; tools?: unknown[]; [key: string]: unknown } = {}): string {
    if (!this.template)
      throw new FormatError(
        'applyChatTemplate',
        'the tokenizer has no chat template',
        {},
        'chat_template.jinja or a chat_template in tokenizer_config.json',
        'neither',
      );
    if (!Array.isArray(messages) || !messages.every((m) => m && typeof m.role === 'string' && typeof m.content === 'string')) {
      throw new ValueError(
        'applyChatTemplate',
        'messages must be { role, content } objects with string values',
        '[{ role: "user", content: "…" }, …]',
        JSON.stringify(messages)?.slice(0, 80) ?? String(messages),
      );
    }
    const { addGenerationPrompt = false, ...extra } = options;
    const specials: Record<string, unknown> = {};
    for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token']) {
      const text = tokenText(this.config[key]);
      if (text !== undefined) specials[key] = text;
    }
    try {
      return this.template.render({ ...specials, ...extra, messages, add_generation_prompt: addGenerationPrompt });
    } catch (error) {
      throw new FormatError('applyChatTemplate', `the chat template failed to render (${(error as Error).message})`, { key: 'chat_template' });
    }
  }
}
