import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { generateIds, type LlamaForCausalLM } from '@metal-lora/nn';
import { setBackend, type Tensor, tensor } from '@metal-lora/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { generate, generateBatch, type HFTokenizer, loadAdapter, loadModel, tokenizerFromFiles } from '../src/index';
import { cli } from './run-cli';

/**
 * Greedy continuations transformers computes in float64 for each model fixture
 * (scripts/make_model_fixtures.py): one prompt, and two prompts of different lengths. The
 * fixtures record the smallest top-1/top-2 logit gap along each continuation, far above f32
 * rounding, so the tokens must match exactly.
 */
const models = new URL('./fixtures/models/', import.meta.url).pathname;
const tokenizers = new URL('./fixtures/tokenizers/', import.meta.url).pathname;

interface Greedy {
  greedy: { prompt: number[]; tokens: number[]; minGap: number };
  greedyBatch: { prompts: number[][]; tokens: number[][]; minGap: number };
}

describe('greedy generation with the KV cache gives the tokens transformers gives', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  for (const name of readdirSync(models)) {
    it(name, async () => {
      const expected = JSON.parse(readFileSync(join(models, name, 'expected.json'), 'utf8')) as Greedy;
      expect(Math.min(expected.greedy.minGap, expected.greedyBatch.minGap)).toBeGreaterThan(1e-3);
      const { model } = loadModel(join(models, name));
      const alone = await generateIds(model, [expected.greedy.prompt], { maxTokens: expected.greedy.tokens.length });
      expect(alone.tokens[0]).toEqual(expected.greedy.tokens);
      // Two prompts of different lengths in one left-padded batch.
      const batch = await generateIds(model, expected.greedyBatch.prompts, { maxTokens: expected.greedyBatch.tokens[0].length });
      expect(batch.tokens).toEqual(expected.greedyBatch.tokens);
    });
  }
});

/**
 * A stand-in model that "generates" a scripted token sequence (its logits peak at the next
 * scripted id), so text streaming and stop strings are tested on known tokens.
 */
function scripted(script: number[], vocab: number): LlamaForCausalLM {
  let step = 0;
  const model = {
    config: { vocab_size: vocab, num_hidden_layers: 1 },
    training: false,
    eval() {
      return model;
    },
    train() {
      return model;
    },
    forward(ids: Tensor): Tensor {
      const B = ids.shape[0];
      const values = new Float32Array(B * vocab);
      for (let b = 0; b < B; b++) values[b * vocab + script[Math.min(step, script.length - 1)]] = 10;
      step++;
      return tensor(values, [B, 1, vocab]);
    },
  };
  return model as unknown as LlamaForCausalLM;
}

describe('text generation: streaming, stop strings, end of reply, chat prompts', () => {
  const files = (kind: string) => ({
    tokenizer: readFileSync(join(tokenizers, kind, 'tokenizer.json'), 'utf8'),
    tokenizerConfig: readFileSync(join(tokenizers, kind, 'tokenizer_config.json'), 'utf8'),
    chatTemplate: readFileSync(join(tokenizers, kind, 'chat_template.jinja'), 'utf8'),
  });
  const tok = tokenizerFromFiles(files('bpe-bytelevel')) as HFTokenizer;

  it('streams whole characters only: an emoji split over byte tokens arrives at once', async () => {
    const reply = 'Hi 🦙🧪 ʕ•ᴥ•ʔ 中文 ok';
    const ids = tok.encode(reply, { addSpecialTokens: false });
    // The byte-level tokenizer spells the emoji with more than one token.
    expect(ids.map((id) => tok.decode([id])).some((piece) => piece.includes('\uFFFD'))).toBe(true);
    const pieces: string[] = [];
    const result = await generate(scripted(ids, tok.size), tok, 'x', { maxTokens: ids.length, onText: (p) => pieces.push(p) });
    expect(result.text).toBe(reply);
    expect(pieces.join('')).toBe(reply);
    expect(pieces.some((p) => p.includes('\uFFFD'))).toBe(false);
    expect(result.finishReason).toBe('length');
  });

  it('ends at a stop string (left out, never streamed) and at the EOS token', async () => {
    const ids = tok.encode('one, two. three', { addSpecialTokens: false });
    const pieces: string[] = [];
    const stopped = await generate(scripted(ids, tok.size), tok, 'x', { maxTokens: 50, stop: ['. th', 'never'], onText: (p) => pieces.push(p) });
    expect(stopped.text).toBe('one, two');
    expect(pieces.join('')).toBe('one, two');
    expect(stopped.finishReason).toBe('stop');
    const eos = tok.tokenId('<|eot_id|>')!;
    const ended = await generate(scripted([...ids.slice(0, 2), eos, ...ids], tok.size), tok, 'x', { maxTokens: 50 });
    expect(ended.tokens).toEqual(ids.slice(0, 2));
    expect(ended.finishReason).toBe('eos');
    await expect(generate(scripted(ids, tok.size), tok, 'x', { stop: [''] })).rejects.toThrow('generate: stop strings must be non-empty');
  });

  it('renders a conversation with the chat template, and refuses one without a template', async () => {
    const { model, tokenizer } = loadModel(join(models, 'qwen3'));
    const messages = [{ role: 'user', content: 'Hi there' }];
    const rendered = (tokenizer as HFTokenizer).applyChatTemplate(messages, { addGenerationPrompt: true });
    const byText = await generateIds(model, [tokenizer.encode(rendered, { addSpecialTokens: false })], { maxTokens: 5 });
    const byChat = await generate(model, tokenizer, messages, { maxTokens: 5, eosTokenIds: [] });
    expect(byChat.promptTokens).toBe(tokenizer.encode(rendered, { addSpecialTokens: false }).length);
    expect(byChat.tokens).toEqual(byText.tokens[0].slice(0, byChat.tokens.length));
    const embedded = loadModel(new URL('../assets/base', import.meta.url).pathname);
    await expect(generate(embedded.model, embedded.tokenizer, messages)).rejects.toThrow('generate: a conversation needs a tokenizer with a chat template');
  });

  it('a batch gives each prompt the reply it gets alone; LoRA adapters apply', async () => {
    const { model, tokenizer } = loadModel(join(models, 'llama'));
    const prompts = ['Hello world', 'The quick brown fox jumps'];
    const alone = await Promise.all(prompts.map((p) => generate(model, tokenizer, p, { maxTokens: 6, eosTokenIds: [] })));
    const together = await generateBatch(model, tokenizer, prompts, { maxTokens: 6, eosTokenIds: [] });
    expect(together.map((r) => r.tokens)).toEqual(alone.map((r) => r.tokens));
    loadAdapter(model, new URL('./fixtures/peft/llama', import.meta.url).pathname);
    const adapted = await generate(model, tokenizer, prompts[1], { maxTokens: 6, eosTokenIds: [] });
    expect(adapted.tokens).not.toEqual(alone[1].tokens);
  });
});

describe('metal-lora generate and chat', () => {
  it('generate streams a reply to --prompt through the chat template, with an adapter', async () => {
    const dir = join(models, 'llama');
    const adapter = new URL('./fixtures/peft/llama', import.meta.url).pathname;
    const r = await cli(['generate', '--backend', 'cpu', '--model', dir, '--adapter-path', adapter, '--prompt', 'Hello', '--max-tokens', '5', '--temp', '0']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/adapter: .*peft\/llama \(rank 4, scale 2\)/);
    expect(r.out).toMatch(
      /==========\n[\s\S]*\n==========\nprompt: \d+ tokens, first token after \d+ ms; generation: \d+ tokens, [\d.]+ tokens\/s; ended by (length|eos)/,
    );
    const bad = await cli(['generate', '--backend', 'cpu', '--model', dir]);
    expect(bad.err.trim()).toBe("metal-lora: generate needs --prompt TEXT; expected --prompt 'Once upon a time' (or - for stdin), got no --prompt");
  });

  it('chat answers each line until q, keeping the conversation', async () => {
    const r = await cli(['chat', '--backend', 'cpu', '--model', join(models, 'qwen2'), '--max-tokens', '3'], 'Hi\nr\nHow are you?\nq\nnever read\n');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.match(/>> /g)?.length).toBe(4);
    const plain = await cli(['chat', '--backend', 'cpu'], 'Hi\n');
    expect(plain.err.trim()).toMatch(/^metal-lora: chat needs a model with a chat template/);
  });
});
