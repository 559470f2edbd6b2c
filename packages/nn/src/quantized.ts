import {
  add,
  checkQuantColumns,
  type DType,
  dequantize,
  gather,
  noGrad,
  packedWords,
  type QuantizedHead,
  type QuantizedWeight,
  type QuantizeOptions,
  type QuantSpec,
  quantizeAsync,
  quantizedMatmul,
  quantSpec,
  reshape,
  type Tensor,
  ValueError,
  zeros,
} from '@metal-lora/tensor';
import { Embedding, Linear } from './layers';
import type { Module } from './module';

/** A quantized layer's parts: packed weight, scales and biases (zeros of the right shapes when absent, for loading into). */
function parts(op: string, rows: number, cols: number, spec: QuantSpec, dtype: DType, given?: QuantizedWeight): QuantizedWeight {
  checkQuantColumns(op, cols, spec);
  const words = packedWords(cols, spec.bits);
  const groups = cols / spec.groupSize;
  if (!given)
    return {
      weight: zeros([rows, words], { dtype: 'int32' }),
      scales: zeros([rows, groups], { dtype }),
      biases: zeros([rows, groups], { dtype }),
    };
  const want = `[${rows}, ${words}], scales and biases [${rows}, ${groups}]`;
  const got = `[${given.weight.shape}], [${given.scales.shape}], [${given.biases.shape}]`;
  if (
    given.weight.shape.join() !== `${rows},${words}` ||
    given.scales.shape.join() !== `${rows},${groups}` ||
    given.biases.shape.join() !== `${rows},${groups}` ||
    given.weight.dtype !== 'int32'
  )
    throw new ValueError(op, `the packed weight does not fit ${rows} × ${cols} at ${spec.bits} bits, groups of ${spec.groupSize}`, want, got);
  return given;
}

export interface QuantizedLayerOptions extends QuantizeOptions {
  /** The float dtype of scales, biases and activations (default float32). */
  dtype?: DType;
  /** The packed weight, scales and biases (`quantize`'s result); zeros to load into when absent. */
  quantized?: QuantizedWeight;
}

/**
 * A Linear layer whose weight is stored as MLX affine-quantized words (`nn.QuantizedLinear`):
 * `weight` int32 `[out, in·bits/32]`, `scales` and `biases` `[out, in/groupSize]`, an optional
 * float `bias`. The forward dequantizes inside the product (`quantizedMatmul`); the packed parts
 * never train (LoRA adapts such a layer: `linearToLoRALayers`).
 */
export class QuantizedLinear extends Linear {
  readonly bits: number;
  readonly groupSize: number;
  constructor(inFeatures: number, outFeatures: number, options: QuantizedLayerOptions & { bias?: boolean; biasTensor?: Tensor } = {}) {
    const spec = quantSpec('QuantizedLinear', options);
    const dtype = options.dtype ?? 'float32';
    const q = parts('QuantizedLinear', outFeatures, inFeatures, spec, dtype, options.quantized);
    super(inFeatures, outFeatures, { weight: q.weight, bias: options.bias, biasTensor: options.biasTensor, dtype });
    this.bits = spec.bits;
    this.groupSize = spec.groupSize;
    this.constant('weight', q.weight);
    this.constant('scales', q.scales);
    this.constant('biases', q.biases);
    if (this.bias) this.bias.requiresGrad = false;
  }
  get scales(): Tensor {
    return this.own('scales')!;
  }
  get biases(): Tensor {
    return this.own('biases')!;
  }
  /** Weight, scales, biases, bits and group size: what `quantizedMatmul`, `dequantize` and `headCrossEntropy` read. */
  get packed(): QuantizedHead {
    return { weight: this.weight, scales: this.scales, biases: this.biases, bits: this.bits, groupSize: this.groupSize };
  }
  override forward(x: Tensor): Tensor {
    const q = this.packed;
    const y = quantizedMatmul(x, q.weight, q.scales, q.biases, q);
    return this.bias ? add(y, this.bias) : y;
  }
  /** The float weight `[out, in]` the packed one stands for (`mx.dequantize`). */
  dequantized(): Tensor {
    const q = this.packed;
    return noGrad(() => dequantize(q.weight, q.scales, q.biases, q));
  }
  /** `linear` quantized (`nn.QuantizedLinear.from_linear`): its weight packed, its bias kept, in its dtype. */
  static async fromLinear(linear: Linear, options: QuantizeOptions = {}): Promise<QuantizedLinear> {
    const spec = quantSpec('QuantizedLinear.fromLinear', options);
    const quantized = await quantizeAsync(linear.weight, spec);
    return new QuantizedLinear(linear.inFeatures, linear.outFeatures, { ...spec, dtype: linear.weight.dtype, quantized, biasTensor: linear.bias });
  }
}

/**
 * An Embedding whose table is MLX affine-quantized (`nn.QuantizedEmbedding`): a lookup
 * dequantizes the rows it gathers, and as a tied output head (`asLinear`) the table is read by
 * `quantizedMatmul`.
 */
export class QuantizedEmbedding extends Embedding {
  readonly bits: number;
  readonly groupSize: number;
  constructor(numEmbeddings: number, dims: number, options: QuantizedLayerOptions = {}) {
    const spec = quantSpec('QuantizedEmbedding', options);
    const q = parts('QuantizedEmbedding', numEmbeddings, dims, spec, options.dtype ?? 'float32', options.quantized);
    super(numEmbeddings, dims, { weight: q.weight });
    this.bits = spec.bits;
    this.groupSize = spec.groupSize;
    this.constant('weight', q.weight);
    this.constant('scales', q.scales);
    this.constant('biases', q.biases);
  }
  get scales(): Tensor {
    return this.own('scales')!;
  }
  get biases(): Tensor {
    return this.own('biases')!;
  }
  /** Weight, scales, biases, bits and group size: what `quantizedMatmul`, `dequantize` and `headCrossEntropy` read. */
  get packed(): QuantizedHead {
    return { weight: this.weight, scales: this.scales, biases: this.biases, bits: this.bits, groupSize: this.groupSize };
  }
  override forward(ids: Tensor): Tensor {
    const flat = reshape(ids, [-1]);
    const q = this.packed;
    const rows = dequantize(gather(q.weight, flat), gather(q.scales, flat), gather(q.biases, flat), q);
    return reshape(rows, [...ids.shape, this.dims]);
  }
  override asLinear(x: Tensor): Tensor {
    const q = this.packed;
    return quantizedMatmul(x, q.weight, q.scales, q.biases, q);
  }
  /** The float table `[vocab, dims]`. */
  dequantized(): Tensor {
    const q = this.packed;
    return noGrad(() => dequantize(q.weight, q.scales, q.biases, q));
  }
}

/**
 * Quantizes a model's Linear and Embedding layers in place as mlx-lm's `quantize` does (MLX affine
 * mode): every plain Linear and Embedding whose input dimension the group size divides (LoRA layers
 * are left as they are: quantize before adapting). On a Llama-style model the config records
 * `quantization: { group_size, bits, mode: 'affine' }`, so a saved model loads quantized. Returns
 * the quantized module paths. Works on every backend (the weights are read back once).
 */
export async function quantizeModel(model: Module, options: QuantizeOptions = {}): Promise<string[]> {
  const spec = quantSpec('quantizeModel', options);
  const done: string[] = [];
  for (const [path, m] of model.namedModules()) {
    if (path === '') continue;
    const exact = Object.getPrototypeOf(m);
    if (exact === Linear.prototype) {
      const linear = m as Linear;
      if (linear.inFeatures % spec.groupSize !== 0) continue;
      const q = await QuantizedLinear.fromLinear(linear, spec);
      linear.weight.dispose();
      model.setModule(path, q);
      done.push(path);
    } else if (exact === Embedding.prototype) {
      const embedding = m as Embedding;
      if (embedding.dims % spec.groupSize !== 0) continue;
      const quantized = await quantizeAsync(embedding.weight, spec);
      const q = new QuantizedEmbedding(embedding.numEmbeddings, embedding.dims, { ...spec, dtype: embedding.weight.dtype, quantized });
      embedding.weight.dispose();
      model.setModule(path, q);
      done.push(path);
    }
  }
  const config = (model as { config?: { quantization?: unknown } }).config;
  if (config && done.length) config.quantization = { group_size: spec.groupSize, bits: spec.bits, mode: 'affine' };
  return done;
}

/**
 * Replaces every quantized layer of `model` by a float one of its dequantized weights, frozen, and
 * drops the quantization from a Llama-style model's config (`mlx_lm.convert --dequantize`).
 * Returns the number of layers replaced.
 */
export function dequantizeModel(model: Module): number {
  let count = 0;
  for (const [path, m] of model.namedModules()) {
    if (m instanceof QuantizedLinear) model.setModule(path, new Linear(m.inFeatures, m.outFeatures, { weight: m.dequantized(), biasTensor: m.bias }).freeze());
    else if (m instanceof QuantizedEmbedding) model.setModule(path, new Embedding(m.numEmbeddings, m.dims, { weight: m.dequantized() }).freeze());
    else continue;
    count++;
  }
  const config = (model as { config?: { quantization?: unknown; quantization_config?: unknown } }).config;
  if (config) {
    delete config.quantization;
    delete config.quantization_config;
  }
  return count;
}
