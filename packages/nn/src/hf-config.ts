import { FormatError } from '@metal-lora/tensor';
import type { LlamaConfig, RopeScaling } from './llama';

/** The architectures a model folder's `model_type` may name (each a Llama-shaped decoder). */
export const SUPPORTED_MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'qwen3'] as const;

const ARCHITECTURE_TYPES: Record<string, (typeof SUPPORTED_MODEL_TYPES)[number]> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
  Qwen3ForCausalLM: 'qwen3',
};

const op = 'loadModel';

function rope(raw: Record<string, unknown>): { theta: number | undefined; scaling: RopeScaling | null } {
  // Newer transformers write `rope_parameters` ({ rope_type, rope_theta, ... }); older ones
  // `rope_theta` at the top level and `rope_scaling` ({ rope_type | type, factor, ... }).
  const params = (raw.rope_parameters ?? null) as Record<string, unknown> | null;
  const scalingRaw = (raw.rope_scaling ?? params ?? null) as Record<string, unknown> | null;
  const theta = (params?.rope_theta ?? raw.rope_theta) as number | undefined;
  if (theta !== undefined && !(typeof theta === 'number' && Number.isFinite(theta) && theta > 0)) {
    throw new FormatError(op, 'rope_theta must be a positive number', { key: 'rope_theta' }, 'a number > 0', JSON.stringify(theta));
  }
  if (scalingRaw === null) return { theta, scaling: null };
  if (typeof scalingRaw !== 'object' || Array.isArray(scalingRaw)) {
    throw new FormatError(op, 'rope_scaling must be an object', { key: 'rope_scaling' }, '{ rope_type, ... }', JSON.stringify(scalingRaw));
  }
  const type = scalingRaw.rope_type ?? scalingRaw.type ?? 'default';
  if (type === 'default') return { theta, scaling: null };
  if (type !== 'llama3') {
    // Another scaling would compute a different model: refuse it by name rather than ignore it.
    throw new FormatError(
      op,
      `the RoPE scaling type ${JSON.stringify(type)} is not supported`,
      { key: 'rope_scaling.rope_type' },
      "'default' or 'llama3'",
      JSON.stringify(type),
    );
  }
  const num = (key: string) => {
    const v = scalingRaw[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)
      throw new FormatError(op, `rope_scaling.${key} must be a positive number`, { key: `rope_scaling.${key}` }, 'a number > 0', JSON.stringify(v));
    return v;
  };
  return {
    theta,
    scaling: {
      rope_type: 'llama3',
      factor: num('factor'),
      low_freq_factor: num('low_freq_factor'),
      high_freq_factor: num('high_freq_factor'),
      original_max_position_embeddings: num('original_max_position_embeddings'),
    },
  };
}

/**
 * A `config.json` as transformers (old or new) or MLX writes it, read as a {@link LlamaConfig}:
 * the architecture from `model_type` (or `architectures`), RoPE from `rope_theta` / `rope_scaling`
 * or `rope_parameters`, Qwen2's q/k/v bias, Qwen3's q/k norm, Mistral's sliding window. An unknown
 * architecture or a setting that would change the math unsupported is a `FormatError` naming it.
 */
export function llamaConfigFromJson(raw: Record<string, unknown>): LlamaConfig {
  const fromArchitecture = Array.isArray(raw.architectures) ? ARCHITECTURE_TYPES[String(raw.architectures[0])] : undefined;
  const type = (raw.model_type ?? fromArchitecture ?? 'llama') as string;
  if (!(SUPPORTED_MODEL_TYPES as readonly string[]).includes(type)) {
    throw new FormatError(
      op,
      `model_type ${JSON.stringify(type)} is not supported`,
      { key: 'model_type' },
      `one of ${SUPPORTED_MODEL_TYPES.join(', ')}`,
      JSON.stringify(type),
    );
  }
  const { theta, scaling } = rope(raw);
  const config: LlamaConfig = { ...(raw as unknown as LlamaConfig), model_type: type, rope_theta: theta, rope_scaling: scaling };
  // The defaults of transformers' config classes where a file leaves a field out.
  config.tie_word_embeddings = (raw.tie_word_embeddings as boolean | undefined) ?? false;
  if (type === 'qwen2') config.qkv_bias = true;
  if (type === 'qwen3') config.qk_norm = true;
  const window = raw.sliding_window;
  const windowed = type === 'mistral' || (type === 'qwen2' && raw.use_sliding_window === true);
  if (windowed && window !== null && window !== undefined) {
    if (typeof window !== 'number' || !Number.isInteger(window) || window < 1) {
      throw new FormatError(op, 'sliding_window must be a positive integer', { key: 'sliding_window' }, 'an integer ≥ 1 or null', JSON.stringify(window));
    }
    config.sliding_window = window;
  } else config.sliding_window = null;
  if (type === 'qwen3' && raw.use_sliding_window === true) {
    throw new FormatError(op, "Qwen3's sliding window is not supported", { key: 'use_sliding_window' }, 'false', 'true');
  }
  return config;
}
