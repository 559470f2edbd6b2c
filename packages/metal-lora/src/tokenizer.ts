import { FormatError } from '@metal-lora/tensor';

/**
 * A character-level tokenizer (the embedded default model's): one id per character of `vocab`,
 * with id 0 reserved for characters outside it. Saved as `tokenizer.json` `{ "type": "char", "vocab": [...] }`.
 */
export class CharTokenizer {
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
        'unsupported tokenizer.json',
        { key: 'tokenizer.json' },
        "a character tokenizer ({ type: 'char', vocab: [...] })",
        `type ${JSON.stringify(kind)} (subword tokenizers such as Hugging Face BPE are not supported yet)`,
      );
    }
    return new CharTokenizer(t.vocab as string[]);
  }

  toJSON(): string {
    return `${JSON.stringify({ type: 'char', vocab: this.vocab })}\n`;
  }

  get size(): number {
    return this.vocab.length;
  }

  encode(text: string): number[] {
    return [...text].map((c) => this.ids.get(c) ?? 0);
  }

  decode(ids: readonly number[]): string {
    return ids.map((i) => (i === 0 ? '?' : (this.vocab[i] ?? '?'))).join('');
  }
}
