/**
 * Pre-trains the embedded default base model: a small character-level Llama on the kitchen
 * journal of src/corpus.ts, written to assets/base/ (config.json, model.safetensors, tokenizer.json),
 * and writes the fine-tuning dataset (the ship's log) to assets/data/{train,valid}.jsonl.
 *
 *   node --conditions=source --import ../../scripts/register-wgsl.mjs --import tsx scripts/make-base-model.ts
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { LlamaForCausalLM } from '@metal-lora/nn';
import { manualSeed, setBackend } from '@metal-lora/tensor';
import { saveModel } from '../src/checkpoint';
import { kitchenJournal, shipsLog } from '../src/corpus';
import { CharTokenizer } from '../src/tokenizer';
import { evaluate, trainLoop } from '../src/trainer';

await setBackend('cpu');
manualSeed(2026);
const journal = kitchenJournal(4000);
const log = shipsLog(600);
// One vocabulary for both texts: the fine-tuning data must be expressible by the base tokenizer.
const tokenizer = CharTokenizer.fromTexts([...journal, ...log, ' \n']);
const config = {
  vocab_size: tokenizer.size,
  hidden_size: 64,
  intermediate_size: 160,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
};
const model = new LlamaForCausalLM(config, { seed: 7 });
const stream = Int32Array.from(tokenizer.encode(journal.join(' ')));
const iters = Number(process.argv[2] ?? 600);
await trainLoop(model, stream, {
  iters,
  batch: 16,
  length: 64,
  lr: 3e-3,
  onStep: (i, loss, tps) => i % 50 === 0 && console.log(`pretrain ${i}/${iters} loss ${loss.toFixed(3)} (${tps.toFixed(0)} tok/s)`),
  reportEvery: 50,
});
console.log(`journal loss ${(await evaluate(model, stream, { batches: 4, batch: 16, length: 64 })).toFixed(3)}`);
await saveModel(new URL('../assets/base', import.meta.url).pathname, model, config, tokenizer);
const dataDir = new URL('../assets/data', import.meta.url).pathname;
mkdirSync(dataDir, { recursive: true });
const lines = (texts: string[]) => `${texts.map((text) => JSON.stringify({ text })).join('\n')}\n`;
writeFileSync(`${dataDir}/train.jsonl`, lines(log.slice(0, 540)));
writeFileSync(`${dataDir}/valid.jsonl`, lines(log.slice(540)));
console.log('wrote assets/base and assets/data');
