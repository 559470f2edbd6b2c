import { FormatError } from '@metal-lora/tensor';
import { ARCHITECTURES, type LlamaConfig } from './config';
import type { RopeScaling } from './rope';

/** The architectures a model folder's `model_type` may name. */
export const SUPPORTED_MODEL_TYPES = Object.keys(ARCHITECTURES) as readonly string[];

const CLASS_TYPES: Record<string, string> = Object.fromEntries(Object.entries(ARCHITECTURES).map(([type, a]) => [a.className, type]));

const op = 'loadModel';

type Raw = Record<string, unknown>;

function isObject(v: unknown): v is Raw {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function positive(value: unknown, key: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0)
    throw new FormatError(op, `${key} must be a positive number`, { key }, 'a number > 0', JSON.stringify(value));
  return value;
}

/**
 * One set of RoPE parameters (`{ rope_type | type, rope_theta?, factor, ... }`) as a scaling:
 * `default` is none; `llama3` and `linear` are computed; any other type would compute a different
 * model, so it is refused by name rather than ignored.
 */
function scalingOf(params: Raw | null, key: string): RopeScaling | null {
  if (params === null) return null;
  if (!isObject(params)) throw new FormatError(op, `${key} must be an object`, { key }, '{ rope_type, ... }', JSON.stringify(params));
  const type = params.rope_type ?? params.type ?? 'default';
  const num = (field: string) => {
    const v = positive(params[field], `${key}.${field}`);
    if (v === undefined) throw new FormatError(op, `${key}.${field} must be a positive number`, { key: `${key}.${field}` }, 'a number > 0', 'nothing');
    return v;
  };
  if (type === 'default') return null;
  if (type === 'linear') return { rope_type: 'linear', factor: num('factor') };
  if (type === 'llama3')
    return {
      rope_type: 'llama3',
      factor: num('factor'),
      low_freq_factor: num('low_freq_factor'),
      high_freq_factor: num('high_freq_factor'),
      original_max_position_embeddings: num('original_max_position_embeddings'),
    };
  throw new FormatError(
    op,
    `the RoPE scaling type ${JSON.stringify(type)} is not supported`,
    { key: `${key}.rope_type` },
    "'default', 'linear' or 'llama3'",
    JSON.stringify(type),
  );
}

/**
 * RoPE as old and new transformers write it. Older files: `rope_theta` at the top level and
 * `rope_scaling` ({ rope_type | type, factor, ... }); Gemma 3 adds `rope_local_base_freq`. Newer
 * ones: `rope_parameters`, which for models with sliding and full layers (Gemma 3) holds one set
 * per layer type.
 */
function rope(raw: Raw): Pick<LlamaConfig, 'rope_theta' | 'rope_scaling' | 'rope_local_base_freq' | 'partial_rotary_factor'> {
  const params = raw.rope_parameters ?? null;
  if (params !== null && !isObject(params))
    throw new FormatError(op, 'rope_parameters must be an object', { key: 'rope_parameters' }, '{ rope_type, rope_theta, ... }', JSON.stringify(params));
  const perType = isObject(params) && (isObject(params.full_attention) || isObject(params.sliding_attention));
  const full = (perType ? ((params as Raw).full_attention ?? null) : params) as Raw | null;
  const sliding = perType ? (((params as Raw).sliding_attention ?? null) as Raw | null) : null;
  const scaling = scalingOf((raw.rope_scaling ?? full ?? null) as Raw | null, raw.rope_scaling ? 'rope_scaling' : 'rope_parameters');
  if (sliding && scalingOf(sliding, 'rope_parameters.sliding_attention') !== null) {
    // No released model scales its local layers' RoPE; refuse rather than guess how.
    throw new FormatError(
      op,
      'RoPE scaling of sliding-window layers is not supported',
      { key: 'rope_parameters.sliding_attention' },
      "rope_type 'default'",
      JSON.stringify(sliding.rope_type),
    );
  }
  return {
    rope_theta: positive(full?.rope_theta ?? raw.rope_theta, 'rope_theta'),
    rope_scaling: scaling,
    rope_local_base_freq: positive(sliding?.rope_theta ?? raw.rope_local_base_freq, 'rope_local_base_freq'),
    partial_rotary_factor: positive(full?.partial_rotary_factor ?? raw.partial_rotary_factor, 'partial_rotary_factor'),
  };
}

/** Fields each architecture's config class fills in where a file leaves them out (transformers' defaults). */
const DEFAULTS: Record<string, Raw> = {
  gemma3_text: {
    rope_theta: 1_000_000,
    rope_local_base_freq: 10_000,
    rms_norm_eps: 1e-6,
    query_pre_attn_scalar: 256,
    sliding_window: 4096,
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
    head_dim: 256,
  },
};

/** Whether a layer attends through the sliding window, per architecture. */
function layerTypes(type: string, raw: Raw, layers: number): LlamaConfig['layer_types'] {
  const given = raw.layer_types;
  if (Array.isArray(given)) return given as LlamaConfig['layer_types'];
  if (type === 'gemma3_text') {
    // Older Gemma 3 configs give the pattern instead: every pattern-th layer is global.
    const pattern = (raw.sliding_window_pattern ?? raw._sliding_window_pattern ?? 6) as number;
    if (!Number.isInteger(pattern) || pattern < 1)
      throw new FormatError(
        op,
        'sliding_window_pattern must be a positive integer',
        { key: 'sliding_window_pattern' },
        'an integer ≥ 1',
        JSON.stringify(pattern),
      );
    return Array.from({ length: layers }, (_, i) => ((i + 1) % pattern ? 'sliding_attention' : 'full_attention'));
  }
  if (type === 'qwen2' && raw.use_sliding_window === true) {
    const first = (raw.max_window_layers ?? layers) as number;
    return Array.from({ length: layers }, (_, i) => (i >= first ? 'sliding_attention' : 'full_attention'));
  }
  return null;
}

/**
 * A `config.json` as transformers (old or new) or MLX writes it, read as a {@link LlamaConfig}:
 * the architecture from `model_type` (or `architectures`), RoPE from `rope_theta` / `rope_scaling`
 * or `rope_parameters`, Qwen2's q/k/v bias, Qwen3's q/k norm, Mistral's and Phi-3's sliding
 * window, Gemma 3's interleaved local/global layers. An unknown architecture or a setting that
 * would change the math unsupported is a `FormatError` naming it.
 */
export function llamaConfigFromJson(input: Record<string, unknown>): LlamaConfig {
  const fromArchitecture = Array.isArray(input.architectures) ? CLASS_TYPES[String(input.architectures[0])] : undefined;
  const type = (input.model_type ?? fromArchitecture ?? 'llama') as string;
  if (!(type in ARCHITECTURES)) {
    const hint = type === 'gemma3' ? ' (a multimodal Gemma 3 folder: load its language model, model_type gemma3_text)' : '';
    throw new FormatError(
      op,
      `model_type ${JSON.stringify(type)} is not supported${hint}`,
      { key: 'model_type' },
      `one of ${SUPPORTED_MODEL_TYPES.join(', ')}`,
      JSON.stringify(type),
    );
  }
  const raw: Raw = { ...DEFAULTS[type], ...input };
  const config: LlamaConfig = { ...(raw as unknown as LlamaConfig), model_type: type, ...rope(raw) };
  // The defaults of transformers' config classes where a file leaves a field out.
  config.tie_word_embeddings = (raw.tie_word_embeddings as boolean | undefined) ?? false;
  const traits = ARCHITECTURES[type];
  if (traits.qkvBias) config.qkv_bias = true;
  if (traits.qkNorm) config.qk_norm = true;
  const window = raw.sliding_window;
  const windowed = traits.slidingWindow === 'always' || (traits.slidingWindow === 'opt-in' && raw.use_sliding_window === true);
  if (windowed && window !== null && window !== undefined) {
    if (typeof window !== 'number' || !Number.isInteger(window) || window < 1) {
      throw new FormatError(op, 'sliding_window must be a positive integer', { key: 'sliding_window' }, 'an integer ≥ 1 or null', JSON.stringify(window));
    }
    config.sliding_window = window;
    config.layer_types = layerTypes(type, raw, config.num_hidden_layers);
  } else {
    config.sliding_window = null;
    config.layer_types = null;
  }
  if (type === 'qwen3' && raw.use_sliding_window === true) {
    throw new FormatError(op, "Qwen3's sliding window is not supported", { key: 'use_sliding_window' }, 'false', 'true');
  }
  if (type === 'gemma3_text' && raw.use_bidirectional_attention === true) {
    throw new FormatError(op, 'bidirectional attention (EmbeddingGemma) is not a causal LM', { key: 'use_bidirectional_attention' }, 'false', 'true');
  }
  return config;
}
