import {
  add,
  addRmsNorm,
  rmsNorm,
  cast,
  type DType,
  div,
  gather,
  greater,
  matmul,
  mean,
  mul,
  noGrad,
  ones,
  rand,
  randn,
  reshape,
  sqrt,
  sub,
  type Tensor,
  ValueError,
  zeros,
} from '@metal-lora/tensor';
import { Module } from './module';

/** Creation options shared by the layers: dtype and backend of the parameters. */
export interface ParamOptions {
  dtype?: DType;
  seed?: number;
}

function uniform(shape: number[], bound: number, options: ParamOptions): Tensor {
  return rand(shape, { low: -bound, high: bound, seed: options.seed, dtype: options.dtype });
}

/** y = x·Wᵀ + b, with weight `[out, in]` (PyTorch / MLX layout) and x `[..., in]`. */
export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;
  constructor(inFeatures: number, outFeatures: number, options: ParamOptions & { bias?: boolean; weight?: Tensor; biasTensor?: Tensor } = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    const bound = 1 / Math.sqrt(inFeatures);
    this.param('weight', options.weight ?? uniform([outFeatures, inFeatures], bound, options));
    if (options.bias || options.biasTensor) this.param('bias', options.biasTensor ?? uniform([outFeatures], bound, options));
  }
  get weight(): Tensor {
    return this.own('weight')!;
  }
  get bias(): Tensor | undefined {
    return this.own('bias');
  }
  forward(x: Tensor): Tensor {
    const lead = x.shape.slice(0, -1);
    const y = matmul(reshape(x, [-1, this.inFeatures]), this.weight, { transposeB: true });
    const withBias = this.bias ? add(y, this.bias) : y;
    return reshape(withBias, [...lead, this.outFeatures]);
  }
}

/** A lookup table `[vocab, dim]` indexed by int32 token ids. */
export class Embedding extends Module {
  constructor(
    readonly numEmbeddings: number,
    readonly dims: number,
    options: ParamOptions & { weight?: Tensor } = {},
  ) {
    super();
    this.param('weight', options.weight ?? randn([numEmbeddings, dims], { seed: options.seed, dtype: options.dtype, std: 1 }));
  }
  /** The table `[vocab, dim]`. */
  get weight(): Tensor {
    return this.own('weight')!;
  }
  forward(ids: Tensor): Tensor {
    return gather(this.own('weight')!, ids);
  }
  /** Logits from hidden states with the table as a linear layer (tied output head). */
  asLinear(x: Tensor): Tensor {
    const lead = x.shape.slice(0, -1);
    return reshape(matmul(reshape(x, [-1, this.dims]), this.own('weight')!, { transposeB: true }), [...lead, this.numEmbeddings]);
  }
}

/**
 * x / sqrt(mean(x²) + eps) · weight over the last axis (Llama's norm); with `offset`, · (1 + weight)
 * as Gemma stores its norm weights (zero-centred, and zero in a fresh model).
 */
export class RMSNorm extends Module {
  readonly offset: boolean;
  constructor(
    readonly dims: number,
    readonly eps = 1e-5,
    options: ParamOptions & { offset?: boolean } = {},
  ) {
    super();
    this.offset = options.offset ?? false;
    this.param('weight', (this.offset ? zeros : ones)([dims], { dtype: options.dtype }));
  }
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.own('weight')!, { eps: this.eps, offset: this.offset });
  }
  /** `x + residual` and its norm, in one kernel where no gradient is recorded (`addRmsNorm`). */
  forwardWithResidual(x: Tensor, residual: Tensor): { sum: Tensor; y: Tensor } {
    return addRmsNorm(x, residual, this.own('weight')!, { eps: this.eps, offset: this.offset });
  }
}

/** (x - mean) / sqrt(var + eps) · weight + bias over the last axis. */
export class LayerNorm extends Module {
  constructor(
    readonly dims: number,
    readonly eps = 1e-5,
    options: ParamOptions & { affine?: boolean } = {},
  ) {
    super();
    if (options.affine ?? true) {
      this.param('weight', ones([dims], { dtype: options.dtype }));
      this.param('bias', zeros([dims], { dtype: options.dtype }));
    }
  }
  forward(x: Tensor): Tensor {
    const mu = mean(x, -1, true);
    const centered = sub(x, mu);
    const variance = mean(mul(centered, centered), -1, true);
    const normed = div(centered, sqrt(add(variance, this.eps)));
    const weight = this.own('weight');
    const bias = this.own('bias');
    return weight && bias ? add(mul(normed, weight), bias) : normed;
  }
}

/** Zeroes elements with probability p while training (kept ones scaled by 1/(1-p)). */
/** Inverted dropout: each element kept with probability 1 − p and scaled by 1 / (1 − p); x itself when p is 0. */
export function dropout(x: Tensor, p: number): Tensor {
  if (p === 0) return x;
  const keep = noGrad(() => cast(greater(rand([...x.shape], { backend: x.backend, dtype: x.dtype }), p), x.dtype));
  return mul(x, mul(keep, 1 / (1 - p)));
}

export class Dropout extends Module {
  constructor(readonly p = 0.5) {
    super();
    if (!(p >= 0 && p < 1)) throw new ValueError('Dropout', 'probability out of range', '[0, 1)', String(p));
  }
  forward(x: Tensor): Tensor {
    return this.training ? dropout(x, this.p) : x;
  }
}
