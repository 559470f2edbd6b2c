import { add, type DType, loraLinear, matmul, noGrad, rand, type Tensor, ValueError, zeros } from '@metal-lora/tensor';
import { Linear } from './layers';
import type { Module } from './module';
import { QuantizedLinear } from './quantized';

export interface LoRAOptions {
  rank?: number;
  /** scale = alpha / rank (PEFT); ignored when `scale` is given. */
  alpha?: number;
  /** The LoRA branch's multiplier directly (MLX). */
  scale?: number;
  /** Dropout on the LoRA branch's input while training. */
  dropout?: number;
  seed?: number;
}

function resolveScale(op: string, options: LoRAOptions, rank: number): number {
  const scale = options.scale ?? (options.alpha ?? 16) / rank;
  if (!Number.isFinite(scale)) throw new ValueError(op, 'scale must be finite', 'a number (scale, or alpha / rank)', String(scale));
  return scale;
}

/**
 * A Linear layer with a low-rank adapter: `y = x·Wᵀ + b + scale·(dropout(x)·Aᵀ)·Bᵀ`, computed by
 * the `loraLinear` op (the fused kernels on webgpu). The base `weight` and `bias` are frozen;
 * `loraA` `[rank, in]` starts uniform(±1/√in) and `loraB` `[out, rank]` at zero, so a new adapter
 * leaves the layer's output unchanged (as PEFT and MLX initialise them).
 *
 * @example
 * const layer = new LoRALinear({ inFeatures: 4096, outFeatures: 4096, rank: 8, alpha: 16, dropout: 0.05 });
 */
export class LoRALinear extends Linear {
  readonly rank: number;
  scale: number;
  dropout: number;
  /**
   * While false the layer computes its base alone (`x·Wᵀ + b`): a reply with and without the
   * adapter from one model (see `setAdapterEnabled`). The adapter's weights are kept as they are.
   */
  enabled = true;

  constructor(
    options: LoRAOptions & {
      inFeatures: number;
      outFeatures: number;
      useBias?: boolean;
      weight?: Tensor;
      biasTensor?: Tensor;
      /** The adapter's dtype (default: the weight's). */
      dtype?: DType;
    },
  ) {
    super(options.inFeatures, options.outFeatures, { bias: options.useBias, weight: options.weight, biasTensor: options.biasTensor, seed: options.seed });
    const rank = options.rank ?? 8;
    if (!Number.isInteger(rank) || rank < 1) throw new ValueError('LoRALinear', 'rank must be a positive integer', 'e.g. 8', String(rank));
    this.rank = rank;
    this.scale = resolveScale('LoRALinear', options, rank);
    this.dropout = options.dropout ?? 0;
    if (!(this.dropout >= 0 && this.dropout < 1)) throw new ValueError('LoRALinear', 'dropout out of range', '[0, 1)', String(this.dropout));
    const dtype = options.dtype ?? this.weight.dtype;
    const backend = this.weight.backend;
    const bound = 1 / Math.sqrt(options.inFeatures);
    this.freeze(['weight', ...(this.bias ? ['bias'] : [])]);
    this.param('loraA', rand([rank, options.inFeatures], { low: -bound, high: bound, seed: options.seed, dtype, backend }));
    this.param('loraB', zeros([options.outFeatures, rank], { dtype, backend }));
  }

  /** Wraps an existing Linear (sharing its weight and bias tensors); a QuantizedLinear becomes a {@link QuantizedLoRALinear}. */
  static fromBase(linear: Linear, options: LoRAOptions = {}): LoRALinear {
    if (linear instanceof QuantizedLinear) return new QuantizedLoRALinear(linear, options);
    return new LoRALinear({ ...options, inFeatures: linear.inFeatures, outFeatures: linear.outFeatures, weight: linear.weight, biasTensor: linear.bias });
  }

  get loraA(): Tensor {
    return this.own('loraA')!;
  }
  get loraB(): Tensor {
    return this.own('loraB')!;
  }

  override forward(x: Tensor): Tensor {
    if (!this.enabled) return super.forward(x);
    return loraLinear(x, this.weight, this.loraA, this.loraB, { scale: this.scale, bias: this.bias, dropout: this.training ? this.dropout : 0 });
  }

  /** The base weight `[out, in]` as floats (a quantized base: dequantized, a new tensor). */
  protected denseWeight(): Tensor {
    return this.weight;
  }

  /** `W + scale·B·A` (computed in f32, cast to W's float dtype) as a plain Linear. */
  merged(): Linear {
    return noGrad(() => {
      const dense = this.denseWeight();
      const delta = matmul(this.loraB.cast('float32'), this.loraA.cast('float32'));
      const w = add(dense.cast('float32'), delta.mul(this.scale)).cast(dense.dtype);
      delta.dispose();
      if (dense !== this.weight) dense.dispose();
      const linear = new Linear(this.inFeatures, this.outFeatures, { weight: w, biasTensor: this.bias?.share() });
      linear.freeze();
      return linear;
    });
  }
}

/**
 * LoRA over a quantized base (QLoRA, as mlx-lm trains on 4-bit models): `y = x·Wᵀ + b +
 * scale·(dropout(x)·Aᵀ)·Bᵀ` as one `loraLinear` op over W's packed words (on webgpu the LoRA term
 * rides in the quantized GEMM, forward and backward, as it does over a float base); the packed
 * weight, scales and biases (and bias) are frozen, the adapter is in the scales' float dtype.
 * `merged()` gives a float Linear of the dequantized weight plus the adapter.
 */
export class QuantizedLoRALinear extends LoRALinear {
  /** The quantized layer it adapts (its packed parts are this layer's `weight`, `scales` and `biases`). */
  readonly base: QuantizedLinear;
  constructor(base: QuantizedLinear, options: LoRAOptions = {}) {
    super({ ...options, inFeatures: base.inFeatures, outFeatures: base.outFeatures, weight: base.weight, biasTensor: base.bias, dtype: base.scales.dtype });
    this.base = base;
    this.constant('weight', base.weight);
    this.constant('scales', base.scales);
    this.constant('biases', base.biases);
  }
  override forward(x: Tensor): Tensor {
    if (!this.enabled) return this.base.forward(x);
    const q = this.base.packed;
    return loraLinear(x, q.weight, this.loraA, this.loraB, {
      scale: this.scale,
      bias: this.bias,
      dropout: this.training ? this.dropout : 0,
      quant: q,
    });
  }
  protected override denseWeight(): Tensor {
    return this.base.dequantized();
  }
}

/**
 * Turns every LoRA layer of `model` on or off (see `LoRALinear.enabled`); returns how many it set.
 *
 * @example
 * setAdapterEnabled(model, false); // the base model's reply
 * setAdapterEnabled(model, true);
 */
export function setAdapterEnabled(model: Module, enabled: boolean): number {
  const layers = model.namedModules().filter(([, m]) => m instanceof LoRALinear);
  for (const [, m] of layers) (m as LoRALinear).enabled = enabled;
  return layers.length;
}

/** Blocks of a Llama-style model: `model.model.layers`, `model.layers` or the model itself if it is a list. */
function blocks(model: Module): { prefix: string; count: number } {
  for (const prefix of ['model.layers', 'layers']) {
    const list = model.getModule(prefix);
    if (list) return { prefix, count: list.namedModules().filter(([n]) => /^\d+$/.test(n)).length };
  }
  throw new ValueError('linearToLoRALayers', 'the model has no list of blocks', "a 'model.layers' or 'layers' module", 'neither');
}

/**
 * mlx-lm's `linear_to_lora_layers`: replaces Linear layers of the last `numLayers` blocks
 * (`-1` or more than there are: all) by LoRALinear. `keys` are paths relative to a block
 * (`self_attn.q_proj`); without keys every Linear in those blocks is adapted. Unlike mlx-lm, keys
 * that match nothing are an error. The model is frozen first, so only the adapters train.
 * Returns the dotted paths of the new layers.
 */
export function linearToLoRALayers(model: Module, options: LoRAOptions & { numLayers?: number; keys?: string[] } = {}): string[] {
  const op = 'linearToLoRALayers';
  const { prefix, count } = blocks(model);
  const n = options.numLayers === undefined || options.numLayers < 0 ? count : Math.min(options.numLayers, count);
  model.freeze();
  const converted: string[] = [];
  const used = new Set<string>();
  for (let i = count - n; i < count; i++) {
    const block = model.getModule(`${prefix}.${i}`)!;
    for (const [relative, module] of block.namedModules()) {
      if (!(module instanceof Linear) || module instanceof LoRALinear || relative === '') continue;
      if (options.keys && !options.keys.includes(relative)) continue;
      used.add(relative);
      const path = `${prefix}.${i}.${relative}`;
      model.setModule(path, LoRALinear.fromBase(module, { ...options, seed: options.seed === undefined ? undefined : options.seed + converted.length }));
      converted.push(path);
    }
  }
  const unknown = (options.keys ?? []).filter((k) => !used.has(k));
  if (unknown.length) {
    const sample = model
      .getModule(`${prefix}.${count - 1}`)!
      .namedModules()
      .filter(([, m]) => m instanceof Linear)
      .map(([p]) => p);
    throw new ValueError(
      op,
      `keys match no Linear layer in the selected blocks: ${unknown.join(', ')}`,
      `block-relative paths such as ${sample.slice(0, 4).join(', ')}`,
      unknown.join(', '),
    );
  }
  return converted;
}

/**
 * Folds every LoRALinear into a plain Linear with `W + scale·B·A` (the delta in f32, cast to the
 * weight's dtype). Returns `unmerge()`, which puts the LoRA layers back as they were.
 */
export function mergeWeights(model: Module): { merged: string[]; unmerge: () => void } {
  const lora = model.namedModules().filter(([, m]) => m instanceof LoRALinear) as [string, LoRALinear][];
  for (const [path, layer] of lora) model.setModule(path, layer.merged());
  return {
    merged: lora.map(([p]) => p),
    unmerge: () => {
      for (const [path, layer] of lora) model.setModule(path, layer);
    },
  };
}
