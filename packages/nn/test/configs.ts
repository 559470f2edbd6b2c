import type { LlamaConfig } from '../src/index';

/** Small model configs shared by the tests, one per architecture's distinct path. */
export const base: LlamaConfig = {
  vocab_size: 40,
  hidden_size: 32,
  intermediate_size: 40,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  initializer_range: 0.3,
};

/** One config per architecture's distinct path: plain, windowed, Gemma 3 (sandwich norms, local/global layers), Phi-3 (fused, partial RoPE). */
export const CONFIGS: Record<string, LlamaConfig> = {
  llama: base,
  'mistral window 3': { ...base, model_type: 'mistral', sliding_window: 3 },
  gemma3: {
    ...base,
    model_type: 'gemma3_text',
    head_dim: 8,
    qk_norm: true,
    query_pre_attn_scalar: 12,
    sliding_window: 3,
    layer_types: ['sliding_attention', 'full_attention'],
    rope_local_base_freq: 100,
    rope_scaling: { rope_type: 'linear', factor: 4 },
    hidden_activation: 'gelu_pytorch_tanh',
    tie_word_embeddings: true,
    final_logit_softcapping: 5,
    attn_logit_softcapping: 3,
  },
  phi3: { ...base, model_type: 'phi3', partial_rotary_factor: 0.5, sliding_window: 4 },
};
