import { type KernelOutput, registerKernel } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { recordGemm } from '../gemm/record';
import { type GemmConfig, type GemmShape, vec4Aligned } from '../gemm/types';
import dequantizeSource from '../wgsl/dequantize.wgsl';
import qgemvSource from '../wgsl/qgemv.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform } from './common';

// MLX affine-quantized weights (packed int32 words, a scale and bias per group), read as u32.

/** `dequantize`: the float matrix, one thread per element (dequantize.wgsl). */
function dequantizeKernel({ inputs: [weight, scales, biases], attrs, backend }: Args<'dequantize'>): KernelOutput {
  const t = typeOf(backend, scales.dtype, 'dequantize');
  const rows = weight.shape[0];
  const cols = scales.shape[1] * attrs.groupSize;
  const n = rows * cols;
  const w = backend.allocate(scales.dtype, n, 'dequantize out');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('dequantize', dequantizeSource, { ENABLE: enableFor(t), T: t, BITS: String(attrs.bits), GROUP: String(attrs.groupSize) });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(weight), buf(scales), buf(biases), w.buffer],
      uniform: uniform([n, cols, weight.shape[1], gridX]),
      workgroups,
      label: `dequantize q${attrs.bits}`,
    });
  return out(w, [rows, cols], scales.dtype);
}

/**
 * The kernel for a quantized B: gemm-vec4's 128×128 tiles where the product is large and aligned
 * (K, and N for dy·W, multiples of 4: every MLX group size makes K one), else gemm-tiled, one
 * 8-row block for the few rows of decode or 64×64 tiles.
 */
function quantConfig(shape: GemmShape): GemmConfig {
  if (shape.M >= 64 && vec4Aligned(shape)) return { kind: 'vec4', name: 'qmm-vec4-128x128', splits: 1 };
  return shape.M <= 8
    ? { kind: 'tiled', name: 'qmm-8x64', tm: 1, tn: 2, tk: 32, wgx: 32, wgy: 8, splits: 1 }
    : { kind: 'tiled', name: 'qmm-64x64', tm: 4, tn: 4, tk: 16, wgx: 16, wgy: 16, splits: 1 };
}

/**
 * `quantizedMatmul`: x·Wᵀ for up to sixteen rows at 2, 4 or 8 bits streams W's words once
 * (qgemv.wgsl); otherwise a GEMM stages W's tiles dequantized (the QUANT sections of gemm-vec4.wgsl
 * and gemm-tiled.wgsl).
 */
function quantizedMatmulKernel({ inputs: [x, weight, scales, biases], attrs, backend }: Args<'quantizedMatmul'>): KernelOutput {
  const t = typeOf(backend, x.dtype, 'quantizedMatmul');
  const rows = weight.shape[0];
  const cols = scales.shape[1] * attrs.groupSize;
  const [K, N] = attrs.transpose ? [cols, rows] : [rows, cols];
  const M = x.shape.reduce((a, b) => a * b, 1) / K;
  const y = backend.allocate(x.dtype, M * N, 'quantizedMatmul out');
  const result = out(y, [...x.shape.slice(0, -1), N], x.dtype);
  if (M === 0 || N === 0) return result;
  if (attrs.transpose && M <= 16 && attrs.bits % 2 === 0 && attrs.bits !== 6) {
    // Decode: W streamed once as packed words, eight rows of W per workgroup.
    const groups = Math.ceil(N / 8);
    const { key, source } = shader('qgemv', qgemvSource, {
      ENABLE: enableFor(t),
      T: t,
      BITS: String(attrs.bits),
      GROUP: String(attrs.groupSize),
      MR: String(M),
    });
    backend.dispatch({
      key,
      source,
      buffers: [buf(x), buf(weight), buf(scales), buf(biases), y.buffer],
      uniform: uniform([N, K, weight.shape[1], Math.min(groups, 65535)]),
      workgroups: [Math.min(groups, 65535), Math.ceil(groups / 65535), 1],
      label: `qgemv q${attrs.bits} m${M}`,
    });
    return result;
  }
  const quant = { bits: attrs.bits, groupSize: attrs.groupSize, scales: buf(scales), biases: buf(biases) };
  const ops = { a: buf(x), b: buf(weight), c: y.buffer, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, quant, dtype: x.dtype };
  const shape: GemmShape = { M, N, K, batch: 1, transA: false, transB: attrs.transpose, dtype: x.dtype === 'float16' ? 'float16' : 'float32' };
  recordGemm(backend, shape, ops, quantConfig(shape));
  return result;
}

export function registerQuantizedKernels(): void {
  registerKernel<'dequantize', WebGPUBackend>('webgpu', 'dequantize', dequantizeKernel);
  registerKernel<'quantizedMatmul', WebGPUBackend>('webgpu', 'quantizedMatmul', quantizedMatmulKernel);
}
