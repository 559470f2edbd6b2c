import { FormatError } from '@metal-lora/tensor';
import type { SafetensorsDType } from './dtypes';
import { fromNumbers, readSafetensors, type SafetensorsEntry, toFloat32, type WriteEntry, writeSafetensors } from './safetensors';

/** One LoRA module's weights in the math (and PEFT) layout: A `[r, in]`, B `[out, r]`, row-major f32. */
export interface LoraWeights {
  a: Float32Array;
  b: Float32Array;
  inFeatures: number;
  outFeatures: number;
}

/**
 * A LoRA adapter independent of its file format: one rank and scale, and the weights of each
 * adapted module by its path in the model (`model.layers.15.self_attn.q_proj`, the Hugging Face /
 * MLX module naming).
 */
export interface LoraAdapter {
  rank: number;
  /** The multiplier of the low-rank branch (MLX `scale`; PEFT `lora_alpha / r`, or `/ √r` with rsLoRA). */
  scale: number;
  dropout: number;
  /** MLX semantics: LoRA on the last `numLayers` blocks; -1 for all. */
  numLayers: number;
  /** Block-relative module paths (`self_attn.q_proj`); null means "all linear layers". */
  keys: string[] | null;
  modules: Record<string, LoraWeights>;
  /** Storage dtype of the weights in the file they came from (written back the same way). */
  dtype: 'F32' | 'F16' | 'BF16';
}

/** The two files of an adapter directory, as bytes and text. */
export interface AdapterFiles {
  weights: Uint8Array;
  config: string;
}

export const MLX_WEIGHTS = 'adapters.safetensors';
export const MLX_CONFIG = 'adapter_config.json';
export const PEFT_WEIGHTS = 'adapter_model.safetensors';
export const PEFT_CONFIG = 'adapter_config.json';
const PEFT_PREFIX = 'base_model.model.';

function parseJson(op: string, text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new FormatError(op, `adapter_config.json is not valid JSON (${(error as Error).message})`, { key: 'adapter_config.json' });
  }
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new FormatError(op, 'adapter_config.json is not an object', { key: 'adapter_config.json' }, 'a JSON object', String(value));
  return value as Record<string, unknown>;
}

function num(op: string, config: Record<string, unknown>, key: string, fallback?: number): number {
  const v = config[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new FormatError(op, `config field ${key} is missing or not a number`, { key }, 'a finite number', JSON.stringify(config[key]));
  return v;
}

function checkRank(op: string, rank: number): number {
  if (!Number.isSafeInteger(rank) || rank < 1)
    throw new FormatError(op, 'the rank must be a positive integer', { key: 'rank' }, 'an integer ≥ 1', String(rank));
  return rank;
}

/**
 * Refuses an adapter that would load and then compute nonsense: a rank that is not a positive
 * integer (PEFT `r: 0` gave scale NaN), a non-finite scale, dropout outside [0, 1), no LoRA
 * tensors at all, or weights holding NaN or infinities (fusing them writes a model of NaNs).
 */
export function validateAdapter(op: string, adapter: LoraAdapter): LoraAdapter {
  const { rank, scale, dropout, numLayers } = adapter;
  checkRank(op, rank);
  if (!Number.isFinite(scale)) throw new FormatError(op, 'the scale is not a finite number', { key: 'scale' }, 'a finite number', String(scale));
  if (!(dropout >= 0 && dropout < 1)) throw new FormatError(op, 'dropout is out of range', { key: 'dropout' }, 'a probability in [0, 1)', String(dropout));
  if (!Number.isSafeInteger(numLayers) || numLayers < -1)
    throw new FormatError(op, 'num_layers must be -1 (all) or a count of blocks', { key: 'num_layers' }, 'an integer ≥ -1', String(numLayers));
  const modules = Object.entries(adapter.modules);
  if (modules.length === 0) throw new FormatError(op, 'the adapter has no LoRA tensors', {}, 'at least one pair of A and B matrices', 'none');
  for (const [path, w] of modules) {
    for (const [name, values] of [
      ['A', w.a],
      ['B', w.b],
    ] as const) {
      const bad = values.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0)
        throw new FormatError(
          op,
          `the ${name} matrix of '${path}' holds a non-finite value at element ${bad}`,
          { key: path },
          'finite weights',
          String(values[bad]),
        );
    }
  }
  return adapter;
}

function transpose(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = src[i * cols + j];
  return out;
}

function storageDType(op: string, entries: SafetensorsEntry[]): LoraAdapter['dtype'] {
  const kinds = new Set(entries.map((e) => e.dtype));
  if (kinds.size > 1) throw new FormatError(op, 'adapter tensors mix dtypes', {}, 'one dtype', [...kinds].join(', '));
  const dtype = entries[0]?.dtype ?? 'F32';
  if (dtype !== 'F32' && dtype !== 'F16' && dtype !== 'BF16') throw new FormatError(op, 'unsupported adapter dtype', {}, 'F32 | F16 | BF16', dtype);
  return dtype;
}

/** The block index of a module path (`model.layers.N.…`), or -1. */
function blockIndex(path: string): number {
  const m = /(?:^|\.)layers\.(\d+)\./.exec(path);
  return m ? Number(m[1]) : -1;
}

/** A module path relative to its block (`self_attn.q_proj`), or the whole path outside blocks. */
function blockRelative(path: string): string {
  const m = /(?:^|\.)layers\.\d+\.(.+)$/.exec(path);
  return m ? m[1] : path;
}

// ---- MLX (mlx-lm) ------------------------------------------------------------------------

/**
 * Reads an mlx-lm adapter directory's files: `adapters.safetensors` (`<module>.lora_a` `[in, r]`,
 * `<module>.lora_b` `[r, out]`) and `adapter_config.json` (`fine_tune_type`, `num_layers`,
 * `lora_parameters` {rank, scale, dropout, keys}; the legacy `lora_layers` and `use_dora` too).
 * DoRA and full fine-tunes are refused with a clear error.
 */
export function parseMlxAdapter(files: AdapterFiles): LoraAdapter {
  const op = 'parseMlxAdapter';
  const config = parseJson(op, files.config);
  const type = config.fine_tune_type ?? (config.use_dora === true ? 'dora' : 'lora');
  if (type === 'full')
    throw new FormatError(
      op,
      "a full fine-tune's weights, not a LoRA adapter (metal-lora's loadFineTune applies it)",
      { key: 'fine_tune_type' },
      "'lora'",
      "'full'",
    );
  if (type !== 'lora') throw new FormatError(op, 'only LoRA adapters are supported', { key: 'fine_tune_type' }, "'lora'", JSON.stringify(type));
  const params = config.lora_parameters as Record<string, unknown> | undefined;
  if (!params || typeof params !== 'object')
    throw new FormatError(op, 'lora_parameters is missing', { key: 'lora_parameters' }, '{ rank, scale, dropout }', JSON.stringify(params));
  const rank = checkRank(op, num(op, params, 'rank'));
  const scale = num(op, params, 'scale');
  const dropout = num(op, params, 'dropout', 0);
  const numLayers = num(op, config, config.num_layers !== undefined ? 'num_layers' : 'lora_layers');
  const keys = params.keys === undefined || params.keys === null ? null : params.keys;
  if (keys !== null && !(Array.isArray(keys) && keys.every((k) => typeof k === 'string')))
    throw new FormatError(op, 'lora_parameters.keys must be a list of strings', { key: 'keys' }, 'string[] or null', JSON.stringify(keys));
  const { tensors } = readSafetensors(files.weights);
  const modules: Record<string, LoraWeights> = Object.create(null);
  const entries = Object.entries(tensors);
  for (const [name, entry] of entries) {
    const m = /^(.*)\.(lora_a|lora_b)$/.exec(name);
    if (!m) throw new FormatError(op, 'unexpected tensor in an MLX LoRA adapter', { key: name }, '<module>.lora_a or <module>.lora_b', name);
    if (entry.shape.length !== 2) throw new FormatError(op, 'LoRA tensors must be matrices', { key: name }, 'rank 2', `[${entry.shape.join(', ')}]`);
  }
  for (const [name, entry] of entries) {
    if (!name.endsWith('.lora_a')) continue;
    const path = name.slice(0, -'.lora_a'.length);
    const bEntry = tensors[`${path}.lora_b`];
    if (!bEntry) throw new FormatError(op, 'lora_a without its lora_b', { key: name }, `${path}.lora_b`, 'nothing');
    const [inF, r] = entry.shape;
    const [rb, outF] = bEntry.shape;
    if (r !== rank || rb !== rank)
      throw new FormatError(op, 'tensor rank differs from the config', { key: name }, `rank ${rank}`, `lora_a [${entry.shape}], lora_b [${bEntry.shape}]`);
    modules[path] = { inFeatures: inF, outFeatures: outF, a: transpose(toFloat32(entry), inF, r), b: transpose(toFloat32(bEntry), r, outF) };
  }
  for (const name of Object.keys(tensors)) {
    if (name.endsWith('.lora_b') && !modules[name.slice(0, -'.lora_b'.length)]) throw new FormatError(op, 'lora_b without its lora_a', { key: name });
  }
  return validateAdapter(op, {
    rank,
    scale,
    dropout,
    numLayers,
    keys: keys as string[] | null,
    modules,
    dtype: storageDType(
      op,
      entries.map(([, e]) => e),
    ),
  });
}

/** The two files of an mlx-lm adapter directory (null metadata, as `mx.save_safetensors` writes). */
export function serializeMlxAdapter(adapter: LoraAdapter): AdapterFiles {
  validateAdapter('serializeMlxAdapter', adapter);
  const tensors: Record<string, ReturnType<typeof fromNumbers>> = Object.create(null);
  for (const [path, w] of Object.entries(adapter.modules)) {
    tensors[`${path}.lora_a`] = fromNumbers(transpose(w.a, adapter.rank, w.inFeatures), [w.inFeatures, adapter.rank], adapter.dtype as SafetensorsDType);
    tensors[`${path}.lora_b`] = fromNumbers(transpose(w.b, w.outFeatures, adapter.rank), [adapter.rank, w.outFeatures], adapter.dtype as SafetensorsDType);
  }
  const lora: Record<string, unknown> = { rank: adapter.rank, scale: adapter.scale, dropout: adapter.dropout };
  if (adapter.keys) lora.keys = adapter.keys;
  const config = { fine_tune_type: 'lora', lora_parameters: lora, num_layers: adapter.numLayers };
  return { weights: writeSafetensors(tensors), config: `${JSON.stringify(config, null, 4)}\n` };
}

/** The fine-tune type an mlx-lm `adapter_config.json` declares (`lora` when absent; the legacy `use_dora` too). */
export function mlxFineTuneType(configText: string): string {
  const config = parseJson('mlxFineTuneType', configText);
  const type = config.fine_tune_type ?? (config.use_dora === true ? 'dora' : 'lora');
  return typeof type === 'string' ? type : JSON.stringify(type);
}

/** mlx-lm's `--fine-tune-type full` output: the trained weights of the last `numLayers` blocks, by parameter name. */
export interface FullFineTune {
  numLayers: number;
  tensors: Record<string, SafetensorsEntry>;
}

/** Reads a full fine-tune's files (`adapters.safetensors` with weights by parameter name, `adapter_config.json` with `fine_tune_type: "full"`). */
export function parseMlxFullFineTune(files: AdapterFiles): FullFineTune {
  const op = 'parseMlxFullFineTune';
  const config = parseJson(op, files.config);
  if (config.fine_tune_type !== 'full')
    throw new FormatError(op, 'not a full fine-tune', { key: 'fine_tune_type' }, "'full'", JSON.stringify(config.fine_tune_type ?? 'lora'));
  const numLayers = num(op, config, 'num_layers');
  const { tensors } = readSafetensors(files.weights);
  const names = Object.keys(tensors);
  if (names.length === 0) throw new FormatError(op, 'the weights file holds no tensors', { key: MLX_WEIGHTS }, 'the trained weights', 'none');
  for (const name of names)
    if (/\.lora_[ab]$/.test(name)) throw new FormatError(op, 'a LoRA tensor in a full fine-tune', { key: name }, 'weights by parameter name', name);
  for (const name of names)
    if (!['F32', 'F16', 'BF16'].includes(tensors[name].dtype))
      throw new FormatError(op, 'unsupported weight dtype', { key: name }, 'F32 | F16 | BF16', tensors[name].dtype);
  return { numLayers, tensors };
}

/** The two files of a full fine-tune, as mlx-lm writes them (`lora_parameters: null`). */
export function serializeMlxFullFineTune(tensors: Record<string, WriteEntry>, numLayers: number): AdapterFiles {
  if (!Number.isInteger(numLayers)) throw new FormatError('serializeMlxFullFineTune', 'numLayers must be an integer', {}, 'an integer', String(numLayers));
  if (Object.keys(tensors).length === 0) throw new FormatError('serializeMlxFullFineTune', 'no tensors to save', {}, 'the trained weights', 'none');
  const config = { fine_tune_type: 'full', lora_parameters: null, num_layers: numLayers };
  return { weights: writeSafetensors(tensors), config: `${JSON.stringify(config, null, 4)}\n` };
}

// ---- PEFT --------------------------------------------------------------------------------

/** PEFT config fields whose non-default values change the adapter in ways MLX cannot represent. */
const PEFT_REFUSED: [string, (v: unknown) => boolean, string][] = [
  ['use_dora', (v) => v === true, 'DoRA'],
  ['lora_bias', (v) => v === true, 'a bias on lora_B'],
  ['fan_in_fan_out', (v) => v === true, 'fan_in_fan_out (Conv1D) weights'],
  ['bias', (v) => v !== undefined && v !== 'none', 'trained base biases'],
  ['modules_to_save', (v) => Array.isArray(v) && v.length > 0, 'modules_to_save copies'],
  ['trainable_token_indices', (v) => v !== undefined && v !== null, 'trainable tokens'],
  ['layer_replication', (v) => v !== undefined && v !== null, 'layer replication'],
];

/**
 * Reads a PEFT LoRA directory's files: `adapter_model.safetensors` (`base_model.model.<module>.
 * lora_A.weight` `[r, in]`, `lora_B.weight` `[out, r]`) and `adapter_config.json` (`r`,
 * `lora_alpha`, `use_rslora`, `target_modules`, `layers_to_transform`, …). Features with no
 * equivalent in this format-neutral adapter (DoRA, LoRA bias, Conv1D layout, per-module rank or
 * alpha patterns that differ, other PEFT types) are refused rather than silently changed.
 */
export function parsePeftAdapter(files: AdapterFiles): LoraAdapter {
  const op = 'parsePeftAdapter';
  const config = parseJson(op, files.config);
  if (config.peft_type !== 'LORA')
    throw new FormatError(op, 'only LoRA adapters are supported', { key: 'peft_type' }, "'LORA'", JSON.stringify(config.peft_type));
  for (const [key, refused, what] of PEFT_REFUSED) {
    if (refused(config[key])) throw new FormatError(op, `${what} cannot be represented`, { key }, 'the PEFT default', JSON.stringify(config[key]));
  }
  const r = checkRank(op, num(op, config, 'r'));
  const alpha = num(op, config, 'lora_alpha', r);
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const pattern = (config[key] ?? {}) as Record<string, number>;
    const base = key === 'rank_pattern' ? r : alpha;
    for (const [k, v] of Object.entries(pattern)) {
      if (v !== base)
        throw new FormatError(op, `${key} gives module '${k}' another value; one rank and scale per adapter are supported`, { key }, `${base}`, `${v}`);
    }
  }
  const rslora = config.use_rslora === true;
  const scale = rslora ? alpha / Math.sqrt(r) : alpha / r;
  const { tensors } = readSafetensors(files.weights);
  const modules: Record<string, LoraWeights> = Object.create(null);
  const entries = Object.entries(tensors);
  for (const [name, entry] of entries) {
    const m = /^base_model\.model\.(.*)\.(lora_A|lora_B)\.weight$/.exec(name);
    if (!m) throw new FormatError(op, 'unexpected tensor in a PEFT LoRA adapter', { key: name }, `${PEFT_PREFIX}<module>.lora_A.weight / lora_B.weight`, name);
    if (entry.shape.length !== 2) throw new FormatError(op, 'LoRA tensors must be matrices', { key: name }, 'rank 2', `[${entry.shape.join(', ')}]`);
  }
  for (const [name, entry] of entries) {
    const m = /^base_model\.model\.(.*)\.lora_A\.weight$/.exec(name);
    if (!m) continue;
    const path = m[1];
    const bEntry = tensors[`${PEFT_PREFIX}${path}.lora_B.weight`];
    if (!bEntry) throw new FormatError(op, 'lora_A without its lora_B', { key: name });
    const [ra, inF] = entry.shape;
    const [outF, rb] = bEntry.shape;
    if (ra !== r || rb !== r)
      throw new FormatError(op, 'tensor rank differs from the config', { key: name }, `r = ${r}`, `lora_A [${entry.shape}], lora_B [${bEntry.shape}]`);
    modules[path] = { inFeatures: inF, outFeatures: outF, a: toFloat32(entry), b: toFloat32(bEntry) };
  }
  for (const name of Object.keys(tensors)) {
    const m = /^base_model\.model\.(.*)\.lora_B\.weight$/.exec(name);
    if (m && !modules[m[1]]) throw new FormatError(op, 'lora_B without its lora_A', { key: name });
  }
  // MLX applies LoRA to a suffix of blocks: the adapted blocks run from the lowest index present
  // to the highest (assumed the model's last block).
  const blocks = Object.keys(modules)
    .map(blockIndex)
    .filter((i) => i >= 0);
  const numLayers = blocks.length ? Math.max(...blocks) - Math.min(...blocks) + 1 : -1;
  const targets = config.target_modules;
  const keys = targets === 'all-linear' || targets === undefined || targets === null ? null : [...new Set(Object.keys(modules).map(blockRelative))].sort();
  return validateAdapter(op, {
    rank: r,
    scale,
    dropout: num(op, config, 'lora_dropout', 0),
    numLayers,
    keys,
    modules,
    dtype: storageDType(
      op,
      entries.map(([, e]) => e),
    ),
  });
}

/** The two files of a PEFT LoRA directory (metadata `format: pt`, as PEFT writes). */
export function serializePeftAdapter(adapter: LoraAdapter, options: { baseModel?: string | null } = {}): AdapterFiles {
  validateAdapter('serializePeftAdapter', adapter);
  const tensors: Record<string, ReturnType<typeof fromNumbers>> = Object.create(null);
  for (const [path, w] of Object.entries(adapter.modules)) {
    tensors[`${PEFT_PREFIX}${path}.lora_A.weight`] = fromNumbers(w.a, [adapter.rank, w.inFeatures], adapter.dtype as SafetensorsDType);
    tensors[`${PEFT_PREFIX}${path}.lora_B.weight`] = fromNumbers(w.b, [w.outFeatures, adapter.rank], adapter.dtype as SafetensorsDType);
  }
  const blocks = [
    ...new Set(
      Object.keys(adapter.modules)
        .map(blockIndex)
        .filter((i) => i >= 0),
    ),
  ].sort((x, y) => x - y);
  const config = {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: options.baseModel ?? null,
    r: adapter.rank,
    lora_alpha: adapter.scale * adapter.rank,
    lora_dropout: adapter.dropout,
    use_rslora: false,
    use_dora: false,
    bias: 'none',
    fan_in_fan_out: false,
    // Block-relative paths match by suffix in PEFT (name ends with "." + key), as exactly as MLX keys.
    target_modules: adapter.keys ?? 'all-linear',
    layers_to_transform: adapter.numLayers === -1 ? null : blocks,
    rank_pattern: {},
    alpha_pattern: {},
    inference_mode: true,
  };
  return { weights: writeSafetensors(tensors, { format: 'pt' }), config: `${JSON.stringify(config, null, 2)}\n` };
}

// ---- conversions -------------------------------------------------------------------------

/** PEFT directory files → mlx-lm directory files (transposes, alpha → scale, layer range, keys). */
export function peftToMlx(files: AdapterFiles): AdapterFiles {
  return serializeMlxAdapter(parsePeftAdapter(files));
}

/** mlx-lm directory files → PEFT directory files (transposes, scale → lora_alpha = scale·r, layers). */
export function mlxToPeft(files: AdapterFiles, options: { baseModel?: string | null } = {}): AdapterFiles {
  return serializePeftAdapter(parseMlxAdapter(files), options);
}

/** Which format a directory's file names indicate. */
export function detectFormat(fileNames: readonly string[], configText?: string): 'mlx' | 'peft' {
  // Both weight files in one folder (a folder saved in one format, then the other): the config,
  // which both formats name adapter_config.json, says which one it belongs to.
  if (configText !== undefined && fileNames.includes(PEFT_WEIGHTS) && fileNames.includes(MLX_WEIGHTS)) {
    try {
      return (JSON.parse(configText) as { peft_type?: unknown } | null)?.peft_type !== undefined ? 'peft' : 'mlx';
    } catch {
      // An unreadable config is reported by the parser.
    }
  }
  if (fileNames.includes(PEFT_WEIGHTS)) return 'peft';
  if (fileNames.includes(MLX_WEIGHTS)) return 'mlx';
  throw new FormatError(
    'loadAdapter',
    'no adapter weights found',
    {},
    `${MLX_WEIGHTS} (MLX) or ${PEFT_WEIGHTS} (PEFT)`,
    fileNames.join(', ') || 'an empty directory',
  );
}
