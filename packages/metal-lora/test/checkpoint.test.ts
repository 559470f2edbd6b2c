import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError, ValueError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';

const base = new URL('../assets/base/', import.meta.url).pathname;

/** A model folder with the bundled config and tokenizer, and `files` written over them. */
function folder(files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'metal-lora-model-'));
  for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(base, f), join(dir, f));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return dir;
}

describe('loadModel refuses hostile folders before reading or allocating', () => {
  it('shards named in the index must be files inside the folder', () => {
    for (const shard of ['../../etc/hostname', '/etc/hostname', '', 42]) {
      const dir = folder({ 'model.safetensors.index.json': JSON.stringify({ weight_map: { 'model.norm.weight': shard } }) });
      expect(() => loadModel(dir)).toThrow(FormatError);
      expect(() => loadModel(dir)).toThrow(/^loadModel: the shard of 'model\.norm\.weight' is not a file inside the model folder/);
    }
    expect(() => loadModel(folder({ 'model.safetensors.index.json': '{"weight_map": []}' }))).toThrow(/has no weight_map object/);
  });

  it('sizes in config.json are checked before the model is built', () => {
    const config = JSON.parse(readFileSync(join(base, 'config.json'), 'utf8'));
    for (const [key, value] of [
      ['intermediate_size', 4e6],
      ['num_hidden_layers', 100000],
      ['vocab_size', -3],
    ] as const) {
      const dir = folder({ 'config.json': JSON.stringify({ ...config, [key]: value }) });
      expect(() => loadModel(dir)).toThrow(ValueError);
      expect(() => loadModel(dir)).toThrow(new RegExp(`^LlamaConfig: ${key} is out of range`));
    }
    expect(() => loadModel(folder({ 'config.json': '[1, 2]' }))).toThrow('loadModel: config.json is not a JSON object');
  });
});
