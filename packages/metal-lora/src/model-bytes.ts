import { readSafetensors, toFloat32 } from '@metal-lora/adapter-io';
import { type LlamaConfig, LlamaForCausalLM } from '@metal-lora/nn';
import { FormatError, type Tensor, tensor } from '@metal-lora/tensor';
import type { HFTokenizer } from './hf-tokenizer';
import { type CharTokenizer, tokenizerFromFiles } from './tokenizer';

/**
 * A model from the bytes of a checkpoint directory's files (fetched in a browser, or read in
 * Node): `config.json` text, `model.safetensors` bytes, `tokenizer.json` text, and where the
 * folder has them `tokenizer_config.json` and `chat_template.jinja` text.
 */
export function modelFromFiles(files: { config: string; weights: Uint8Array; tokenizer: string; tokenizerConfig?: string; chatTemplate?: string }): {
  model: LlamaForCausalLM;
  config: LlamaConfig;
  tokenizer: CharTokenizer | HFTokenizer;
} {
  let config: LlamaConfig;
  try {
    config = JSON.parse(files.config);
  } catch {
    throw new FormatError('modelFromFiles', 'config.json is not valid JSON', { key: 'config.json' });
  }
  const tokenizer = tokenizerFromFiles({ tokenizer: files.tokenizer, tokenizerConfig: files.tokenizerConfig, chatTemplate: files.chatTemplate });
  const model = new LlamaForCausalLM(config, { initialize: false });
  const { tensors } = readSafetensors(files.weights);
  const weights: Record<string, Tensor> = Object.create(null);
  for (const [name, entry] of Object.entries(tensors)) weights[name] = tensor(toFloat32(entry), entry.shape, { dtype: 'float32' });
  model.loadWeights(weights);
  for (const t of Object.values(weights)) t.dispose();
  model.freeze();
  return { model, config, tokenizer };
}
