import { existsSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { toFloat32, type WriteEntry, writeSafetensors } from '@metal-lora/adapter-io';
import { fsCall, openSafetensors, writeFileAtomic } from '@metal-lora/adapter-io/node';
import { type LlamaConfig, LlamaForCausalLM, llamaConfigFromJson, type Module, validateLlamaConfig } from '@metal-lora/nn';
import { FormatError, type Tensor, tensor } from '@metal-lora/tensor';
import type { HFTokenizer } from './hf-tokenizer';
import { type CharTokenizer, type TextTokenizer, tokenizerFromFiles } from './tokenizer';

export interface LoadedModel {
  model: LlamaForCausalLM;
  config: LlamaConfig;
  tokenizer: CharTokenizer | HFTokenizer;
}

function readJson(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new FormatError('loadModel', `${what} not found`, { key: path }, `a file at ${path}`, 'nothing');
  try {
    const value = JSON.parse(fsCall('loadModel', path, () => readFileSync(path, 'utf8')));
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new FormatError('loadModel', `${what} is not a JSON object`, { key: path }, 'an object', JSON.stringify(value));
    return value;
  } catch (error) {
    if (error instanceof FormatError) throw error;
    throw new FormatError('loadModel', `${what} is not valid JSON (${(error as Error).message})`, { key: path });
  }
}

/**
 * Weight files of a checkpoint directory: `model.safetensors`, or the shards of
 * `model.safetensors.index.json`, each of which must be a file inside the directory (an index
 * naming `../../etc/hostname` is refused, not opened).
 */
function weightFiles(dir: string): string[] {
  const index = join(dir, 'model.safetensors.index.json');
  if (existsSync(index)) {
    const map = readJson(index, 'model.safetensors.index.json').weight_map;
    if (map === null || typeof map !== 'object' || Array.isArray(map))
      throw new FormatError(
        'loadModel',
        'model.safetensors.index.json has no weight_map object',
        { key: 'weight_map' },
        '{ "tensor name": "shard file" }',
        JSON.stringify(map),
      );
    const root = resolve(dir);
    const shards = new Set<string>();
    for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== 'string' || file === '' || isAbsolute(file) || !resolve(root, file).startsWith(root + sep)) {
        throw new FormatError(
          'loadModel',
          `the shard of '${name}' is not a file inside the model folder`,
          { key: name },
          `a file name relative to ${root}`,
          JSON.stringify(file),
        );
      }
      shards.add(resolve(root, file));
    }
    return [...shards];
  }
  const single = join(dir, 'model.safetensors');
  if (!existsSync(single)) throw new FormatError('loadModel', 'no weights found', { key: dir }, 'model.safetensors or model.safetensors.index.json', 'neither');
  return [single];
}

/**
 * Loads a checkpoint directory in Hugging Face / MLX layout (`config.json`, `model.safetensors`
 * or shards, `tokenizer.json` with `tokenizer_config.json` and `chat_template.jinja`) into a
 * `LlamaForCausalLM` on the current backend: Llama (Llama 3 RoPE scaling too), Mistral (sliding
 * window), Qwen2 and Qwen3 (see nn's `llamaConfigFromJson`). F16 / BF16 weights are read as f32.
 * Tensors are read one at a time from disk.
 */
export function loadModel(dir: string): LoadedModel {
  const raw = readJson(join(dir, 'config.json'), 'config.json');
  const config = llamaConfigFromJson(raw) as LlamaConfig & { quantization?: unknown };
  if (config.quantization)
    throw new FormatError(
      'loadModel',
      'quantized checkpoints are not supported',
      { key: 'quantization' },
      'float weights (F32, F16 or BF16)',
      'an MLX quantized model',
    );
  for (const key of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const) {
    if (typeof config[key] !== 'number') throw new FormatError('loadModel', `config.json lacks ${key}`, { key }, 'a number', JSON.stringify(config[key]));
  }
  // Sizes and ranges before anything is read or allocated.
  validateLlamaConfig(config);
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath))
    throw new FormatError('loadModel', 'tokenizer.json not found', { key: tokenizerPath }, 'a tokenizer next to the weights', 'nothing');
  const optional = (name: string) =>
    existsSync(join(dir, name)) ? fsCall('loadModel', join(dir, name), () => readFileSync(join(dir, name), 'utf8')) : undefined;
  const tokenizer = tokenizerFromFiles({
    tokenizer: readFileSync(tokenizerPath, 'utf8'),
    tokenizerConfig: optional('tokenizer_config.json'),
    chatTemplate: optional('chat_template.jinja'),
  });
  if (tokenizer.size > config.vocab_size) {
    throw new FormatError(
      'loadModel',
      'the tokenizer has more tokens than the model has embeddings',
      { key: 'tokenizer.json' },
      `at most vocab_size = ${config.vocab_size}`,
      String(tokenizer.size),
    );
  }
  // Every parameter is loaded below (strictly), so the fresh model's initialization is skipped.
  const model = new LlamaForCausalLM(config, { initialize: false });
  const weights: Record<string, Tensor> = Object.create(null);
  for (const file of weightFiles(dir)) {
    const st = openSafetensors(file);
    try {
      for (const [name, info] of Object.entries(st.info)) {
        if (name.endsWith('.scales') || name.endsWith('.biases'))
          throw new FormatError('loadModel', 'quantized weights are not supported', { key: name }, 'float weights', info.dtype);
        if (name.includes('rotary_emb')) continue;
        weights[name] = tensor(toFloat32(st.read(name)), info.shape, { dtype: 'float32' });
      }
    } finally {
      st.close();
    }
  }
  if (config.tie_word_embeddings) delete weights['lm_head.weight'];
  model.loadWeights(weights);
  for (const t of Object.values(weights)) t.dispose();
  model.freeze();
  return { model, config, tokenizer };
}

/** Saves a model as a checkpoint directory (f32 safetensors, config, the tokenizer's files), each file atomically. */
export async function saveModel(dir: string, model: Module, config: LlamaConfig, tokenizer: TextTokenizer): Promise<void> {
  await mkdir(dir, { recursive: true });
  const entries: Record<string, WriteEntry> = Object.create(null);
  for (const [name, t] of model.namedParameters()) entries[name] = { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(await t.data()) };
  writeFileAtomic(join(dir, 'model.safetensors'), writeSafetensors(entries, { format: 'pt' }));
  // Qwen2's q/k/v bias and Qwen3's q/k norm follow from model_type: the flags stay out of the file.
  const { qkv_bias: _qkvBias, qk_norm: _qkNorm, ...saved } = config;
  const type = config.model_type ?? 'llama';
  const architecture =
    { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM' }[type] ?? 'LlamaForCausalLM';
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify({ ...saved, model_type: type, architectures: [architecture] }, null, 2)}\n`);
  const { tokenizer: tokenizerJson, tokenizerConfig, chatTemplate } = tokenizer.files;
  writeFileAtomic(join(dir, 'tokenizer.json'), tokenizerJson);
  if (tokenizerConfig !== undefined) writeFileAtomic(join(dir, 'tokenizer_config.json'), tokenizerConfig);
  if (chatTemplate !== undefined) writeFileAtomic(join(dir, 'chat_template.jinja'), chatTemplate);
}
