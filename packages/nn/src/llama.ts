import {
  add,
  broadcastTo,
  concat,
  matmul,
  mul,
  neg,
  randn,
  reshape,
  silu,
  slice,
  softmax,
  type Tensor,
  tensor,
  transpose,
  ValueError,
  zeros,
} from '@metal-lora/tensor';
import { Embedding, Linear, type ParamOptions, RMSNorm } from './layers';
import { Module, ModuleList } from './module';

/** The fields of a Hugging Face / MLX Llama `config.json` this model uses. */
export interface LlamaConfig {
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
  /** RoPE frequency scaling: none, or Llama 3's (`rope_type: 'llama3'`). */
  rope_scaling?: RopeScaling | null;
  model_type?: string;
}

/** Llama 3's RoPE scaling: low frequencies divided by `factor`, high ones kept, the band between smoothed. */
export interface RopeScaling {
  rope_type: 'llama3';
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

/**
 * RoPE's inverse frequencies for a head dimension: `theta^(-2i/d)`, with Llama 3's scaling where
 * the config has it (as transformers' `_compute_llama3_parameters`).
 */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling: RopeScaling | null = null): Float64Array {
  const half = headDim / 2;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / headDim));
  if (!scaling) return inv;
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: context } = scaling;
  const lowWavelen = context / low;
  const highWavelen = context / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (context / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

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
  for (const key of ['rope_theta', 'rms_norm_eps', 'initializer_range'] as const) {
    const v = config[key];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v > 0))
      throw new ValueError(op, `${key} must be a positive finite number`, 'a number > 0', JSON.stringify(v));
  }
  const window = config.sliding_window;
  if (window !== undefined && window !== null && !(Number.isInteger(window) && window >= 1)) {
    throw new ValueError(op, 'sliding_window must be a positive integer or null', 'an integer ≥ 1', JSON.stringify(window));
  }
  const heads = config.num_attention_heads;
  const kv = config.num_key_value_heads ?? heads;
  if (heads % kv !== 0) throw new ValueError(op, 'num_attention_heads must be a multiple of num_key_value_heads', `a divisor of ${heads}`, String(kv));
  const headDim = config.head_dim ?? config.hidden_size / heads;
  if (!Number.isInteger(headDim) || headDim % 2 !== 0)
    throw new ValueError(op, 'the head dimension must be an even integer', 'hidden_size / num_attention_heads (or head_dim) even', String(headDim));
  const largest = Math.max(config.vocab_size * config.hidden_size, config.intermediate_size * config.hidden_size, heads * headDim * config.hidden_size);
  if (largest > MAX_TENSOR_ELEMENTS)
    throw new ValueError(op, 'a weight matrix would not fit in one tensor', `at most ${MAX_TENSOR_ELEMENTS} elements`, String(largest));
}

/**
 * Rotary position embedding (the "rotate half" form of HF Llama) for x `[B, H, T, Dh]` at
 * positions offset..offset+T, with RoPE base `theta` or explicit inverse frequencies (`Dh / 2`).
 */
export function applyRope(x: Tensor, theta: number | Float64Array, offset = 0): Tensor {
  const [, , T, dh] = x.shape;
  const half = dh / 2;
  const inv = typeof theta === 'number' ? ropeInverseFrequencies(dh, theta) : theta;
  // The angles are constants: cos and sin are computed on the host, [T, Dh] with both halves equal.
  const cosValues = new Float64Array(T * dh);
  const sinValues = new Float64Array(T * dh);
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const angle = (t + offset) * inv[i];
      cosValues[t * dh + i] = cosValues[t * dh + half + i] = Math.cos(angle);
      sinValues[t * dh + i] = sinValues[t * dh + half + i] = Math.sin(angle);
    }
  }
  const cosFull = tensor(cosValues, [T, dh], { dtype: x.dtype, backend: x.backend });
  const sinFull = tensor(sinValues, [T, dh], { dtype: x.dtype, backend: x.backend });
  const x1 = slice(x, [0, 0, 0, 0], [x.shape[0], x.shape[1], T, half]);
  const x2 = slice(x, [0, 0, 0, half], [x.shape[0], x.shape[1], T, dh]);
  const rotated = concat([neg(x2), x1], 3);
  return add(mul(x, cosFull), mul(rotated, sinFull));
}

/** Causal self-attention with RoPE and grouped KV heads; HF names q_proj, k_proj, v_proj, o_proj. */
export class Attention extends Module {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly theta: number;
  /** RoPE's inverse frequencies (`headDim / 2`), scaled where the config says. */
  readonly invFreq: Float64Array;
  readonly slidingWindow: number | null;
  /** Whether q and k are normalized per head (Qwen3's `q_norm`, `k_norm`). */
  readonly qkNorm: boolean;
  constructor(config: LlamaConfig, options: ParamOptions = {}) {
    super();
    this.heads = config.num_attention_heads;
    this.kvHeads = config.num_key_value_heads ?? this.heads;
    this.headDim = config.head_dim ?? config.hidden_size / this.heads;
    this.theta = config.rope_theta ?? 10000;
    this.invFreq = ropeInverseFrequencies(this.headDim, this.theta, config.rope_scaling ?? null);
    this.slidingWindow = config.sliding_window ?? null;
    this.qkNorm = config.qk_norm ?? false;
    if (!Number.isInteger(this.headDim) || this.headDim % 2 !== 0)
      throw new ValueError('Attention', 'head dimension must be an even integer', 'hidden_size / heads even', String(this.headDim));
    if (this.heads % this.kvHeads !== 0)
      throw new ValueError('Attention', 'heads must be a multiple of KV heads', `a divisor of ${this.heads}`, String(this.kvHeads));
    const bias = config.attention_bias ?? false;
    const qkvBias = bias || (config.qkv_bias ?? false);
    const seed = options.seed ?? 0;
    this.child('q_proj', new Linear(config.hidden_size, this.heads * this.headDim, { ...options, bias: qkvBias, seed: seed + 1 }));
    this.child('k_proj', new Linear(config.hidden_size, this.kvHeads * this.headDim, { ...options, bias: qkvBias, seed: seed + 2 }));
    this.child('v_proj', new Linear(config.hidden_size, this.kvHeads * this.headDim, { ...options, bias: qkvBias, seed: seed + 3 }));
    this.child('o_proj', new Linear(this.heads * this.headDim, config.hidden_size, { ...options, bias, seed: seed + 4 }));
    if (this.qkNorm) {
      this.child('q_norm', new RMSNorm(this.headDim, config.rms_norm_eps ?? 1e-6, options));
      this.child('k_norm', new RMSNorm(this.headDim, config.rms_norm_eps ?? 1e-6, options));
    }
  }

  forward(x: Tensor): Tensor {
    const [B, T] = x.shape;
    // [B, T, h·Dh] → [B, h, T, Dh], with the per-head norm (Qwen3) applied over Dh first.
    const split = (t: Tensor, h: number, norm?: string) => {
      const heads = reshape(t, [B, T, h, this.headDim]);
      return transpose(norm ? this.sub<RMSNorm>(norm).forward(heads) : heads, [0, 2, 1, 3]);
    };
    const q = applyRope(split(this.sub<Linear>('q_proj').forward(x), this.heads, this.qkNorm ? 'q_norm' : undefined), this.invFreq);
    let k = applyRope(split(this.sub<Linear>('k_proj').forward(x), this.kvHeads, this.qkNorm ? 'k_norm' : undefined), this.invFreq);
    let v = split(this.sub<Linear>('v_proj').forward(x), this.kvHeads);
    if (this.kvHeads !== this.heads) {
      // Each KV head serves heads / kvHeads query heads: repeat along a new axis, then merge.
      const g = this.heads / this.kvHeads;
      const repeat = (t: Tensor) =>
        reshape(broadcastTo(reshape(t, [B, this.kvHeads, 1, T, this.headDim]), [B, this.kvHeads, g, T, this.headDim]), [B, this.heads, T, this.headDim]);
      k = repeat(k);
      v = repeat(v);
    }
    const scores = mul(matmul(q, k, { transposeB: true }), 1 / Math.sqrt(this.headDim)); // [B, H, T, T]
    // Causal, and with a sliding window each query sees only the last `slidingWindow` keys.
    const mask = new Float64Array(T * T);
    const window = this.slidingWindow ?? T;
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (j > i || i - j >= window) mask[i * T + j] = -1e9;
    const probs = softmax(add(scores, tensor(mask, [T, T], { dtype: x.dtype, backend: x.backend })), -1);
    const out = reshape(transpose(matmul(probs, v), [0, 2, 1, 3]), [B, T, this.heads * this.headDim]);
    return this.sub<Linear>('o_proj').forward(out);
  }
}

/** SwiGLU feed-forward: down_proj(silu(gate_proj(x)) · up_proj(x)). */
export class MLP extends Module {
  constructor(config: LlamaConfig, options: ParamOptions = {}) {
    super();
    const bias = config.mlp_bias ?? false;
    const seed = options.seed ?? 0;
    this.child('gate_proj', new Linear(config.hidden_size, config.intermediate_size, { ...options, bias, seed: seed + 5 }));
    this.child('up_proj', new Linear(config.hidden_size, config.intermediate_size, { ...options, bias, seed: seed + 6 }));
    this.child('down_proj', new Linear(config.intermediate_size, config.hidden_size, { ...options, bias, seed: seed + 7 }));
  }
  forward(x: Tensor): Tensor {
    return this.sub<Linear>('down_proj').forward(mul(silu(this.sub<Linear>('gate_proj').forward(x)), this.sub<Linear>('up_proj').forward(x)));
  }
}

/** One pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(·)). */
export class DecoderLayer extends Module {
  constructor(config: LlamaConfig, options: ParamOptions = {}) {
    super();
    const eps = config.rms_norm_eps ?? 1e-5;
    this.child('self_attn', new Attention(config, options));
    this.child('mlp', new MLP(config, options));
    this.child('input_layernorm', new RMSNorm(config.hidden_size, eps, options));
    this.child('post_attention_layernorm', new RMSNorm(config.hidden_size, eps, options));
  }
  forward(x: Tensor): Tensor {
    const h = add(x, this.sub<Attention>('self_attn').forward(this.sub<RMSNorm>('input_layernorm').forward(x)));
    return add(h, this.sub<MLP>('mlp').forward(this.sub<RMSNorm>('post_attention_layernorm').forward(h)));
  }
}

/** The decoder stack: `embed_tokens`, `layers.N`, `norm`. */
export class LlamaModel extends Module {
  constructor(
    readonly config: LlamaConfig,
    options: ParamOptions = {},
  ) {
    super();
    const seed = options.seed ?? 0;
    this.child('embed_tokens', new Embedding(config.vocab_size, config.hidden_size, { ...options, seed }));
    this.child(
      'layers',
      new ModuleList(Array.from({ length: config.num_hidden_layers }, (_, i) => new DecoderLayer(config, { ...options, seed: seed + 100 * (i + 1) }))),
    );
    this.child('norm', new RMSNorm(config.hidden_size, config.rms_norm_eps ?? 1e-5, options));
  }
  forward(ids: Tensor): Tensor {
    let h = this.sub<Embedding>('embed_tokens').forward(ids);
    for (const layer of this.sub<ModuleList<DecoderLayer>>('layers').items) h = layer.forward(h);
    return this.sub<RMSNorm>('norm').forward(h);
  }
}

/**
 * A Llama-style causal LM whose parameter names match Hugging Face and MLX checkpoints
 * (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`), so real weights load 1:1.
 */
export class LlamaForCausalLM extends Module {
  /**
   * `initialize: false` skips transformers' initialization, for a model whose weights are loaded
   * next (`loadModel`): drawing normal values for every parameter of a large model only to
   * overwrite them costs seconds.
   */
  constructor(
    readonly config: LlamaConfig,
    options: ParamOptions & { initialize?: boolean } = {},
  ) {
    super();
    validateLlamaConfig(config);
    this.child('model', new LlamaModel(config, options));
    if (!config.tie_word_embeddings) this.child('lm_head', new Linear(config.hidden_size, config.vocab_size, { ...options, seed: (options.seed ?? 0) + 99 }));
    if (options.initialize !== false) this.initializeAsTransformers(config.initializer_range ?? 0.02, options);
  }

  /**
   * A fresh model's weights as transformers' `_init_weights` makes them: Linear and Embedding
   * weights normal(0, initializer_range), biases zero, norms one. (The layers' own defaults,
   * uniform ±1/√in and a unit-variance embedding, made a fresh 49k-vocabulary model's loss start
   * near 400 instead of ln(vocab).) Loaded weights replace these.
   */
  private initializeAsTransformers(std: number, options: ParamOptions): void {
    let seed = (options.seed ?? 0) * 7919 + 17;
    for (const [, m] of this.namedModules()) {
      if (!(m instanceof Linear) && !(m instanceof Embedding)) continue;
      for (const [name, p] of m.namedParameters()) {
        if (name.includes('.')) continue;
        const fresh =
          name === 'bias'
            ? zeros([...p.shape], { dtype: p.dtype, backend: p.backend })
            : randn([...p.shape], { seed: seed++, std, dtype: p.dtype, backend: p.backend });
        p.assign(fresh);
        fresh.dispose();
      }
    }
  }
  /** Logits `[B, T, vocab]` for int32 token ids `[B, T]`. */
  forward(ids: Tensor): Tensor {
    const h = this.sub<LlamaModel>('model').forward(ids);
    if (this.config.tie_word_embeddings) return (this.getModule('model.embed_tokens') as Embedding).asLinear(h);
    return this.sub<Linear>('lm_head').forward(h);
  }
}
