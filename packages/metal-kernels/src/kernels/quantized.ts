import { type KernelOutput, registerKernel } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import dequantizeSource from '../wgsl/dequantize.wgsl';
import qgemvSource from '../wgsl/qgemv.wgsl';
import qmmSource from '../wgsl/qmm.wgsl';
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

/** Register blocking of qmm.wgsl: one row block for the few rows of decode, square tiles above. */
function qmmTiles(m: number): { tm: number; tn: number; tk: number; wgx: number; wgy: number } {
  return m <= 8 ? { tm: 1, tn: 2, tk: 32, wgx: 32, wgy: 8 } : { tm: 4, tn: 4, tk: 16, wgx: 16, wgy: 16 };
}

/**
 * `quantizedMatmul`: x·Wᵀ for up to eight rows at 2, 4 or 8 bits streams W's words once (qgemv.wgsl);
 * otherwise W's tiles are dequantized as they are staged (qmm.wgsl), x·Wᵀ or x·W.
 */
function quantizedMatmulKernel({ inputs: [x, weight, scales, biases], attrs, backend }: Args<'quantizedMatmul'>): KernelOutput {
  const t = typeOf(backend, x.dtype, 'quantizedMatmul');
  const rows = weight.shape[0];
  const cols = scales.shape[1] * attrs.groupSize;
  const [K, N] = attrs.transpose ? [cols, rows] : [rows, cols];
  const M = x.shape.reduce((a, b) => a * b, 1) / K;
  const y = backend.allocate(x.dtype, M * N, 'quantizedMatmul out');
  if (M > 0 && N > 0 && attrs.transpose && M <= 8 && attrs.bits % 2 === 0 && attrs.bits !== 6) {
    // Decode: W streamed once as packed words (qgemv.wgsl).
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
      uniform: uniform([N, K, weight.shape[1]]),
      workgroups: [Math.ceil(N / 8), 1, 1],
      label: `qgemv q${attrs.bits} m${M}`,
    });
    return out(y, [...x.shape.slice(0, -1), N], x.dtype);
  }
  const cfg = qmmTiles(M);
  const { key, source } = shader('qmm', qmmSource, {
    ENABLE: enableFor(t),
    T: t,
    BITS: String(attrs.bits),
    GROUP: String(attrs.groupSize),
    TM: String(cfg.tm),
    TN: String(cfg.tn),
    TK: String(cfg.tk),
    WGX: String(cfg.wgx),
    WGY: String(cfg.wgy),
  });
  if (M > 0 && N > 0)
    backend.dispatch({
      key,
      source,
      constants: { TRANS: attrs.transpose ? 1 : 0 },
      buffers: [buf(x), buf(weight), buf(scales), buf(biases), y.buffer],
      uniform: uniform([M, N, K, weight.shape[1], cols]),
      workgroups: [Math.ceil(N / (cfg.wgx * cfg.tn)), Math.ceil(M / (cfg.wgy * cfg.tm)), 1],
      label: `qmm q${attrs.bits}${attrs.transpose ? 't' : ''} ${cfg.wgy * cfg.tm}x${cfg.wgx * cfg.tn}`,
    });
  return out(y, [...x.shape.slice(0, -1), N], x.dtype);
}

export function registerQuantizedKernels(): void {
  registerKernel<'dequantize', WebGPUBackend>('webgpu', 'dequantize', dequantizeKernel);
  registerKernel<'quantizedMatmul', WebGPUBackend>('webgpu', 'quantizedMatmul', quantizedMatmulKernel);
}
