import { type DType, type OpOutputs, registerKernel, type TensorRef, ValueError } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from '../backend';
import { recordLoraDual } from '../gemm/lora-dual';
import { gemmDevice, gemmOutput, recordGemm } from '../gemm/record';
import { selectLoraBackward, selectLoraForward, selectQLoraForward } from '../gemm/select';
import type { GemmDevice, GemmOperands, Product } from '../gemm/types';
import dropoutSource from '../wgsl/dropout.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform } from './common';
import { fill } from './elementwise';
import { gemmQuant, type PackedWeight, packedWeight, recordQuantizedProduct } from './quantized';

/** A copy of `x` ([n] elements) with the LoRA dropout mask applied and kept values scaled by 1/(1-p). */
export function dropoutData(backend: WebGPUBackend, dtype: DType, x: GPUBuffer, n: number, p: number, seed: number): GpuData {
  const t = typeOf(backend, dtype, 'dropout');
  const y = backend.allocate(dtype, n, 'dropout');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('dropout', dropoutSource, { ENABLE: enableFor(t), T: t });
  const threshold = Math.ceil(p * 2 ** 24);
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [x, y.buffer],
      uniform: uniform([n, gridX, seed >>> 0, threshold, { f32: 1 / (1 - p) }]),
      workgroups,
      label: 'dropout',
    });
  return y;
}

/** The device description the selector reads for a layer stored as `dtype`. */
function loraDevice(backend: WebGPUBackend, dtype: DType): GemmDevice {
  return gemmDevice(backend, typeOf(backend, dtype, 'matmul'));
}

/** Records one product of the layer on the config the selector gave it (operands without batch strides: batch 1). */
function record(backend: WebGPUBackend, dtype: DType, p: Product, ops: Omit<GemmOperands, 'aBatchStride' | 'bBatchStride'>): void {
  recordGemm(backend, p.shape, { ...ops, aBatchStride: 0, bBatchStride: 0, dtype }, p.config);
}

/**
 * loraLinear forward: T = dropout(x)·Aᵀ (kept for backward), then y = x·Wᵀ + bias + s·T·Bᵀ, as
 * the selector's plan says (`selectLoraForward`): T riding along the pass over W at decode, the
 * LoRA term fused into the base GEMM, or products accumulating into the same output buffer.
 */
function loraLinearKernel({ inputs, attrs, backend }: Args<'loraLinear'>): OpOutputs['loraLinear'] {
  const [x, w, a, b] = inputs;
  const bias = attrs.hasBias ? inputs[4] : undefined;
  const dtype = x.dtype;
  const [M, inF] = x.shape;
  const outF = w.shape[0];
  const r = a.shape[0];
  if (attrs.quant) {
    const [scales, biases] = inputs.slice(attrs.hasBias ? 5 : 4);
    return quantLoraForward(backend, attrs, x, packedWeight(w, scales, biases, attrs.quant), buf(a), buf(b), bias && buf(bias), { M, inF, outF, r });
  }
  const plan = selectLoraForward({ M, inF, outF, r, dtype, dropout: attrs.dropout }, loraDevice(backend, dtype), backend.overrides);
  const biasBuf = attrs.hasBias && bias ? buf(bias) : undefined;
  if (plan.kind === 'along') {
    const t = gemmOutput(backend, dtype, 1, M, r);
    const y = gemmOutput(backend, dtype, 1, M, outF);
    record(backend, dtype, plan.y, { a: buf(x), b: buf(w), c: y.buffer, bias: biasBuf, alpha: 1, beta: 0, concatN: { b: buf(a), c: t.buffer, rows: r } });
    record(backend, dtype, plan.term, { a: t.buffer, b: buf(b), c: y.buffer, alpha: attrs.scale, beta: 1 });
    return { y: out(y, [M, outF], dtype), t: out(t, [M, r], dtype) };
  }
  const xd = attrs.dropout > 0 ? dropoutData(backend, dtype, buf(x), M * inF, attrs.dropout, attrs.seed) : null;
  const t = gemmOutput(backend, dtype, 1, M, r);
  record(backend, dtype, plan.t, { a: xd?.buffer ?? buf(x), b: buf(a), c: t.buffer, alpha: 1, beta: 0 });
  if (xd) backend.release(xd.buffer);
  const y = gemmOutput(backend, dtype, 1, M, outF);
  if (plan.kind === 'fused') {
    record(backend, dtype, plan.y, {
      a: buf(x),
      b: buf(w),
      c: y.buffer,
      bias: biasBuf,
      alpha: 1,
      beta: 0,
      lora: { la: t.buffer, lb: buf(b), r, transB: true, scale: attrs.scale },
    });
  } else {
    record(backend, dtype, plan.y, { a: buf(x), b: buf(w), c: y.buffer, bias: biasBuf, alpha: 1, beta: 0 });
    record(backend, dtype, plan.term, { a: t.buffer, b: buf(b), c: y.buffer, alpha: attrs.scale, beta: 1 });
  }
  return { y: out(y, [M, outF], dtype), t: out(t, [M, r], dtype) };
}

/**
 * loraLinear over a quantized base (QLoRA), as {@link selectQLoraForward} plans it: T =
 * dropout(x)·Aᵀ, then y = x·Wᵀ + bias + s·T·Bᵀ in one GEMM (W dequantized as its tiles load, the
 * LoRA term its prologue), or y = x·Wᵀ (qgemv at decode) and the term and bias added onto it.
 */
function quantLoraForward(
  backend: WebGPUBackend,
  attrs: Args<'loraLinear'>['attrs'],
  x: TensorRef,
  w: PackedWeight,
  a: GPUBuffer,
  b: GPUBuffer,
  bias: GPUBuffer | undefined,
  dims: { M: number; inF: number; outF: number; r: number },
): OpOutputs['loraLinear'] {
  const { M, inF, outF, r } = dims;
  const dtype = x.dtype;
  const plan = selectQLoraForward({ M, inF, outF, r, dtype }, loraDevice(backend, dtype), w, backend.overrides);
  const xd = attrs.dropout > 0 ? dropoutData(backend, dtype, buf(x), M * inF, attrs.dropout, attrs.seed) : null;
  const t = gemmOutput(backend, dtype, 1, M, r);
  record(backend, dtype, plan.t, { a: xd?.buffer ?? buf(x), b: a, c: t.buffer, alpha: 1, beta: 0 });
  if (xd) backend.release(xd.buffer);
  const y = gemmOutput(backend, dtype, 1, M, outF);
  if (plan.kind === 'fused')
    record(backend, dtype, plan.y, {
      a: buf(x),
      b: w.weight,
      c: y.buffer,
      bias,
      alpha: 1,
      beta: 0,
      quant: gemmQuant(w),
      lora: { la: t.buffer, lb: b, r, transB: true, scale: attrs.scale },
    });
  else {
    recordQuantizedProduct(backend, dtype, buf(x), w, { M, N: outF, K: inF, transpose: true }, y.buffer, 0, plan.y.config);
    record(backend, dtype, plan.term, { a: t.buffer, b, c: y.buffer, bias, alpha: attrs.scale, beta: 1 });
  }
  return { y: out(y, [M, outF], dtype), t: out(t, [M, r], dtype) };
}

/** The gradients of loraLinear, each requested one on the selector's products (`selectLoraBackward`; see the op's CPU reference). */
function loraLinearBackwardKernel({ inputs, attrs, backend }: Args<'loraLinearBackward'>): OpOutputs['loraLinearBackward'] {
  const [dy, x, w, a, b, t, ...quantParts] = inputs;
  if (attrs.quant && attrs.needWeight)
    throw new ValueError('loraLinearBackward', 'a quantized base has no gradient', 'needWeight false with quant', 'needWeight true');
  const dtype = dy.dtype;
  const [M, outF] = dy.shape;
  const inF = x.shape[1];
  const r = a.shape[0];
  const { scale: s, dropout: p } = attrs;
  // QLoRA: dy·W reads the packed words (the vec4 kernel with U·A as its prologue where it applies).
  const packed = attrs.quant ? packedWeight(w, quantParts[0], quantParts[1], attrs.quant) : null;
  const plan = selectLoraBackward({ M, inF, outF, r, dtype }, attrs, loraDevice(backend, dtype), backend.overrides, attrs.quant);
  const outputs: OpOutputs['loraLinearBackward'] = {};
  // U = s·dy·B [M, r] (for dx and dA) and dB = s·dyᵀ·T [out, r], from one read of dy where the dual kernel applies.
  let dB: GpuData | null = null;
  // U is made only where dx or dA needs it.
  let u: GpuData | null = null;
  if (plan.u === 'dual') ({ u, dB } = recordLoraDual(backend, buf(dy), buf(b), buf(t), M, outF, r, s));
  else if (plan.u) {
    u = gemmOutput(backend, dtype, 1, M, r);
    record(backend, dtype, plan.u, { a: buf(dy), b: buf(b), c: u.buffer, alpha: s, beta: 0 });
  }
  if (plan.dx && 'fused' in plan.dx) {
    // dx = dy·W + mask⊙(U·A)/(1-p) in one GEMM, U·A the prologue (the mask's code is a shader variant of its own: only dropout pays for it).
    const dx = gemmOutput(backend, dtype, 1, M, inF);
    record(backend, dtype, plan.dx.fused, {
      a: buf(dy),
      b: buf(w),
      c: dx.buffer,
      alpha: 1,
      beta: 0,
      lora: { la: u!.buffer, lb: buf(a), r, transB: false, scale: 1, dropout: p > 0 ? { p, seed: attrs.seed } : undefined },
      ...(packed ? { quant: gemmQuant(packed) } : {}),
    });
    outputs.dx = out(dx, [M, inF], dtype);
  } else if (plan.dx) {
    // dx = dropout(U·A) + dy·W: the LoRA term first, then the base product accumulates onto it.
    let dx = gemmOutput(backend, dtype, 1, M, inF);
    record(backend, dtype, plan.dx.term, { a: u!.buffer, b: buf(a), c: dx.buffer, alpha: 1, beta: 0 });
    if (p > 0) {
      const masked = dropoutData(backend, dtype, dx.buffer, M * inF, p, attrs.seed);
      backend.release(dx.buffer);
      dx = masked;
    }
    if (packed) recordQuantizedProduct(backend, dtype, buf(dy), packed, { M, N: inF, K: outF, transpose: false }, dx.buffer, 1, plan.dx.base.config);
    else record(backend, dtype, plan.dx.base, { a: buf(dy), b: buf(w), c: dx.buffer, alpha: 1, beta: 1 });
    outputs.dx = out(dx, [M, inF], dtype);
  }
  if (plan.dA) {
    const xd = p > 0 ? dropoutData(backend, dtype, buf(x), M * inF, p, attrs.seed) : null;
    const dA = gemmOutput(backend, dtype, 1, r, inF);
    if ('pair' in plan.dA) {
      // dA = Uᵀ·x and dBᵀ = s·Tᵀ·dy in one dispatch; the reduction writes dB transposed.
      dB = gemmOutput(backend, dtype, 1, outF, r);
      record(backend, dtype, plan.dA.pair, {
        a: u!.buffer,
        b: xd?.buffer ?? buf(x),
        c: dA.buffer,
        alpha: 1,
        beta: 0,
        pair: { a: buf(t), b: buf(dy), cT: dB.buffer, alpha: s },
      });
    } else record(backend, dtype, plan.dA, { a: u!.buffer, b: xd?.buffer ?? buf(x), c: dA.buffer, alpha: 1, beta: 0 });
    if (xd) backend.release(xd.buffer);
    outputs.dA = out(dA, [r, inF], dtype);
  }
  if (u) backend.release(u.buffer);
  if (attrs.needB) {
    if (plan.dB) {
      dB = gemmOutput(backend, dtype, 1, outF, r);
      record(backend, dtype, plan.dB, { a: buf(dy), b: buf(t), c: dB.buffer, alpha: s, beta: 0 });
    }
    outputs.dB = out(dB!, [outF, r], dtype);
  }
  if (plan.dWeight) {
    const dW = gemmOutput(backend, dtype, 1, outF, inF);
    record(backend, dtype, plan.dWeight, { a: buf(dy), b: buf(x), c: dW.buffer, alpha: 1, beta: 0 });
    outputs.dWeight = out(dW, [outF, inF], dtype);
  }
  if (plan.dBias) {
    const ones = fill(backend, dtype, M, 1, 'ones');
    const dBias = gemmOutput(backend, dtype, 1, 1, outF);
    record(backend, dtype, plan.dBias, { a: ones.buffer, b: buf(dy), c: dBias.buffer, alpha: 1, beta: 0 });
    backend.release(ones.buffer);
    outputs.dBias = out(dBias, [outF], dtype);
  }
  return outputs;
}

export function registerLoraKernels(): void {
  registerKernel('webgpu', 'loraLinear', loraLinearKernel);
  registerKernel('webgpu', 'loraLinearBackward', loraLinearBackwardKernel);
}
