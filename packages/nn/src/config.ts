import { ValueError } from '@metal-lora/tensor';
import type { RopeScaling } from './rope';

/** The fields of a Hugging Face / MLX Llama `config.json` this model uses. */
export interface LlamaConfig {
  /**
   * MLX's quantization block (`{ group_size, bits, mode }`, with per-layer overrides under module
   * paths) for a checkpoint saved quantized; `quantization_config` is its transformers mirror.
   */
  quantization?: Record<string, unknown>;
  quantization_config?: Record<string, unknown>;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads?: number;
  rms_norm_eps?: number;
  rope_theta?: number;
  tie_word_embeddings?: boolean;
  /** Bias on q, k, v and o (Llama's `attention_bias`). */
  attention_bias?: boolean;
  mlp_bias?: boolean;
  head_dim?: number;
  /** Standard deviation of a fresh model's weights, as transformers initializes them (default 0.02). */
  initializer_range?: number;
  /** Bias on q, k and v only (Qwen2). */
  qkv_bias?: boolean;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3): `q_norm`, `k_norm` of `head_dim`. */
  qk_norm?: boolean;
  /** Each position attends to the last `sliding_window` positions, itself included (Mistral). */
  sliding_window?: number | null;
  /** RoPE frequency scaling of full-attention layers: none, Llama 3's or linear. */
  rope_scaling?: RopeScaling | null;
  /**
   * Which layers attend through `sliding_window` (Gemma 3 interleaves them; Qwen2 with
   * `use_sliding_window`). Without it, every layer does where `sliding_window` is set.
   */
  layer_types?: ('full_attention' | 'sliding_attention')[] | null;
  /** RoPE base of the sliding-window layers (Gemma 3's `rope_local_base_freq`). */
  rope_local_base_freq?: number;
  /** Scores scaled by `query_pre_attn_scalar^-0.5` instead of `head_dim^-0.5` (Gemma). */
  query_pre_attn_scalar?: number;
  /** The share of each head's features that RoPE rotates (Phi-3 / Phi-4-mini); 1 when absent. */
  partial_rotary_factor?: number;
  /** The MLP's gate activation: `silu` (default), `gelu_pytorch_tanh` / `gelu_tanh`, or `gelu`. */
  hidden_act?: string;
  /** Gemma's name for {@link hidden_act}; it wins where both are present. */
  hidden_activation?: string;
  /** Logits become `cap·tanh(logits / cap)` (Gemma 2 style); null or absent: no capping. */
  final_logit_softcapping?: number | null;
  /** Attention scores become `cap·tanh(scores / cap)` before the mask. */
  attn_logit_softcapping?: number | null;
  model_type?: string;
}

/** What distinguishes an architecture's computation beyond its config's sizes. */
export interface ArchitectureTraits {
  /** The transformers class `saveModel` writes into `architectures`. */
  className: string;
  /** RMSNorm scales by `1 + weight` (Gemma; its norm weights are stored zero-centred). */
  normOffset: boolean;
  /** Norms after attention and after the MLP too, each before its residual add (Gemma 2/3). */
  sandwichNorms: boolean;
  /** Embeddings multiplied by √hidden_size (Gemma). */
  embedScale: boolean;
  /** One `qkv_proj` and one `gate_up_proj` instead of separate projections (Phi-3). */
  fusedProjections: boolean;
  /** Bias on q, k and v, whatever `attention_bias` says (Qwen2): sets the config's `qkv_bias`. */
  qkvBias: boolean;
  /** Per-head q/k RMSNorm (Qwen3, Gemma 3): sets the config's `qk_norm`. */
  qkNorm: boolean;
  /** When a `config.json`'s `sliding_window` applies: always, only with `use_sliding_window: true` (Qwen2), or never. */
  slidingWindow: 'always' | 'opt-in' | 'never';
}

const LLAMA_LIKE = {
  normOffset: false,
  sandwichNorms: false,
  embedScale: false,
  fusedProjections: false,
  qkvBias: false,
  qkNorm: false,
  slidingWindow: 'never',
} as const;

/** Every architecture a model folder's `model_type` may name, each a configuration of the shared layers. */
export const ARCHITECTURES: Record<string, ArchitectureTraits> = {
  llama: { className: 'LlamaForCausalLM', ...LLAMA_LIKE },
  mistral: { className: 'MistralForCausalLM', ...LLAMA_LIKE, slidingWindow: 'always' },
  qwen2: { className: 'Qwen2ForCausalLM', ...LLAMA_LIKE, qkvBias: true, slidingWindow: 'opt-in' },
  qwen3: { className: 'Qwen3ForCausalLM', ...LLAMA_LIKE, qkNorm: true },
  gemma3_text: {
    className: 'Gemma3ForCausalLM',
    ...LLAMA_LIKE,
    normOffset: true,
    sandwichNorms: true,
    embedScale: true,
    qkNorm: true,
    slidingWindow: 'always',
  },
  phi3: { className: 'Phi3ForCausalLM', ...LLAMA_LIKE, fusedProjections: true, slidingWindow: 'always' },
};

/** The traits of a config's architecture (`llama` when it names none). */
export function architectureOf(config: Pick<LlamaConfig, 'model_type'>): ArchitectureTraits {
  return ARCHITECTURES[config.model_type ?? 'llama'] ?? ARCHITECTURES.llama;
}

/** The rotary features per head: `head_dim · partial_rotary_factor`. */
export function rotaryDimOf(config: LlamaConfig): number {
  const headDim = config.head_dim ?? config.hidden_size / config.num_attention_heads;
  return Math.floor(headDim * (config.partial_rotary_factor ?? 1));
}

/** The MLP gate activations a config may name, as transformers' `ACT2FN` keys. */
export const ACTIVATIONS = { silu: 'silu', swish: 'silu', gelu_pytorch_tanh: 'gelu_tanh', gelu_tanh: 'gelu_tanh', gelu: 'gelu' } as const;

/** Upper bounds of the sizes a config may ask for: far above any released model, far below what would exhaust memory by mistake. */
export const LLAMA_CONFIG_LIMITS = {
  vocab_size: 1 << 22,
  hidden_size: 1 << 16,
  intermediate_size: 1 << 18,
  num_hidden_layers: 1 << 10,
  num_attention_heads: 1 << 10,
  num_key_value_heads: 1 << 10,
  head_dim: 1 << 12,
} as const;

/** Elements a JavaScript typed array (one tensor's storage) may hold. */
const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

/**
 * Checks a config before anything is allocated: every size a positive integer within
 * {@link LLAMA_CONFIG_LIMITS}, heads that divide evenly, positive finite `rope_theta` and
 * `rms_norm_eps`, and no weight matrix too large for one tensor. Throws `ValueError` naming the field.
 */
export function validateLlamaConfig(config: LlamaConfig): void {
  const op = 'LlamaConfig';
  if (config === null || typeof config !== 'object')
    throw new ValueError(op, 'the config is not an object', 'an object such as config.json holds', String(config));
  for (const [key, max] of Object.entries(LLAMA_CONFIG_LIMITS) as [keyof typeof LLAMA_CONFIG_LIMITS, number][]) {
    const v = config[key];
    if (v === undefined && (key === 'num_key_value_heads' || key === 'head_dim')) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
      throw new ValueError(op, `${key} is out of range`, `an integer in 1..${max}`, JSON.stringify(v) ?? 'nothing');
  }
  for (const key of ['rope_theta', 'rms_norm_eps', 'initializer_range', 'rope_local_base_freq', 'query_pre_attn_scalar'] as const) {
    const v = config[key];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0))
      throw new ValueError(op, `${key} must be a positive finite number`, 'a number > 0', JSON.stringify(v));
  }
  const window = config.sliding_window;
  if (window !== undefined && window !== null && !(Number.isInteger(window) && window >= 1)) {
    throw new ValueError(op, 'sliding_window must be a positive integer or null', 'an integer ≥ 1', JSON.stringify(window));
  }
  for (const key of ['final_logit_softcapping', 'attn_logit_softcapping'] as const) {
    const v = config[key];
    if (v !== undefined && v !== null && !(typeof v === 'number' && Number.isFinite(v) && v > 0))
      throw new ValueError(op, `${key} must be a positive number or null`, 'a number > 0 or null', JSON.stringify(v));
  }
  const types = config.layer_types;
  if (types !== undefined && types !== null) {
    if (!Array.isArray(types) || types.length !== config.num_hidden_layers || !types.every((t) => t === 'full_attention' || t === 'sliding_attention'))
      throw new ValueError(
        op,
        'layer_types must name each layer full_attention or sliding_attention',
        `${config.num_hidden_layers} entries`,
        JSON.stringify(types)?.slice(0, 120),
      );
  }
  const act = config.hidden_activation ?? config.hidden_act ?? 'silu';
  if (!(act in ACTIVATIONS))
    throw new ValueError(op, `the activation ${JSON.stringify(act)} is not supported`, Object.keys(ACTIVATIONS).join(', '), String(act));
  const heads = config.num_attention_heads;
  const kv = config.num_key_value_heads ?? heads;
  if (heads % kv !== 0) throw new ValueError(op, 'num_attention_heads must be a multiple of num_key_value_heads', `a divisor of ${heads}`, String(kv));
  const headDim = config.head_dim ?? config.hidden_size / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new ValueError(op, 'the head dimension must be an even integer', 'hidden_size / num_attention_heads (or head_dim) even', String(headDim));
  const partial = config.partial_rotary_factor;
  if (partial !== undefined && !(typeof partial === 'number' && partial > 0 && partial <= 1 && rotaryDimOf(config) % 2 === 0 && rotaryDimOf(config) > 0))
    throw new ValueError(op, 'partial_rotary_factor must leave an even, non-empty rotary dimension', 'a number in (0, 1]', JSON.stringify(partial));
  // Phi-3's fused projections: q, k and v in one matrix, gate and up in another.
  const largest = Math.max(
    config.vocab_size * config.hidden_size,
    2 * config.intermediate_size * config.hidden_size,
    (heads + 2 * kv) * headDim * config.hidden_size,
  );
  if (largest > MAX_TENSOR_ELEMENTS)
    throw new ValueError(op, 'a weight matrix would not fit in one tensor', `at most ${MAX_TENSOR_ELEMENTS} elements`, String(largest));
}
