import { FormatError } from '@metal-lora/tensor';
import { HFTokenizer, type TokenizerFiles } from './hf-tokenizer';

/** What training, evaluation and generation need of a tokenizer (`CharTokenizer` and `HFTokenizer` have it). */
export interface TextTokenizer {
  /** Vocabulary size. */
  readonly size: number;
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  decode(ids: ArrayLike<number>, options?: { skipSpecialTokens?: boolean }): string;
  /** The files that hold it in a model folder (`saveModel` writes them). */
  readonly files: TokenizerFiles;
}

/**
 * The tokenizer of a model folder's files: the embedded default's character tokenizer
 * (`{ "type": "char" }`), or a Hugging Face `tokenizer.json` with its config and chat template.
 */
export function tokenizerFromFiles(files: TokenizerFiles): CharTokenizer | HFTokenizer {
  let json: unknown;
  try {
    json = JSON.parse(files.tokenizer);
  } catch {
    throw new FormatError('tokenizer', 'tokenizer.json is not valid JSON', { key: 'tokenizer.json' });
  }
  if ((json as { type?: unknown } | null)?.type === 'char') return CharTokenizer.fromJSON(files.tokenizer);
  // A parsed object is handed on (tokenizer.json is not parsed twice); anything else is refused there.
  const parsed = json !== null && typeof json === 'object' && !Array.isArray(json) ? (json as Record<string, unknown>) : undefined;
  return HFTokenizer.fromFiles(files, parsed);
}

/**
 * A character-level tokenizer (the embedded default model's): one id per character of `vocab`,
 * with id 0 reserved for characters outside it. Saved as `tokenizer.json` `{ "type": "char", "vocab": [...] }`.
 */
export class CharTokenizer implements TextTokenizer {
  readonly kind = 'char' as const;
  readonly vocab: string[];
  private readonly ids: Map<string, number>;
  constructor(vocab: string[]) {
    if (vocab[0] !== '<unk>') vocab = ['<unk>', ...vocab];
    this.vocab = vocab;
    this.ids = new Map(vocab.map((c, i) => [c, i]));
  }

  /** The characters of `texts`, sorted: a vocabulary for them. */
  static fromTexts(texts: readonly string[]): CharTokenizer {
    return new CharTokenizer([...new Set(texts.join(''))].sort());
  }

  static fromJSON(text: string): CharTokenizer {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new FormatError('tokenizer', 'tokenizer.json is not valid JSON', { key: 'tokenizer.json' });
    }
    const t = json as { type?: unknown; vocab?: unknown; model?: { type?: unknown } };
    if (t.type !== 'char' || !Array.isArray(t.vocab) || !t.vocab.every((v) => typeof v === 'string')) {
      const kind = t.model?.type ?? t.type;
      throw new FormatError(
        'tokenizer',
        t.type === 'char'
          ? "a character tokenizer's vocab must be a list of strings"
          : 'not a character tokenizer (tokenizerFromFiles reads Hugging Face tokenizers)',
        { key: 'tokenizer.json' },
        "{ type: 'char', vocab: [...] }",
        `type ${JSON.stringify(kind)}`,
      );
    }
    return new CharTokenizer(t.vocab as string[]);
  }

  toJSON(): string {
    return `${JSON.stringify({ type: 'char', vocab: this.vocab })}\n`;
  }

  get files(): TokenizerFiles {
    return { tokenizer: this.toJSON() };
  }

  get size(): number {
    return this.vocab.length;
  }

  /** One id per character (a character tokenizer has no special tokens: the options change nothing). */
  encode(text: string, _options?: { addSpecialTokens?: boolean }): number[] {
    return [...text].map((c) => this.ids.get(c) ?? 0);
  }

  decode(ids: ArrayLike<number>, _options?: { skipSpecialTokens?: boolean }): string {
    return Array.from(ids, (i) => (i === 0 ? '?' : (this.vocab[i] ?? '?'))).join('');
  }
}
