import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LlamaForCausalLM } from '@metal-lora/nn';
import { FormatError, ValueError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { type ChatMessage, generate, HFTokenizer, loadModel, saveModel, tokenizerFromFiles } from '../src/index';

/**
 * Tokenizers of four kinds trained and saved by the reference libraries (tokenizers 0.23,
 * transformers 5.17: scripts/make_tokenizer_fixtures.py), with the ids, decodes and chat
 * renderings they give for awkward strings.
 */
const fixtures = new URL('./fixtures/tokenizers/', import.meta.url).pathname;
const KINDS = ['bpe-bytelevel', 'bpe-metaspace', 'wordpiece', 'unigram'] as const;

interface Expected {
  vocabSize: number;
  cases: { text: string; ids: number[]; idsNoSpecial: number[]; decoded: string; decodedSkipSpecial: string }[];
  chat: { messages: ChatMessage[]; addGenerationPrompt: boolean; text: string; ids: number[] };
}

function filesOf(kind: string) {
  const read = (name: string) => (existsSync(join(fixtures, kind, name)) ? readFileSync(join(fixtures, kind, name), 'utf8') : undefined);
  return { tokenizer: read('tokenizer.json')!, tokenizerConfig: read('tokenizer_config.json'), chatTemplate: read('chat_template.jinja') };
}

describe('Hugging Face tokenizers give the reference ids, decodes and chat renderings', () => {
  for (const kind of KINDS) {
    it(kind, () => {
      const expected = JSON.parse(readFileSync(join(fixtures, kind, 'expected.json'), 'utf8')) as Expected;
      const tok = tokenizerFromFiles(filesOf(kind));
      expect(tok).toBeInstanceOf(HFTokenizer);
      expect(tok.size).toBe(expected.vocabSize);
      for (const c of expected.cases) {
        expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
        expect(tok.encode(c.text, { addSpecialTokens: false }), JSON.stringify(c.text)).toEqual(c.idsNoSpecial);
        expect(tok.decode(c.ids), JSON.stringify(c.text)).toBe(c.decoded);
        expect(tok.decode(c.ids, { skipSpecialTokens: true }), JSON.stringify(c.text)).toBe(c.decodedSkipSpecial);
      }
      const hf = tok as HFTokenizer;
      const text = hf.applyChatTemplate(expected.chat.messages, { addGenerationPrompt: expected.chat.addGenerationPrompt });
      expect(text).toBe(expected.chat.text);
      expect(hf.encode(text, { addSpecialTokens: false })).toEqual(expected.chat.ids);
    });
  }

  it('refuses bad files and bad input with typed errors', () => {
    const good = filesOf('bpe-bytelevel');
    expect(() => tokenizerFromFiles({ tokenizer: '{not json' })).toThrow(FormatError);
    expect(() => tokenizerFromFiles({ tokenizer: '{"version": "1.0"}' })).toThrow('HFTokenizer: tokenizer.json has no model');
    expect(() => tokenizerFromFiles({ ...good, tokenizerConfig: '[1]' })).toThrow('HFTokenizer: tokenizer_config.json is not a JSON object');
    expect(() => tokenizerFromFiles({ ...good, chatTemplate: '{% for %}' })).toThrow(/the chat template does not parse/);
    const noTemplate = tokenizerFromFiles({ tokenizer: good.tokenizer }) as HFTokenizer;
    expect(noTemplate.hasChatTemplate).toBe(false);
    expect(() => noTemplate.applyChatTemplate([{ role: 'user', content: 'hi' }])).toThrow('applyChatTemplate: the tokenizer has no chat template');
    const tok = tokenizerFromFiles(good) as HFTokenizer;
    expect(() => tok.decode([0, tok.size])).toThrow(ValueError);
    expect(() => tok.applyChatTemplate([{ role: 'user' } as ChatMessage])).toThrow(/messages must be \{ role, content \} objects/);
    expect(tok.decode([])).toBe('');
  });
});

describe('a model folder with a Hugging Face tokenizer', () => {
  const config = {
    vocab_size: 600,
    hidden_size: 32,
    intermediate_size: 48,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    tie_word_embeddings: true,
  };

  it('loads, generates, and saves its tokenizer files back unchanged', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-model-'));
    const source = tokenizerFromFiles(filesOf('bpe-bytelevel'));
    await saveModel(dir, new LlamaForCausalLM(config, { seed: 1 }), config, source);
    for (const name of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja']) {
      expect(readFileSync(join(dir, name), 'utf8')).toBe(readFileSync(join(fixtures, 'bpe-bytelevel', name), 'utf8'));
    }
    const { model, tokenizer } = loadModel(dir);
    expect(tokenizer).toBeInstanceOf(HFTokenizer);
    const { text, tokens, finishReason } = await generate(model, tokenizer, 'Hello world', { maxTokens: 4 });
    expect(tokens).toHaveLength(4);
    expect(finishReason).toBe('length');
    expect(text).toBe(tokenizer.decode(tokens, { skipSpecialTokens: true }));
  });

  it('refuses a tokenizer with more tokens than the model has embeddings', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hf-model-'));
    const small = { ...config, vocab_size: 100 };
    await saveModel(dir, new LlamaForCausalLM(small, { seed: 1 }), small, tokenizerFromFiles(filesOf('bpe-bytelevel')));
    expect(() => loadModel(dir)).toThrow('loadModel: the tokenizer has more tokens than the model has embeddings; expected at most vocab_size = 100, got 600');
    copyFileSync(join(fixtures, 'wordpiece', 'tokenizer.json'), join(dir, 'tokenizer.json'));
    expect(() => loadModel(dir)).toThrow(/got 363/);
  });
});
