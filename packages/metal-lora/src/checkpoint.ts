import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { isAbsolute, join, resolve, sep } from 'node:path';
import { toFloat32, type WriteEntry, writeSafetensors } from '@metal-lora/adapter-io';
import { fsCall, openSafetensors, writeFileAtomic } from '@metal-lora/adapter-io/node';
import { architectureOf, type LlamaConfig, type Module } from '@metal-lora/nn';
import { FormatError } from '@metal-lora/tensor';
import { parseJsonObject } from './json';
import {
  buildModel,
  type CheckpointTensor,
  type GenerationDefaults,
  INDEX_FILE,
  indexWeightMap,
  isMlxWeightFile,
  type LoadedModel,
  type LoadOptions,
  loadDType,
} from './model-bytes';
import type { TextTokenizer } from './tokenizer';

function readJson(path: string, what: string): Record<string, unknown> {
  if (!existsSync(path)) throw new FormatError('loadModel', `${what} not found`, { key: path }, `a file at ${path}`, 'nothing');
  return parseJsonObject(
    'loadModel',
    fsCall('loadModel', path, () => readFileSync(path, 'utf8')),
    what,
    path,
  );
}

/**
 * Weight files of a checkpoint directory: `model.safetensors`, or the shards of
 * `model.safetensors.index.json`, each of which must be a file inside the directory (an index
 * naming `../../etc/hostname` is refused, not opened).
 */
function weightFiles(dir: string): string[] {
  const index = join(dir, INDEX_FILE);
  if (existsSync(index)) {
    const map = indexWeightMap(
      'loadModel',
      fsCall('loadModel', index, () => readFileSync(index, 'utf8')),
      index,
    );
    const root = resolve(dir);
    const shards = new Set<string>();
    for (const [name, file] of Object.entries(map)) {
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
  if (existsSync(single)) return [single];
  // MLX folders: weights.safetensors, or model-00001-of-00002.safetensors style files without an index.
  const names = fsCall('loadModel', dir, () => readdirSync(dir))
    .filter(isMlxWeightFile)
    .sort();
  if (names.length === 0)
    throw new FormatError(
      'loadModel',
      'no weights found',
      { key: dir },
      'model.safetensors, model.safetensors.index.json or MLX weights files',
      'none of them',
    );
  return names.map((f) => join(dir, f));
}

/** Every tensor of the weight files, read lazily one at a time (each file closed after its last). */
function* checkpointTensors(files: string[]): Generator<CheckpointTensor> {
  for (const file of files) {
    const st = openSafetensors(file);
    try {
      for (const [name, info] of Object.entries(st.info))
        yield { name, shape: info.shape, dtype: info.dtype, read: () => toFloat32(st.read(name)), readRaw: () => st.read(name).data };
    } finally {
      st.close();
    }
  }
}

/**
 * Loads a checkpoint directory in Hugging Face / MLX layout (`config.json`, `model.safetensors`,
 * shards with `model.safetensors.index.json`, or MLX's `weights.safetensors` / `model*.safetensors`;
 * `tokenizer.json` with `tokenizer_config.json` and `chat_template.jinja`; `generation_config.json`)
 * on the current backend: Llama (Llama 3 RoPE scaling too), Mistral, Qwen2, Qwen3, Gemma 3 (text)
 * and Phi-3 (see nn's `llamaConfigFromJson`). F16 / BF16 weights are read as f32, one tensor at a
 * time from disk, and held as f32, or as f16 with `{ dtype: 'float16' }` (half the memory; a
 * weight outside f16's range is a `FormatError` naming it).
 */
export function loadModel(dir: string, options: LoadOptions = {}): LoadedModel {
  loadDType('loadModel', options);
  const raw = readJson(join(dir, 'config.json'), 'config.json');
  const tokenizerPath = join(dir, 'tokenizer.json');
  if (!existsSync(tokenizerPath))
    throw new FormatError('loadModel', 'tokenizer.json not found', { key: tokenizerPath }, 'a tokenizer next to the weights', 'nothing');
  const optional = (name: string) =>
    existsSync(join(dir, name)) ? fsCall('loadModel', join(dir, name), () => readFileSync(join(dir, name), 'utf8')) : undefined;
  const tokenizerFiles = {
    tokenizer: fsCall('loadModel', tokenizerPath, () => readFileSync(tokenizerPath, 'utf8')),
    tokenizerConfig: optional('tokenizer_config.json'),
    chatTemplate: optional('chat_template.jinja'),
  };
  // The config is read and checked (in buildModel) before the weight files are listed or opened.
  let files: string[] | undefined;
  const tensors = { [Symbol.iterator]: () => checkpointTensors((files ??= weightFiles(dir))) };
  return buildModel('loadModel', raw, tokenizerFiles, tensors, optional('generation_config.json'), options);
}

/** Saves a model as a checkpoint directory (f32 safetensors, config, the tokenizer's files), each file atomically. */
export async function saveModel(
  dir: string,
  model: Module,
  config: LlamaConfig,
  tokenizer: TextTokenizer,
  options: { generation?: GenerationDefaults } = {},
): Promise<void> {
  await mkdir(dir, { recursive: true });
  const entries: Record<string, WriteEntry> = Object.create(null);
  for (const [name, t] of model.namedParameters()) {
    // A quantized layer's packed words go out as the U32 MLX writes; float weights as f32.
    entries[name] =
      t.dtype === 'int32'
        ? { dtype: 'U32', shape: [...t.shape], data: Int32Array.from(await t.data()) }
        : { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(await t.data()) };
  }
  writeFileAtomic(join(dir, 'model.safetensors'), writeSafetensors(entries, { format: 'pt' }));
  // Qwen2's q/k/v bias and Qwen3's q/k norm follow from model_type: the flags stay out of the file.
  const { qkv_bias: _qkvBias, qk_norm: _qkNorm, ...saved } = config;
  const type = config.model_type ?? 'llama';
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify({ ...saved, model_type: type, architectures: [architectureOf(config).className] }, null, 2)}\n`);
  if (options.generation?.raw) writeFileAtomic(join(dir, 'generation_config.json'), `${JSON.stringify(options.generation.raw, null, 2)}\n`);
  const { tokenizer: tokenizerJson, tokenizerConfig, chatTemplate } = tokenizer.files;
  writeFileAtomic(join(dir, 'tokenizer.json'), tokenizerJson);
  if (tokenizerConfig !== undefined) writeFileAtomic(join(dir, 'tokenizer_config.json'), tokenizerConfig);
  if (chatTemplate !== undefined) writeFileAtomic(join(dir, 'chat_template.jinja'), chatTemplate);
}
