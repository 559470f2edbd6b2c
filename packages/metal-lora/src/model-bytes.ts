import { readSafetensors, toFloat32 } from '@metal-lora/adapter-io';
import { type LlamaConfig, LlamaForCausalLM, llamaConfigFromJson, validateLlamaConfig } from '@metal-lora/nn';
import { FormatError, MetalLoRAError, type QuantSpec, quantSpec, type Tensor, tensor } from '@metal-lora/tensor';
import type { HFTokenizer, TokenizerFiles } from './hf-tokenizer';
import { parseJsonObject } from './json';
import { type CharTokenizer, tokenizerFromFiles } from './tokenizer';

/** What `generation_config.json` says that generation uses: the ids that end a reply. */
export interface GenerationDefaults {
  /** `eos_token_id` (one id or a list), where the folder gives it. */
  eosTokenIds: number[];
  /** The raw file, written back unchanged by `saveModel`. */
  raw?: Record<string, unknown>;
}

export interface LoadedModel {
  model: LlamaForCausalLM;
  config: LlamaConfig;
  tokenizer: CharTokenizer | HFTokenizer;
  generation: GenerationDefaults;
}

/** How a checkpoint's weights are held: f32 (the default), or f16 where the backend computes in half precision. */
export interface LoadOptions {
  /** `'float32'` (default) or `'float16'` (weights rounded to half; a value out of f16's range is an error). */
  dtype?: 'float32' | 'float16';
}

/** The largest finite float16. */
const F16_MAX = 65504;

/** The dtype option checked: float32 or float16. */
export function loadDType(op: string, options: LoadOptions): 'float32' | 'float16' {
  const dtype = options.dtype ?? 'float32';
  if (dtype !== 'float32' && dtype !== 'float16')
    throw new FormatError(op, 'dtype must be float32 or float16', { key: 'dtype' }, "'float32' or 'float16'", JSON.stringify(dtype));
  return dtype;
}

/** One tensor of a checkpoint as its file holds it. */
export interface CheckpointTensor {
  name: string;
  shape: number[];
  dtype: string;
  /** The values as f32 (float and small integer dtypes). */
  read(): Float32Array;
  /** The stored bytes, little-endian (a quantized layer's packed U32 words). */
  readRaw(): Uint8Array;
}

/**
 * Which layers of a checkpoint are stored quantized, and how (MLX's affine mode, as mlx-lm saves
 * it): a layer is quantized where its `<path>.scales` tensor exists, with config.json's
 * `quantization` (or `quantization_config`) `{ group_size, bits, mode }` or the per-layer entry
 * under its path. Other modes and other libraries' formats are refused by name.
 */
export function quantizedLayers(op: string, config: LlamaConfig, names: Iterable<string>): ((path: string) => QuantSpec | null) | undefined {
  const scaled = new Set<string>();
  for (const name of names) if (name.endsWith('.scales')) scaled.add(name.slice(0, -'.scales'.length));
  const block = (config.quantization ?? config.quantization_config) as Record<string, unknown> | undefined;
  if (!block) {
    if (scaled.size)
      throw new FormatError(
        op,
        'the weights are quantized but config.json has no quantization block',
        { key: [...scaled][0] },
        '"quantization": { "group_size", "bits" }',
        'none',
      );
    return undefined;
  }
  const key = config.quantization ? 'quantization' : 'quantization_config';
  const spec = (entry: Record<string, unknown>, where: string): QuantSpec => {
    const mode = entry.mode ?? block.mode ?? 'affine';
    if (mode !== 'affine')
      throw new FormatError(op, `quantization mode ${JSON.stringify(mode)} is not supported`, { key: `${where}.mode` }, '"affine" (MLX)', JSON.stringify(mode));
    try {
      return quantSpec(op, { bits: entry.bits as number, groupSize: entry.group_size as number });
    } catch (error) {
      if (error instanceof MetalLoRAError)
        throw new FormatError(
          op,
          `${where} is not an MLX affine quantization`,
          { key: where },
          '{ "group_size": 32 | 64 | 128, "bits": 2–8 }',
          JSON.stringify(entry),
        );
      throw error;
    }
  };
  if (block.quant_method !== undefined && block.bits === undefined)
    throw new FormatError(
      op,
      `quantization method ${JSON.stringify(block.quant_method)} is not supported`,
      { key: `${key}.quant_method` },
      "MLX's affine quantization",
      JSON.stringify(block.quant_method),
    );
  const fallback = spec(block, key);
  return (path) => {
    if (!scaled.has(path)) return null;
    const own = block[path];
    return own && typeof own === 'object' ? spec(own as Record<string, unknown>, `${key}.${path}`) : fallback;
  };
}

/** The end-of-reply ids of a `generation_config.json` text (absent: none). */
export function generationDefaults(op: string, text: string | undefined): GenerationDefaults {
  if (text === undefined) return { eosTokenIds: [] };
  const raw = parseJsonObject(op, text, 'generation_config.json');
  const eos = raw.eos_token_id ?? [];
  const ids = Array.isArray(eos) ? eos : [eos];
  if (!ids.every((id) => Number.isInteger(id) && (id as number) >= 0))
    throw new FormatError(op, 'eos_token_id must be a token id or a list of them', { key: 'generation_config.json' }, 'integers ≥ 0', JSON.stringify(eos));
  return { eosTokenIds: ids as number[], raw };
}

/** The index of a sharded checkpoint. */
export const INDEX_FILE = 'model.safetensors.index.json';

/**
 * The `weight_map` of an index's text (tensor name → shard file, as written: each loader checks
 * that a shard is a file of its folder); `key` names the file in a parse error.
 */
export function indexWeightMap(op: string, text: string, key = INDEX_FILE): Record<string, unknown> {
  const map = parseJsonObject(op, text, INDEX_FILE, key).weight_map;
  if (map === null || typeof map !== 'object' || Array.isArray(map))
    throw new FormatError(op, `${INDEX_FILE} has no weight_map object`, { key: 'weight_map' }, '{ "tensor name": "shard file" }', JSON.stringify(map));
  return map as Record<string, unknown>;
}

/** MLX's weight files, in a folder without `model.safetensors` or an index: `weights.safetensors`, `model-00001-of-00002.safetensors`, …. */
export const isMlxWeightFile = (name: string): boolean => /^(model|weights)[-.\w]*\.safetensors$/.test(name);

/** config.json as a model config: the architecture known, the sizes present and in range (nothing allocated). */
export function checkedConfig(op: string, rawConfig: Record<string, unknown>): LlamaConfig {
  const config = llamaConfigFromJson(rawConfig);
  for (const key of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const) {
    if (typeof config[key] !== 'number') throw new FormatError(op, `config.json lacks ${key}`, { key }, 'a number', JSON.stringify(config[key]));
  }
  validateLlamaConfig(config);
  return config;
}

/** How a checkpoint tensor enters the model: skipped, as packed words, or as float values. */
type TensorUse = 'skip' | 'raw' | 'float';

/**
 * The part of building a model that every loader shares: the config read and checked before
 * anything is allocated, the tokenizer checked against the embedding, the model made from the
 * tensor names (which layers are quantized), then each weight taken strictly (f16 / bf16 read
 * exactly as f32, then held in `options.dtype`). The loaders differ only in how bytes arrive.
 */
function modelBuilder(
  op: string,
  rawConfig: Record<string, unknown>,
  tokenizerFiles: TokenizerFiles,
  names: Iterable<string>,
  generationConfig: string | undefined,
  options: LoadOptions,
) {
  const dtype = loadDType(op, options);
  const config = checkedConfig(op, rawConfig);
  const tokenizer = tokenizerFromFiles(tokenizerFiles);
  if (tokenizer.size > config.vocab_size) {
    throw new FormatError(
      op,
      'the tokenizer has more tokens than the model has embeddings',
      { key: 'tokenizer.json' },
      `at most vocab_size = ${config.vocab_size}`,
      String(tokenizer.size),
    );
  }
  const generation = generationDefaults(op, generationConfig);
  // The names alone (headers, nothing read) say which layers are stored quantized.
  const quantized = quantizedLayers(op, config, names);
  // Every parameter is loaded below (strictly), so the fresh model's initialization is skipped.
  const model = new LlamaForCausalLM(config, { initialize: false, dtype, quantized });
  const weights: Record<string, Tensor> = Object.create(null);
  return {
    use(t: { name: string; dtype: string }): TensorUse {
      if (t.name.includes('rotary_emb')) return 'skip';
      if (quantized && t.name.endsWith('.weight') && quantized(t.name.slice(0, -'.weight'.length))) {
        if (t.dtype !== 'U32' && t.dtype !== 'I32')
          throw new FormatError(op, `${t.name} is a quantized layer's weight and must hold packed words`, { key: t.name }, 'U32', t.dtype);
        return 'raw';
      }
      if (t.dtype === 'U32' || t.dtype === 'I32')
        throw new FormatError(
          op,
          `${t.name} holds integers but is not a quantized layer's weight (no ${t.name.replace(/\.weight$/, '')}.scales)`,
          { key: t.name },
          'float weights',
          t.dtype,
        );
      return 'float';
    },
    /** Takes one tensor's data, as `use` asked for it. */
    put(t: { name: string; shape: number[] }, data: Uint8Array | Float32Array): void {
      if (data instanceof Uint8Array) {
        weights[t.name] = tensor(new Int32Array(data.slice().buffer, 0, data.byteLength / 4), t.shape, { dtype: 'int32' });
        return;
      }
      if (dtype === 'float16') {
        let outside = 0;
        let largest = 0;
        for (const v of data) {
          const a = Math.abs(v);
          if (a > F16_MAX && Number.isFinite(a)) {
            outside++;
            largest = Math.max(largest, a);
          }
        }
        if (outside > 0)
          throw new FormatError(
            op,
            `${t.name} has ${outside} value${outside === 1 ? '' : 's'} outside float16's range; load it as float32`,
            { key: t.name },
            `|values| ≤ ${F16_MAX}`,
            `${largest.toExponential(3)}`,
          );
      }
      weights[t.name] = tensor(data, t.shape, { dtype });
    },
    finish(): LoadedModel {
      if (config.tie_word_embeddings) for (const name of Object.keys(weights)) if (name.startsWith('lm_head.')) delete weights[name];
      model.loadWeights(weights);
      model.freeze();
      return { model, config, tokenizer, generation };
    },
    /** Frees the staged weights (after `finish`, or when loading failed). */
    dispose(): void {
      for (const t of Object.values(weights)) t.dispose();
    },
  };
}

/**
 * A model from a checkpoint's parts, the one path `loadModel` (files by path) and `modelFromFiles`
 * (bytes) share; see `modelBuilder`.
 */
export function buildModel(
  op: string,
  rawConfig: Record<string, unknown>,
  tokenizerFiles: TokenizerFiles,
  tensors: Iterable<CheckpointTensor>,
  generationConfig?: string,
  options: LoadOptions = {},
): LoadedModel {
  // The names are listed lazily: the config is checked before the weight files are opened.
  const build = modelBuilder(op, rawConfig, tokenizerFiles, names(tensors), generationConfig, options);
  try {
    for (const t of tensors) {
      const use = build.use(t);
      if (use !== 'skip') build.put(t, use === 'raw' ? t.readRaw() : t.read());
    }
    return build.finish();
  } finally {
    build.dispose();
  }
}

/** One tensor of a checkpoint whose bytes arrive asynchronously (a `Blob` slice, a fetch). */
export interface AsyncCheckpointTensor {
  name: string;
  shape: number[];
  dtype: string;
  read(): Promise<Float32Array>;
  readRaw(): Promise<Uint8Array>;
}

/** `buildModel` over tensors read asynchronously, one at a time. */
export async function buildModelAsync(
  op: string,
  rawConfig: Record<string, unknown>,
  tokenizerFiles: TokenizerFiles,
  tensors: readonly AsyncCheckpointTensor[],
  generationConfig?: string,
  options: LoadOptions = {},
): Promise<LoadedModel> {
  const build = modelBuilder(
    op,
    rawConfig,
    tokenizerFiles,
    tensors.map((t) => t.name),
    generationConfig,
    options,
  );
  try {
    for (const t of tensors) {
      const use = build.use(t);
      if (use !== 'skip') build.put(t, use === 'raw' ? await t.readRaw() : await t.read());
    }
    return build.finish();
  } finally {
    build.dispose();
  }
}

function* names(tensors: Iterable<{ name: string }>): Generator<string> {
  for (const t of tensors) yield t.name;
}

/**
 * A model from the bytes of a checkpoint directory's files (fetched in a browser, or read in
 * Node): `config.json` text, `model.safetensors` bytes, `tokenizer.json` text, and where the
 * folder has them `tokenizer_config.json`, `chat_template.jinja` and `generation_config.json` text.
 */
export function modelFromFiles(
  files: {
    config: string;
    weights: Uint8Array;
    tokenizer: string;
    tokenizerConfig?: string;
    chatTemplate?: string;
    generationConfig?: string;
  },
  options: LoadOptions = {},
): LoadedModel {
  const op = 'modelFromFiles';
  const raw = parseJsonObject(op, files.config, 'config.json');
  const { tensors } = readSafetensors(files.weights);
  const entries = Object.entries(tensors).map(([name, entry]) => ({
    name,
    shape: entry.shape,
    dtype: entry.dtype,
    read: () => toFloat32(entry),
    readRaw: () => entry.data,
  }));
  return buildModel(
    op,
    raw,
    { tokenizer: files.tokenizer, tokenizerConfig: files.tokenizerConfig, chatTemplate: files.chatTemplate },
    entries,
    files.generationConfig,
    options,
  );
}
