import {
  add,
  checkpoint,
  attention,
  decodeAttention,
  gatedActivation,
  gelu,
  isGradEnabled,
  maskedSoftmax,
  matmul,
  mul,
  reshape,
  rope,
  slice,
  softmax,
  type QuantSpec,
  type Tensor,
  tanh,
  transpose,
  zeros,
  randn,
} from '@metal-lora/tensor';
import { ACTIVATIONS, architectureOf, type LlamaConfig, rotaryDimOf, validateLlamaConfig } from './config';
import { AttentionContext, type KVCache } from './kv-cache';
import { Embedding, Linear, type ParamOptions, RMSNorm } from './layers';
import { QuantizedEmbedding, QuantizedLinear } from './quantized';
import { type CrossEntropyOptions, crossEntropy, headCrossEntropy } from './losses';
import { Module, ModuleList } from './module';
import { ropeInverseFrequencies } from './rope';

/** Options of a causal model's forward pass. */
export interface ForwardOptions {
  /** Keys and values of earlier positions: the pass appends its own and attends to all of them. */
  cache?: KVCache;
  /** `'last'`: logits of the last position only (`[B, 1, vocab]`), as generation needs. Default `'all'`. */
  logits?: 'all' | 'last';
  /**
   * Packed rows (training on documents laid end to end): per row, the lengths of its documents in
   * order. Each position attends only within its document and its RoPE position counts from the
   * document's start; positions after the last document are padding.
   */
  segments?: readonly (readonly number[])[];
}

/** Passes of at most this many new positions through a KV cache take the fused `decodeAttention`. */
const DECODE_ROWS = 4;

/** `cap·tanh(x / cap)`. */
function softcap(x: Tensor, cap: number | null | undefined): Tensor {
  return cap ? mul(tanh(mul(x, 1 / cap)), cap) : x;
}

/** How a Llama-style model's layers are made: dtype, seed, and which are stored quantized. */
export interface LlamaOptions extends ParamOptions {
  /**
   * The quantization of the layer at a module path (`model.layers.0.mlp.down_proj`,
   * `model.embed_tokens`, `lm_head`), or null for a float layer: a checkpoint saved quantized
   * (MLX's affine mode) is built with its packed layers directly, never as float weights first.
   */
  quantized?: (path: string) => QuantSpec | null;
}

/** A Linear at `path`: quantized where `options.quantized` says so. */
function linearAt(options: LlamaOptions, path: string, inFeatures: number, outFeatures: number, extra: { bias?: boolean; seed: number }): Linear {
  const spec = options.quantized?.(path);
  if (spec) return new QuantizedLinear(inFeatures, outFeatures, { ...spec, dtype: options.dtype, bias: extra.bias });
  return new Linear(inFeatures, outFeatures, { dtype: options.dtype, ...extra });
}

/**
 * Causal self-attention with RoPE and grouped KV heads; HF names q_proj, k_proj, v_proj, o_proj
 * (Phi-3: one qkv_proj). Per layer, from the config: a sliding window, the RoPE base and scaling
 * (Gemma 3's local and global layers differ), partial rotary features (Phi-3), per-head q/k norms
 * (Qwen3, Gemma 3) and the score scale (Gemma's `query_pre_attn_scalar`).
 */
export class Attention extends Module {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** RoPE's inverse frequencies (`rotaryDim / 2`), scaled where the config says. */
  readonly invFreq: Float64Array;
  readonly slidingWindow: number | null;
  /** Whether q and k are normalized per head (Qwen3's and Gemma 3's `q_norm`, `k_norm`). */
  readonly qkNorm: boolean;
  readonly scale: number;
  private readonly fused: boolean;
  private readonly softcap: number | null;

  constructor(
    config: LlamaConfig,
    options: LlamaOptions = {},
    readonly layerIndex = 0,
  ) {
    super();
    const traits = architectureOf(config);
    this.heads = config.num_attention_heads;
    this.kvHeads = config.num_key_value_heads ?? this.heads;
    this.headDim = config.head_dim ?? config.hidden_size / this.heads;
    const window = config.sliding_window ?? null;
    const types = config.layer_types;
    this.slidingWindow = window !== null && (!types || types[layerIndex] === 'sliding_attention') ? window : null;
    const local = this.slidingWindow !== null && types && config.rope_local_base_freq !== undefined;
    this.invFreq = local
      ? ropeInverseFrequencies(rotaryDimOf(config), config.rope_local_base_freq!)
      : ropeInverseFrequencies(rotaryDimOf(config), config.rope_theta ?? 10000, config.rope_scaling ?? null);
    this.qkNorm = config.qk_norm ?? false;
    this.scale = (config.query_pre_attn_scalar ?? this.headDim) ** -0.5;
    this.fused = traits.fusedProjections;
    this.softcap = config.attn_logit_softcapping ?? null;
    const bias = config.attention_bias ?? false;
    const qkvBias = bias || (config.qkv_bias ?? false);
    const seed = options.seed ?? 0;
    const [q, kv] = [this.heads * this.headDim, this.kvHeads * this.headDim];
    const at = `model.layers.${layerIndex}.self_attn.`;
    if (this.fused) this.child('qkv_proj', linearAt(options, `${at}qkv_proj`, config.hidden_size, q + 2 * kv, { bias: qkvBias, seed: seed + 1 }));
    else {
      this.child('q_proj', linearAt(options, `${at}q_proj`, config.hidden_size, q, { bias: qkvBias, seed: seed + 1 }));
      this.child('k_proj', linearAt(options, `${at}k_proj`, config.hidden_size, kv, { bias: qkvBias, seed: seed + 2 }));
      this.child('v_proj', linearAt(options, `${at}v_proj`, config.hidden_size, kv, { bias: qkvBias, seed: seed + 3 }));
    }
    this.child('o_proj', linearAt(options, `${at}o_proj`, q, config.hidden_size, { bias, seed: seed + 4 }));
    if (this.qkNorm) {
      const norm = { ...options, offset: traits.normOffset };
      this.child('q_norm', new RMSNorm(this.headDim, config.rms_norm_eps ?? 1e-6, norm));
      this.child('k_norm', new RMSNorm(this.headDim, config.rms_norm_eps ?? 1e-6, norm));
    }
  }

  /** q, k, v `[B, T, h·Dh]` from the projection(s). */
  private project(x: Tensor): [Tensor, Tensor, Tensor] {
    if (!this.fused) return [this.sub<Linear>('q_proj').forward(x), this.sub<Linear>('k_proj').forward(x), this.sub<Linear>('v_proj').forward(x)];
    const [B, T] = x.shape;
    const qkv = this.sub<Linear>('qkv_proj').forward(x);
    const [q, kv] = [this.heads * this.headDim, this.kvHeads * this.headDim];
    return [slice(qkv, [0, 0, 0], [B, T, q]), slice(qkv, [0, 0, q], [B, T, q + kv]), slice(qkv, [0, 0, q + kv], [B, T, q + 2 * kv])];
  }

  forward(x: Tensor, context?: AttentionContext): Tensor {
    const ctx = context ?? new AttentionContext(x);
    const [B, T] = x.shape;
    const { heads, kvHeads, headDim } = this;
    // [B, T, h·Dh] → [B, T, h, Dh], with the per-head norm (Qwen3, Gemma 3) applied over Dh; RoPE
    // moves q and k to [B, h, T, Dh] in the same kernel.
    const perHead = (t: Tensor, h: number, norm?: string) => {
      const split = reshape(t, [B, T, h, headDim]);
      return norm ? this.sub<RMSNorm>(norm).forward(split) : split;
    };
    const [qx, kx, vx] = this.project(x);
    const tables = ctx.rope(this.invFreq);
    const q = rope(perHead(qx, heads, this.qkNorm ? 'q_norm' : undefined), tables.cos, tables.sin, { layout: 'bthd' });
    const kh = perHead(kx, kvHeads, this.qkNorm ? 'k_norm' : undefined);
    let k: Tensor;
    let v: Tensor;
    // A fixed-capacity cache takes the projections as they are: RoPE, layout and both writes in one op.
    if (ctx.cache?.capacity) ({ k, v } = ctx.cache.writeProjected(this.layerIndex, kh, perHead(vx, kvHeads), tables));
    else {
      k = rope(kh, tables.cos, tables.sin, { layout: 'bthd' });
      v = transpose(perHead(vx, kvHeads), [0, 2, 1, 3]);
      if (ctx.cache) ({ k, v } = ctx.cache.update(this.layerIndex, k, v));
    }
    const S = ctx.keys;
    // Grouped heads without copying keys: the g query heads of one KV head become g·T rows of it.
    const g = heads / kvHeads;
    const mask = ctx.mask(this.slidingWindow);
    // Each KV head's g·T rows back to [B, T, h·Dh], through o_proj.
    const project = (rows: Tensor) =>
      this.sub<Linear>('o_proj').forward(reshape(transpose(reshape(rows, [B, heads, T, headDim]), [0, 2, 1, 3]), [B, T, heads * headDim]));
    // The one-op kernels take heads of up to 256 features and no logit soft-cap.
    const oneOp = !this.softcap && headDim <= 256;
    if (oneOp && ctx.cache && T <= DECODE_ROWS && !isGradEnabled())
      // A decode step: scores, softmax and the weighted values in one op, no scores stored.
      return project(decodeAttention(reshape(q, [B, kvHeads, g * T, headDim]), k, v, mask, this.scale));
    if (oneOp && ctx.fused)
      // One op, flash style: no [B, h, T, S] scores held, forward or backward. The masks are
      // causal wherever the keys are exactly the visible ones (not a fixed-capacity cache's slots).
      return project(attention(reshape(q, [B, kvHeads, g * T, headDim]), k, v, mask, this.scale, { causal: S === ctx.total }));
    const core = (qs: Tensor, ks: Tensor, vs: Tensor) => {
      const raw = reshape(matmul(reshape(qs, [B, kvHeads, g * T, headDim]), ks, { transposeB: true }), [B, kvHeads, g, T, S]);
      // Scale, mask and softmax in one op (nothing but the probabilities kept for backward); a
      // logit soft-cap (Gemma 2's) goes through the composition.
      const weights = this.softcap ? softmax(add(softcap(mul(raw, this.scale), this.softcap), mask), -1) : maskedSoftmax(raw, mask, this.scale);
      return matmul(reshape(weights, [B, kvHeads, g * T, S]), vs);
    };
    // Training keeps q, k and v and recomputes the [B, h, T, S] probabilities in backward (as
    // SDPA does) rather than holding them from forward to backward.
    return project(ctx.recompute ? checkpoint(core, [q, k, v], []) : core(q, k, v));
  }
}

/**
 * Gated feed-forward: down_proj(act(gate_proj(x)) · up_proj(x)), with SiLU (SwiGLU: Llama, Qwen,
 * Mistral, Phi-3) or tanh-GELU (GeGLU: Gemma); Phi-3 holds gate and up in one `gate_up_proj`.
 */
export class MLP extends Module {
  private readonly activation: (typeof ACTIVATIONS)[keyof typeof ACTIVATIONS];
  private readonly fused: boolean;
  private readonly intermediate: number;
  constructor(config: LlamaConfig, options: LlamaOptions = {}, layerIndex = 0) {
    super();
    const bias = config.mlp_bias ?? false;
    const at = `model.layers.${layerIndex}.mlp.`;
    const seed = options.seed ?? 0;
    this.activation = ACTIVATIONS[(config.hidden_activation ?? config.hidden_act ?? 'silu') as keyof typeof ACTIVATIONS];
    this.fused = architectureOf(config).fusedProjections;
    this.intermediate = config.intermediate_size;
    if (this.fused)
      this.child('gate_up_proj', linearAt(options, `${at}gate_up_proj`, config.hidden_size, 2 * config.intermediate_size, { bias, seed: seed + 5 }));
    else {
      this.child('gate_proj', linearAt(options, `${at}gate_proj`, config.hidden_size, config.intermediate_size, { bias, seed: seed + 5 }));
      this.child('up_proj', linearAt(options, `${at}up_proj`, config.hidden_size, config.intermediate_size, { bias, seed: seed + 6 }));
    }
    this.child('down_proj', linearAt(options, `${at}down_proj`, config.intermediate_size, config.hidden_size, { bias, seed: seed + 7 }));
  }
  forward(x: Tensor): Tensor {
    let gate: Tensor;
    let up: Tensor;
    if (this.fused) {
      const both = this.sub<Linear>('gate_up_proj').forward(x);
      const lead = both.shape.slice(0, -1);
      const n = this.intermediate;
      gate = slice(both, [...lead.map(() => 0), 0], [...lead, n]);
      up = slice(both, [...lead.map(() => 0), n], [...lead, 2 * n]);
    } else {
      gate = this.sub<Linear>('gate_proj').forward(x);
      up = this.sub<Linear>('up_proj').forward(x);
    }
    // SwiGLU and GeGLU (tanh) in one op; exact-erf GELU through the composition.
    const hidden = this.activation === 'gelu' ? mul(gelu(gate, { approximate: 'none' }), up) : gatedActivation(gate, up, this.activation);
    return this.sub<Linear>('down_proj').forward(hidden);
  }
}

/**
 * One pre-norm decoder block: x + attn(norm(x)), then + mlp(norm(·)); with sandwich norms
 * (Gemma 3) each branch's output is normed again before its residual add.
 */
export class DecoderLayer extends Module {
  private readonly sandwich: boolean;
  constructor(config: LlamaConfig, options: LlamaOptions = {}, layerIndex = 0) {
    super();
    const traits = architectureOf(config);
    const eps = config.rms_norm_eps ?? 1e-5;
    const norm = () => new RMSNorm(config.hidden_size, eps, { ...options, offset: traits.normOffset });
    this.sandwich = traits.sandwichNorms;
    this.child('self_attn', new Attention(config, options, layerIndex));
    this.child('mlp', new MLP(config, options, layerIndex));
    this.child('input_layernorm', norm());
    this.child('post_attention_layernorm', norm());
    if (this.sandwich) {
      this.child('pre_feedforward_layernorm', norm());
      this.child('post_feedforward_layernorm', norm());
    }
  }
  forward(x: Tensor, context?: AttentionContext): Tensor {
    const { residual, delta } = this.step(x, null, context);
    return add(residual, delta);
  }

  /**
   * The block with its last residual add left to the caller: `forward(x)` is `residual + delta`.
   * With `pending` (the previous block's delta, not yet added to x) that add is done with this
   * block's first norm, and every residual add with the norm after it, one kernel each where no
   * gradient is recorded (`addRmsNorm`).
   */
  step(x: Tensor, pending: Tensor | null, context?: AttentionContext): { residual: Tensor; delta: Tensor } {
    const norm = (name: string) => this.sub<RMSNorm>(name);
    const first = pending ? norm('input_layernorm').forwardWithResidual(x, pending) : { sum: x, y: norm('input_layernorm').forward(x) };
    const attn = this.sub<Attention>('self_attn').forward(first.y, context);
    const mlp = this.sub<MLP>('mlp');
    if (!this.sandwich) {
      const h = norm('post_attention_layernorm').forwardWithResidual(first.sum, attn);
      return { residual: h.sum, delta: mlp.forward(h.y) };
    }
    const h = norm('pre_feedforward_layernorm').forwardWithResidual(first.sum, norm('post_attention_layernorm').forward(attn));
    return { residual: h.sum, delta: norm('post_feedforward_layernorm').forward(mlp.forward(h.y)) };
  }
}

/** The decoder stack: `embed_tokens`, `layers.N`, `norm`. */
export class LlamaModel extends Module {
  private readonly embedScale: number | null;
  /**
   * Recompute each block's forward pass in backward instead of keeping its intermediates
   * (`checkpoint`): a training step holds one activation per block, for about one more forward
   * pass of compute (mlx-lm's `--grad-checkpoint`). Only while gradients are recorded.
   */
  gradientCheckpointing = false;
  /**
   * While gradients are recorded, keep each block's attention inputs (q, k, v) and recompute its
   * `[B, heads, T, T]` probabilities in backward instead of holding them: one more score product
   * per block for much less memory at long sequences (what PyTorch's SDPA does). Default true;
   * blocks that are checkpointed whole recompute everything anyway.
   */
  recomputeAttention = true;
  /**
   * Run each block's attention as one fused op (`attention`: scores, mask, softmax and the
   * weighted values a block of keys at a time, backward recomputing from each row's log-sum-exp),
   * so no per-head `[B, heads, T, S]` scores are held, forward or backward (the mask, `[T, S]` or
   * one per row, still is). `'auto'` (the default) fuses on GPU backends, where it is as fast as
   * the composed products at 512 tokens and the only way past them at long sequences (their scores
   * outgrow a buffer), and composes on the CPU backend. Gemma 2's logit soft-cap and heads of more
   * than 256 features keep the composition whatever the setting.
   */
  fusedAttention: boolean | 'auto' = 'auto';
  constructor(
    readonly config: LlamaConfig,
    options: LlamaOptions = {},
  ) {
    super();
    const seed = options.seed ?? 0;
    const traits = architectureOf(config);
    this.embedScale = traits.embedScale ? Math.sqrt(config.hidden_size) : null;
    const embedSpec = options.quantized?.('model.embed_tokens');
    this.child(
      'embed_tokens',
      embedSpec
        ? new QuantizedEmbedding(config.vocab_size, config.hidden_size, { ...embedSpec, dtype: options.dtype })
        : new Embedding(config.vocab_size, config.hidden_size, { dtype: options.dtype, seed }),
    );
    this.child(
      'layers',
      new ModuleList(Array.from({ length: config.num_hidden_layers }, (_, i) => new DecoderLayer(config, { ...options, seed: seed + 100 * (i + 1) }, i))),
    );
    this.child('norm', new RMSNorm(config.hidden_size, config.rms_norm_eps ?? 1e-5, { ...options, offset: traits.normOffset }));
  }
  forward(ids: Tensor, options: ForwardOptions = {}): Tensor {
    const embedded = this.sub<Embedding>('embed_tokens').forward(ids);
    let h = this.embedScale === null ? embedded : mul(embedded, this.embedScale);
    const context = new AttentionContext(h, options.cache, options.segments);
    const checkpointing = this.gradientCheckpointing && isGradEnabled() && !options.cache;
    context.recompute = this.recomputeAttention && isGradEnabled() && !options.cache && !checkpointing;
    context.fused = this.fusedAttention === 'auto' ? h.backend.name !== 'cpu' : this.fusedAttention;
    const layers = this.sub<ModuleList<DecoderLayer>>('layers').items;
    // Each block's last residual add goes into the next norm (see DecoderLayer.step), except
    // with checkpointed blocks, whose boundaries are the residual stream itself.
    let pending: Tensor | null = null;
    if (checkpointing) {
      for (const layer of layers) {
        // The context's masks and RoPE tables are made here, outside the blocks' own scopes, so
        // that the recomputation in backward finds them alive.
        const attention = layer.getModule('self_attn') as Attention;
        context.rope(attention.invFreq);
        context.mask(attention.slidingWindow);
      }
      for (const layer of layers) {
        const params = layer.trainableParameters().map(([, p]) => p);
        h = checkpoint((x) => layer.forward(x, context), h, params);
      }
    } else
      for (const layer of layers) {
        const out = layer.step(h, pending, context);
        [h, pending] = [out.residual, out.delta];
      }
    if (options.cache) options.cache.length += context.steps;
    const norm = this.sub<RMSNorm>('norm');
    h = this.lastPositions(h, options);
    return pending ? norm.forwardWithResidual(h, this.lastPositions(pending, options)).y : norm.forward(h);
  }

  /** x `[B, T, D]`, or its last position where only the last logits are wanted. */
  private lastPositions(x: Tensor, options: ForwardOptions): Tensor {
    if (options.logits !== 'last' || x.shape[1] <= 1) return x;
    const [B, T, D] = x.shape;
    return slice(x, [0, T - 1, 0], [B, T, D]);
  }
}

/**
 * A decoder-only causal LM whose parameter names match Hugging Face and MLX checkpoints
 * (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`), so real weights load 1:1: Llama,
 * Mistral, Qwen2, Qwen3, Gemma 3 (text) and Phi-3, by the config's `model_type` (see
 * `ARCHITECTURES`).
 */
export class LlamaForCausalLM extends Module {
  /**
   * `initialize: false` skips transformers' initialization, for a model whose weights are loaded
   * next (`loadModel`): drawing normal values for every parameter of a large model only to
   * overwrite them costs seconds.
   */
  constructor(
    readonly config: LlamaConfig,
    options: LlamaOptions & { initialize?: boolean } = {},
  ) {
    super();
    validateLlamaConfig(config);
    this.child('model', new LlamaModel(config, options));
    if (!config.tie_word_embeddings)
      this.child('lm_head', linearAt(options, 'lm_head', config.hidden_size, config.vocab_size, { seed: (options.seed ?? 0) + 99 }));
    if (options.initialize !== false) this.initializeAsTransformers(config.initializer_range ?? 0.02, options);
  }

  /**
   * A fresh model's weights as transformers' `_init_weights` makes them: Linear and Embedding
   * weights normal(0, initializer_range), biases zero, norms one (Gemma's zero-centred norms: zero).
   * (The layers' own defaults, uniform ±1/√in and a unit-variance embedding, made a fresh
   * 49k-vocabulary model's loss start near 400 instead of ln(vocab).) Loaded weights replace these.
   */
  private initializeAsTransformers(std: number, options: ParamOptions): void {
    let seed = (options.seed ?? 0) * 7919 + 17;
    for (const [, m] of this.namedModules()) {
      if ((!(m instanceof Linear) && !(m instanceof Embedding)) || m instanceof QuantizedLinear || m instanceof QuantizedEmbedding) continue;
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

  /**
   * The mean next-token cross-entropy of int32 ids `[B, T]` against targets `[B, T]` (options as
   * `crossEntropy`), the same number as `crossEntropy(model.forward(ids), targets)` but through
   * `headCrossEntropy`: the `[B·T, vocab]` logits are never held whole, which is most of a small
   * model's training memory. A soft-capped head (Gemma 2) or a biased one takes the plain path.
   */
  loss(ids: Tensor, targets: Tensor, options: CrossEntropyOptions & Pick<ForwardOptions, 'segments'> = {}): Tensor {
    const { segments, ...lossOptions } = options;
    const forward = { segments };
    const head = this.config.tie_word_embeddings ? (this.getModule('model.embed_tokens') as Embedding) : this.sub<Linear>('lm_head');
    // Only a plain weight, float or quantized, can be read as the head: an adapted head (a
    // LoRALinear loaded onto lm_head), a bias or a soft-cap goes through the model's own forward.
    const kind = Object.getPrototypeOf(head);
    const bias = head instanceof Linear && head.bias !== undefined;
    const weight =
      kind === Embedding.prototype || (kind === Linear.prototype && !bias)
        ? head.weight
        : (kind === QuantizedEmbedding.prototype || kind === QuantizedLinear.prototype) && !bias
          ? (head as QuantizedLinear | QuantizedEmbedding).packed
          : null;
    if (this.config.final_logit_softcapping || !weight) return crossEntropy(this.forward(ids, forward), targets, lossOptions);
    return headCrossEntropy(this.sub<LlamaModel>('model').forward(ids, forward), weight, targets, lossOptions);
  }

  /** Whether training steps recompute each block in backward (see `LlamaModel.gradientCheckpointing`). */
  get gradientCheckpointing(): boolean {
    return this.sub<LlamaModel>('model').gradientCheckpointing;
  }
  set gradientCheckpointing(on: boolean) {
    this.sub<LlamaModel>('model').gradientCheckpointing = on;
  }
  /** Whether training steps recompute attention's probabilities in backward (see `LlamaModel.recomputeAttention`). */
  get recomputeAttention(): boolean {
    return this.sub<LlamaModel>('model').recomputeAttention;
  }
  set recomputeAttention(on: boolean) {
    this.sub<LlamaModel>('model').recomputeAttention = on;
  }

  /** Whether attention runs as one fused op (see `LlamaModel.fusedAttention`). */
  get fusedAttention(): boolean | 'auto' {
    return this.sub<LlamaModel>('model').fusedAttention;
  }
  set fusedAttention(on: boolean | 'auto') {
    this.sub<LlamaModel>('model').fusedAttention = on;
  }

  /** Logits `[B, T, vocab]` for int32 token ids `[B, T]` (`[B, 1, vocab]` with `logits: 'last'`). */
  forward(ids: Tensor, options: ForwardOptions = {}): Tensor {
    const h = this.sub<LlamaModel>('model').forward(ids, options);
    const logits = this.config.tie_word_embeddings ? (this.getModule('model.embed_tokens') as Embedding).asLinear(h) : this.sub<Linear>('lm_head').forward(h);
    return softcap(logits, this.config.final_logit_softcapping);
  }
}
