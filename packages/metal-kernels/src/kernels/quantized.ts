import { type DType, type KernelOutput, type OpOutputs, type QuantSpec, registerKernel, type TensorRef, ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { gemmDevice, recordGemm } from '../gemm/record';
import { gemmDType, quantConfig } from '../gemm/select';
import type { GemmConfig, GemmOperands, GemmShape } from '../gemm/types';
import dequantizeSource from '../wgsl/dequantize.wgsl';
import qgemvSource from '../wgsl/qgemv.wgsl';
import quantizeSource from '../wgsl/quantize.wgsl';
import { type Args, buf, enableFor, generatedShader, grid1d, out, shader, typeOf, uniform } from './common';
import { type QgemvBodyForm, qgemvBody } from './qgemv-body';

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

/** `quantize`: MLX affine quantization on the GPU, one thread per group (quantize.wgsl). */
function quantizeKernel({ inputs: [w], attrs, backend }: Args<'quantize'>): OpOutputs['quantize'] {
  const t = typeOf(backend, w.dtype, 'quantize');
  const [rows, cols] = w.shape;
  const perRow = cols / attrs.groupSize;
  const groups = rows * perRow;
  const words = (cols * attrs.bits) / 32;
  const packed = backend.allocate('int32', rows * words, 'quantize packed');
  const scales = backend.allocate(w.dtype, groups, 'quantize scales');
  const biases = backend.allocate(w.dtype, groups, 'quantize biases');
  const blocks = Math.ceil(groups / 64);
  const gridX = Math.min(blocks, 65535);
  const nan = t === 'f16' ? 'bitcast<vec2<f16>>(0x7e00u | (g & 0u)).x' : 'bitcast<f32>(0x7fc00000u | (g & 0u))';
  const { key, source } = shader('quantize', quantizeSource, {
    ENABLE: enableFor(t),
    T: t,
    BITS: String(attrs.bits),
    GROUP: String(attrs.groupSize),
    NAN: nan,
  });
  if (groups > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(w), packed.buffer, scales.buffer, biases.buffer],
      uniform: uniform([groups, perRow, cols, gridX]),
      workgroups: [gridX, Math.ceil(blocks / gridX), 1],
      label: `quantize q${attrs.bits}`,
    });
  return { weight: out(packed, [rows, words], 'int32'), scales: out(scales, [rows, perRow], w.dtype), biases: out(biases, [rows, perRow], w.dtype) };
}

/**
 * qgemv.wgsl's shape for x·Wᵀ with M ≤ 16 rows of type `t`: lanes per team, rows of W per team,
 * its section ONCE or GEN's body (forced by `backend.overrides.qgemv`), and words per chunk (4,
 * read as one vec4, where a row's words come in fours and four words stay in one group; `bits`
 * words at 3, 5 and 6 bits, which only GEN's body unpacks).
 */
function qgemvConfig(
  backend: WebGPUBackend,
  t: string,
  N: number,
  M: number,
  bits: number,
  groupSize: number,
  words: number,
): { lanes: number; rows: number; vw: number; once: boolean; body: QgemvBodyForm; stage: number } {
  // 3, 5 and 6 bits: chunks of `bits` words (32 values, some across two words), unpacked by GEN's f32 body only.
  const whole = 32 % bits === 0;
  const vw = !whole ? bits : words % 4 === 0 && (4 * 32) / bits <= groupSize ? 4 : 1;
  const forced = backend.overrides.qgemv;
  if (forced) {
    if (![8, 16, 32].includes(forced.lanes) || ![1, 2, 4, 8].includes(forced.rows))
      throw new ValueError(
        'quantizedMatmul',
        'overrides.qgemv names a team shape qgemv.wgsl does not have',
        'lanes 8, 16 or 32 and rows 1, 2, 4 or 8',
        `lanes ${forced.lanes}, rows ${forced.rows}`,
      );
    if (forced.once !== undefined && typeof forced.once !== 'boolean')
      throw new ValueError('quantizedMatmul', 'overrides.qgemv.once is not a flag', 'true, false or absent', `${typeof forced.once} ${String(forced.once)}`);
    const body = forced.body ?? (whole ? 'loop' : 'unroll');
    if (!['loop', 'unroll'].includes(body) || (body !== 'loop' && forced.once) || (!whole && (body !== 'unroll' || forced.once)))
      throw new ValueError(
        'quantizedMatmul',
        'overrides.qgemv.body names a body this product cannot take',
        "'loop', or 'unroll' without once; 'unroll' alone at 3, 5 and 6 bits",
        `${String(body)}${forced.once ? ', once' : ''} at ${bits} bits`,
      );
    const most = forced.stage ? stageChunks(backend, t, M, bits, vw, words, forced.lanes) : 0;
    const stage = typeof forced.stage === 'number' ? forced.stage : most;
    if (forced.stage !== undefined && forced.stage !== false && (body === 'loop' || most === 0 || stage % forced.lanes !== 0 || stage <= 0 || stage > most))
      throw new ValueError(
        'quantizedMatmul',
        'overrides.qgemv.stage names a tile of x this product cannot take',
        `GEN's body ('unroll') and true, or chunks a tile that are a multiple of the ${forced.lanes} lanes up to ${most}`,
        `${String(forced.stage)} with ${body}, ${M} rows of ${t} x`,
      );
    return { lanes: forced.lanes, rows: forced.rows, vw, once: forced.once ?? false, body, stage };
  }
  // f16 with 4..16 rows of x: each value unpacked once for all rows, on teams of 8 lanes walking
  // two rows of W (the H200 sweep, `qmm-bench --rows 2,4,8,16 --explore`: at 4, 8 and 16 rows
  // 1.1–1.6× the form below for the LM head and a gate projection, for both; at 2 rows faster for
  // the head only, and with f32 x, whose loads double, faster for the head only at 4 and 16 rows
  // on four rows of W and slower for the gate projection).
  if (t === 'f16' && M >= 4 && whole) return { lanes: 8, rows: 2, vw, once: true, body: 'loop', stage: 0 };
  // The H200 sweep (`qmm-bench --explore`; RESULTS.md, "Quantized weights"): more rows of W per
  // team reuse each loaded x (four from 8192 rows, two from 1024; at most two with 9..16 rows of
  // x, for registers), and a wide W at M = 1 (an LM head) runs fastest: at 8 bits on teams of
  // 32 with GEN's body (1.11× with f32 x, 1.17× with f16); at 4 bits on teams of 16 walking 8 rows
  // with GEN's body and x staged in workgroup memory (1.40× with f32 x, 1.07× with f16); at 2 bits
  // (not timed with GEN) on teams of 8.
  const rows = Math.min(N >= 8192 ? 4 : N >= 1024 ? 2 : 1, M > 8 ? 2 : 4);
  const head = M === 1 && N >= 65536;
  if (head && bits === 8) return { lanes: 32, rows, vw, once: false, body: 'unroll', stage: 0 };
  if (head && bits === 4 && vw === 4) {
    const stage = stageChunks(backend, t, M, bits, vw, words, 16);
    if (stage > 0) return { lanes: 16, rows: 8, vw, once: false, body: 'unroll', stage };
  }
  return { lanes: head ? 8 : 32, rows, vw, once: false, body: whole ? 'loop' : 'unroll', stage: 0 };
}

/** Workgroup bytes qgemv.wgsl's STAGE takes for x's tile at most. */
const STAGE_BYTES = 16384;

/**
 * qgemv.wgsl's CT: chunks (`vw` words each) a lane's team walks per tile of x staged in workgroup
 * memory (section STAGE), a multiple of `lanes`, the tiles of a row of `words` as even as that
 * allows; 0 where x's tile, in {@link STAGE_BYTES} and beside the reduction's memory, has not one
 * chunk a lane.
 */
function stageChunks(backend: WebGPUBackend, t: string, M: number, bits: number, vw: number, words: number, lanes: number): number {
  const vals = (vw * 32) / bits;
  const chunks = words / vw;
  const reduction = (256 / lanes) * 8 * (lanes + 1) * 4;
  const bytes = Math.min(STAGE_BYTES, backend.device.limits.maxComputeWorkgroupStorageSize - reduction);
  // A tile's rows are CT + 1 vec4 long.
  const most = Math.floor((Math.floor(bytes / (M * (vals / 4) * (t === 'f16' ? 8 : 16))) - 1) / lanes) * lanes;
  if (most <= 0) return 0;
  const tiles = Math.ceil(chunks / most);
  return Math.min(most, Math.ceil(chunks / tiles / lanes) * lanes);
}

/**
 * Rows of x up to which qgemv.wgsl takes 3, 5 and 6 bits: its GEN body is written out per row of
 * x (the unpacking repeated for each), so a few rows only; more take the tiled GEMM's QUANT.
 */
const QGEMV_STRADDLING_ROWS = 4;

/** A packed weight's GPU parts and packing, as the products read them. */
export interface PackedWeight {
  weight: GPUBuffer;
  scales: GPUBuffer;
  biases: GPUBuffer;
  bits: number;
  groupSize: number;
  /** Packed words per row of W. */
  words: number;
}

/** The packed weight of kernel inputs `weight`, `scales` and `biases` packed as `spec` says. */
export function packedWeight(weight: TensorRef, scales: TensorRef, biases: TensorRef, spec: QuantSpec): PackedWeight {
  return { weight: buf(weight), scales: buf(scales), biases: buf(biases), bits: spec.bits, groupSize: spec.groupSize, words: weight.shape[1] };
}

/** The GEMM operands' `quant` for a packed weight (its words go in as B). */
export function gemmQuant(w: PackedWeight): NonNullable<GemmOperands['quant']> {
  return { bits: w.bits, groupSize: w.groupSize, scales: w.scales, biases: w.biases };
}

/**
 * C = x·Wᵀ (`transpose`) or x·W over a packed W, written into `c` (β = 0) or added to it (β = 1):
 * up to sixteen rows at 2, 4 or 8 bits, and up to four at 3, 5 or 6, stream W's words once
 * (qgemv.wgsl, β = 0 only); otherwise a
 * GEMM stages W's tiles dequantized (the QUANT sections of gemm-sgmat.wgsl, gemm-vec4.wgsl and
 * gemm-tiled.wgsl) on `config`, or on {@link quantConfig}'s choice where none is given.
 */
export function recordQuantizedProduct(
  backend: WebGPUBackend,
  dtype: DType,
  x: GPUBuffer,
  w: PackedWeight,
  dims: { M: number; N: number; K: number; transpose: boolean },
  c: GPUBuffer,
  beta: 0 | 1,
  config?: GemmConfig,
): void {
  const { M, N, K, transpose } = dims;
  if (M === 0 || N === 0) return;
  const t = typeOf(backend, dtype, 'quantizedMatmul');
  if (transpose && beta === 0 && M <= (32 % w.bits === 0 ? 16 : QGEMV_STRADDLING_ROWS)) {
    // Decode: W streamed once as packed words, TEAMS·ROWS rows of W per workgroup.
    const { lanes, rows: rowsPerTeam, vw, once, body, stage } = qgemvConfig(backend, t, N, M, w.bits, w.groupSize, w.words);
    const groups = Math.ceil(N / ((256 / lanes) * rowsPerTeam));
    const params = {
      T: t,
      BITS: w.bits,
      GROUP: w.groupSize,
      MR: M,
      ROWS: rowsPerTeam,
      LANES: lanes,
      VW: vw,
      ONCE: once ? 1 : 0,
      BODY: body,
      CT: stage,
    };
    const { key, source } = generatedShader('qgemv', qgemvSource, params, () => ({
      ENABLE: enableFor(t),
      T: t,
      BITS: String(w.bits),
      GROUP: String(w.groupSize),
      MR: String(M),
      ROWS: String(rowsPerTeam),
      LANES: String(lanes),
      VW: String(vw),
      VEC: vw === 4 ? '1' : '0',
      ONCE: once ? '1' : '0',
      GEN: body === 'loop' ? '0' : '1',
      STAGE: stage ? '1' : '0',
      ...(stage ? { CT: String(stage) } : {}),
      ...(body === 'loop' ? {} : { BODY: qgemvBody({ bits: w.bits, vw, rows: rowsPerTeam, mr: M, staged: stage > 0 }) }),
    }));
    backend.dispatch({
      key,
      source,
      buffers: [x, w.weight, w.scales, w.biases, c],
      uniform: uniform([N, K, w.words, Math.min(groups, 65535)]),
      workgroups: [Math.min(groups, 65535), Math.ceil(groups / 65535), 1],
      label: `qgemv q${w.bits} m${M}${once ? ' once' : ''}${body === 'loop' ? '' : ` ${body}`}${stage ? ' stage' : ''}`,
    });
    return;
  }
  const ops = { a: x, b: w.weight, c, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta, quant: gemmQuant(w), dtype };
  const shape: GemmShape = { M, N, K, batch: 1, transA: false, transB: transpose, dtype: gemmDType(dtype) };
  recordGemm(backend, shape, ops, config ?? quantConfig(shape, gemmDevice(backend, t), w, backend.overrides));
}

/** `quantizedMatmul`: {@link recordQuantizedProduct} into a new output. */
function quantizedMatmulKernel({ inputs: [x, weight, scales, biases], attrs, backend }: Args<'quantizedMatmul'>): KernelOutput {
  const rows = weight.shape[0];
  const cols = scales.shape[1] * attrs.groupSize;
  const [K, N] = attrs.transpose ? [cols, rows] : [rows, cols];
  const M = x.shape.reduce((a, b) => a * b, 1) / K;
  const y = backend.allocate(x.dtype, M * N, 'quantizedMatmul out');
  recordQuantizedProduct(backend, x.dtype, buf(x), packedWeight(weight, scales, biases, attrs), { M, N, K, transpose: attrs.transpose }, y.buffer, 0);
  return out(y, [...x.shape.slice(0, -1), N], x.dtype);
}

export function registerQuantizedKernels(): void {
  registerKernel<'dequantize', WebGPUBackend>('webgpu', 'dequantize', dequantizeKernel);
  registerKernel<'quantize', WebGPUBackend>('webgpu', 'quantize', quantizeKernel);
  registerKernel<'quantizedMatmul', WebGPUBackend>('webgpu', 'quantizedMatmul', quantizedMatmulKernel);
}
