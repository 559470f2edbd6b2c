import { FormatError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { llamaConfigFromJson, ropeInverseFrequencies } from '../src/index';

const base = { vocab_size: 32, hidden_size: 64, intermediate_size: 96, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2 };

describe('config.json as transformers and MLX write it', () => {
  it('reads the architecture from model_type or architectures, with the config classes defaults', () => {
    expect(llamaConfigFromJson({ ...base, model_type: 'llama' })).toMatchObject({
      model_type: 'llama',
      tie_word_embeddings: false,
      sliding_window: null,
      rope_scaling: null,
    });
    expect(llamaConfigFromJson({ ...base, architectures: ['Qwen2ForCausalLM'] })).toMatchObject({ model_type: 'qwen2', qkv_bias: true });
    expect(llamaConfigFromJson({ ...base, model_type: 'qwen3', head_dim: 32 })).toMatchObject({ model_type: 'qwen3', qk_norm: true, head_dim: 32 });
    expect(llamaConfigFromJson({ ...base, model_type: 'mistral', sliding_window: 4096 }).sliding_window).toBe(4096);
    expect(llamaConfigFromJson({ ...base, model_type: 'qwen2', sliding_window: 4096, use_sliding_window: false }).sliding_window).toBeNull();
    expect(llamaConfigFromJson({ ...base, model_type: 'qwen2', sliding_window: 128, use_sliding_window: true }).sliding_window).toBe(128);
  });

  it('takes RoPE settings from rope_theta / rope_scaling (older) or rope_parameters (newer)', () => {
    const llama3 = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 };
    const old = llamaConfigFromJson({ ...base, rope_theta: 500000, rope_scaling: llama3 });
    const now = llamaConfigFromJson({ ...base, rope_parameters: { ...llama3, rope_theta: 500000 } });
    expect(old.rope_theta).toBe(500000);
    expect(now.rope_theta).toBe(500000);
    expect(now.rope_scaling).toEqual(old.rope_scaling);
    expect(llamaConfigFromJson({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 1e6 } })).toMatchObject({ rope_theta: 1e6, rope_scaling: null });
    expect(llamaConfigFromJson({ ...base, rope_scaling: { type: 'llama3', ...llama3 } }).rope_scaling?.factor).toBe(8);
  });

  it('refuses what would compute a different model, naming the field', () => {
    const refuse = (raw: Record<string, unknown>, message: string | RegExp) => {
      expect(() => llamaConfigFromJson({ ...base, ...raw })).toThrow(FormatError);
      expect(() => llamaConfigFromJson({ ...base, ...raw })).toThrow(message);
    };
    refuse(
      { model_type: 'gpt2' },
      'loadModel: model_type "gpt2" is not supported; expected one of llama, mistral, qwen2, qwen3, gemma3_text, phi3, got "gpt2"',
    );
    refuse(
      { rope_scaling: { rope_type: 'yarn', factor: 4 } },
      "loadModel: the RoPE scaling type \"yarn\" is not supported; expected 'default', 'linear' or 'llama3', got \"yarn\"",
    );
    refuse({ rope_parameters: { rope_type: 'dynamic', rope_theta: 10000 } }, /RoPE scaling type "dynamic"/);
    refuse({ rope_scaling: { rope_type: 'llama3', factor: 8 } }, /rope_scaling\.low_freq_factor must be a positive number/);
    refuse({ rope_theta: -1 }, 'loadModel: rope_theta must be a positive number; expected a number > 0, got -1');
    refuse({ model_type: 'mistral', sliding_window: 0 }, /sliding_window must be a positive integer/);
    refuse({ model_type: 'qwen3', use_sliding_window: true }, /Qwen3's sliding window is not supported/);
    refuse({ model_type: 'gemma3' }, /multimodal Gemma 3 folder/);
    refuse({ model_type: 'gemma3_text', use_bidirectional_attention: true }, /bidirectional attention/);
    refuse({ model_type: 'phi3', rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [2] } }, /RoPE scaling type "longrope"/);
    refuse(
      { model_type: 'gemma3_text', rope_parameters: { full_attention: { rope_type: 'default' }, sliding_attention: { rope_type: 'linear', factor: 2 } } },
      /RoPE scaling of sliding-window layers/,
    );
  });

  it('reads Gemma 3 configs as old and new transformers write them to the same model', () => {
    const gemma = { ...base, model_type: 'gemma3_text', num_hidden_layers: 7, head_dim: 16, sliding_window: 512 };
    const old = llamaConfigFromJson({
      ...gemma,
      rope_theta: 1e6,
      rope_local_base_freq: 1e4,
      rope_scaling: { rope_type: 'linear', factor: 8 },
      sliding_window_pattern: 6,
    });
    const now = llamaConfigFromJson({
      ...gemma,
      layer_types: [...Array(5).fill('sliding_attention'), 'full_attention', 'sliding_attention'],
      rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } },
    });
    for (const c of [old, now]) {
      expect(c).toMatchObject({
        rope_theta: 1e6,
        rope_local_base_freq: 1e4,
        rope_scaling: { rope_type: 'linear', factor: 8 },
        qk_norm: true,
        sliding_window: 512,
      });
      expect(c.layer_types).toEqual([
        'sliding_attention',
        'sliding_attention',
        'sliding_attention',
        'sliding_attention',
        'sliding_attention',
        'full_attention',
        'sliding_attention',
      ]);
    }
    // Gemma 3's config class defaults where a file leaves fields out.
    expect(llamaConfigFromJson({ ...base, model_type: 'gemma3_text' })).toMatchObject({
      tie_word_embeddings: true,
      query_pre_attn_scalar: 256,
      hidden_activation: 'gelu_pytorch_tanh',
    });
  });

  it("reads Phi-3's partial rotary factor from either place", () => {
    expect(llamaConfigFromJson({ ...base, model_type: 'phi3', partial_rotary_factor: 0.75 }).partial_rotary_factor).toBe(0.75);
    expect(
      llamaConfigFromJson({ ...base, model_type: 'phi3', rope_parameters: { rope_type: 'default', rope_theta: 1e4, partial_rotary_factor: 0.5 } }),
    ).toMatchObject({
      partial_rotary_factor: 0.5,
      rope_theta: 1e4,
      sliding_window: null,
    });
  });

  it("Llama 3's RoPE scaling keeps high frequencies, divides low ones and smooths the band between", () => {
    const plain = ropeInverseFrequencies(64, 500000);
    const scaled = ropeInverseFrequencies(64, 500000, {
      rope_type: 'llama3',
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    });
    // wavelength 2π/f below 8192/4 = 2048: unchanged; above 8192: divided by 8.
    for (let i = 0; i < plain.length; i++) {
      const wavelen = (2 * Math.PI) / plain[i];
      if (wavelen < 2048) expect(scaled[i]).toBe(plain[i]);
      else if (wavelen > 8192) expect(scaled[i]).toBeCloseTo(plain[i] / 8, 15);
      else {
        expect(scaled[i]).toBeLessThan(plain[i]);
        expect(scaled[i]).toBeGreaterThan(plain[i] / 8);
      }
    }
  });
});
