/**
 * Records one product: checks that its config can run it, sets up the split-K workspace, and
 * calls the config's recorder. The config comes from the selector (`select.ts`), chosen once per
 * product by the caller or here when none is given.
 */
import { type DType, ValueError } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from '../backend';
import { typeOf } from '../kernels/common';
import { recordGemv } from './gemv';
import { recordGemvCols } from './gemv-cols';
import { recordGemvRows } from './gemv-rows';
import { chooseGemm, subgroupMatrixChoice } from './select';
import { recordSgmat } from './sgmat';
import { recordSplitKReduce } from './splitk';
import { recordTiled } from './tiled';
import {
  fixedSubgroupSize,
  type GemmConfig,
  type GemmDevice,
  type GemmOperands,
  type GemmShape,
  type GemmTarget,
  gemvColsStream,
  gemvRowsStream,
  kSplit,
  type SgmatConfig,
  vec4Aligned,
} from './types';
import { recordVec4 } from './vec4';

/**
 * The subgroup-matrix configuration big products of WGSL type `t` take on `backend`, or null:
 * the adapter's choice where `backend.subgroupMatrix` is true, or is `'auto'` and the choice
 * prefetches (the form measured faster than the portable kernels).
 */
export function activeSgmat(backend: WebGPUBackend, t: string | undefined): SgmatConfig | null {
  if (backend.subgroupMatrix === false || (t !== 'f32' && t !== 'f16')) return null;
  const choice = subgroupMatrixChoice(backend.context.report, t === 'f16' ? 'float16' : 'float32');
  return choice && (backend.subgroupMatrix === true || choice.prefetch) ? choice : null;
}

/**
 * Which GEMM path big products of `dtype` take on `backend`: the subgroup-matrix configuration's
 * name (e.g. `sgmat-128x128/prefetch f16 16x16x16`), or `'portable'`. For reports and the CLI.
 */
export function subgroupMatrixPath(backend: WebGPUBackend, dtype: 'float32' | 'float16'): string {
  return activeSgmat(backend, dtype === 'float16' ? 'f16' : 'f32')?.name ?? 'portable';
}

/**
 * What the selector needs of `backend`'s device; given the operands' WGSL type, also the
 * subgroup-matrix configuration they take (`activeSgmat`).
 */
export function gemmDevice(backend: WebGPUBackend, t?: string): GemmDevice {
  const { limits } = backend.device;
  const sgmat = activeSgmat(backend, t);
  return {
    maxWorkgroupStorage: limits.maxComputeWorkgroupStorageSize,
    maxInvocations: limits.maxComputeInvocationsPerWorkgroup,
    sgmat,
    subgroupSize: fixedSubgroupSize(backend.context.report),
  };
}

/** A fresh output buffer for C. */
export function gemmOutput(backend: WebGPUBackend, dtype: DType, batch: number, M: number, N: number): GpuData {
  return backend.allocate(dtype, batch * M * N, 'matmul out');
}

/**
 * Records `C = α·op(A)·op(B) + β·C + bias` for one shape on `config`, or on the config the
 * selector (or the backend's override) picks when none is given. Returns the config it ran.
 */
export function recordGemm(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands & { dtype: DType }, config?: GemmConfig): GemmConfig {
  const { M, N, K, batch } = shape;
  const t = typeOf(backend, ops.dtype, 'matmul');
  const cfg = config ?? chooseGemm(shape, gemmDevice(backend, t), backend.overrides);
  if (M === 0 || N === 0 || batch === 0) return cfg;
  const loraOnVec4 =
    cfg.kind === 'vec4' &&
    (cfg.bm ?? 128) === 128 &&
    (cfg.bn ?? 128) === 128 &&
    (cfg.wgx ?? 16) === 16 &&
    (cfg.wgy ?? 16) === 16 &&
    batch === 1 &&
    ops.lora !== undefined &&
    ops.lora.r % 4 === 0;
  // The decode form: gemv-rows streaming W adds s·T·Bᵀ in its epilogue (B [N, r], no dropout mask).
  const loraOnGemv =
    cfg.kind === 'gemv-rows' && ops.lora !== undefined && ops.lora.transB && !(ops.lora.dropout && ops.lora.dropout.p > 0) && gemvRowsStream(shape) === 'b';
  if (ops.lora && !loraOnVec4 && !loraOnGemv) {
    throw new ValueError(
      'matmul',
      'the fused LoRA term needs the 128×128 vec4 kernel (batch 1, rank divisible by 4) or gemv-rows streaming B (B [N, r], no dropout)',
      'vec4-128x128 or gemv-rows over W',
      `${cfg.name}, batch ${batch}, r ${ops.lora.r}`,
    );
  }
  if (
    ops.quant &&
    ((cfg.kind !== 'tiled' && cfg.kind !== 'vec4' && cfg.kind !== 'sgmat') || batch !== 1 || ops.pair || ops.concatN || (ops.lora && cfg.kind !== 'vec4'))
  ) {
    throw new ValueError(
      'matmul',
      'a quantized B needs the tiled, vec4 or subgroup-matrix kernel, batch 1, and no pair or appended rows (a LoRA term: the vec4 kernel)',
      'a tiled, vec4 or sgmat config',
      `${cfg.name}, batch ${batch}${ops.lora ? ', a LoRA term' : ''}`,
    );
  }
  if (cfg.kind === 'vec4' && !vec4Aligned(shape)) {
    throw new ValueError('matmul', `${cfg.name} needs operands whose contiguous dims are multiples of 4`, 'an aligned shape', JSON.stringify(shape));
  }
  if (cfg.kind === 'gemv-rows' || cfg.kind === 'gemv-cols') {
    if (!(cfg.kind === 'gemv-rows' ? gemvRowsStream(shape) : gemvColsStream(shape))) {
      throw new ValueError(
        'matmul',
        `${cfg.name} does not apply to this shape or layout`,
        cfg.kind === 'gemv-rows' ? 'A·Bᵀ, batch 1, K % 4 = 0' : 'batch 1, a K-major operand whose other dim is a multiple of 4',
        JSON.stringify(shape),
      );
    }
  }
  if (cfg.kind === 'sgmat') {
    if (t !== 'f32' && t !== 'f16') throw new ValueError('matmul', `${cfg.name} takes float operands`, 'float32 or float16', ops.dtype);
    recordSgmat(backend, shape, ops, t, cfg);
    return cfg;
  }
  if (cfg.kind === 'gemv' && M > cfg.mr) throw new ValueError('matmul', `gemv${cfg.mr} handles at most ${cfg.mr} rows`, `M <= ${cfg.mr}`, String(M));
  const { kChunk, realSplits } = kSplit(K, cfg.splits);
  // The portable gemv writes C itself only unsplit, with no bias and β = 0 (a decode step's
  // attention products); otherwise its partial sums go through the reduction.
  const gemvDirect = cfg.kind === 'gemv' && realSplits === 1 && !ops.bias && ops.beta === 0;
  const useWorkspace = (cfg.kind === 'gemv' && !gemvDirect) || realSplits > 1;
  const { pair, concatN } = ops;
  if (pair && (cfg.kind !== 'vec4' || batch !== 1 || realSplits < 2 || ops.lora || ops.bias || ops.beta !== 0)) {
    throw new ValueError(
      'matmul',
      'a pair of products needs the vec4 kernel with K split, batch 1, and no bias, β or LoRA term',
      'a vec4 config splitting K',
      `${cfg.name}, batch ${batch}, ${realSplits} split(s)`,
    );
  }
  const concatGemv = cfg.kind === 'gemv-rows' && gemvRowsStream(shape) === 'b' && N % cfg.rows === 0;
  if (concatN && (!((cfg.kind === 'vec4' && realSplits >= 2) || concatGemv) || !shape.transB || batch !== 1 || ops.lora || pair || ops.beta !== 0)) {
    throw new ValueError(
      'matmul',
      'rows appended to B need the vec4 kernel with K split or gemv-rows streaming B, B transposed, batch 1, and no β, LoRA term or pair',
      'a vec4 config splitting K, or gemv-rows whose rows per lane group divide N',
      `${cfg.name}, batch ${batch}, ${realSplits} split(s)`,
    );
  }
  // Batch entries of the dispatch: a pair runs as two. Columns of the dispatch: B's rows, then B2's.
  const entries = pair ? 2 : batch;
  // What the dispatch computes besides the plain product, in its labels.
  const role = pair ? ' pair' : concatN ? '+concat' : '';
  const NT = N + (concatN?.rows ?? 0);
  const ws = useWorkspace ? backend.acquire(entries * realSplits * M * NT * 4, 'gemm split-K workspace') : null;
  const target: GemmTarget = { out: ws ?? ops.c, split: ws !== null, kChunk, splits: realSplits };
  try {
    if (cfg.kind === 'gemv-rows' || cfg.kind === 'gemv-cols') {
      const gemvOps = {
        a: ops.a,
        b: ops.b,
        bias: ops.bias,
        c: target.out,
        alpha: ops.alpha,
        beta: ops.beta,
        split: target.split,
        lora: ops.lora ? { t: ops.lora.la, b: ops.lora.lb, r: ops.lora.r, scale: ops.lora.scale } : undefined,
        concat: concatN ? { w: concatN.b, c: concatN.c, rows: concatN.rows } : undefined,
        t: t === 'f16' ? ('f16' as const) : ('f32' as const),
      };
      if (cfg.kind === 'gemv-rows') recordGemvRows(backend, shape, gemvOps, cfg, kChunk, realSplits);
      else recordGemvCols(backend, shape, gemvOps, cfg, kChunk, realSplits);
    } else if (cfg.kind === 'gemv') recordGemv(backend, shape, ops, cfg, t, target);
    else if (cfg.kind === 'vec4') recordVec4(backend, shape, ops, cfg, t, target, `${cfg.name}${role}`);
    else recordTiled(backend, shape, ops, cfg, t, target);
  } catch (error) {
    // A refused config records nothing: its workspace goes back to the pool.
    if (ws) backend.release(ws);
    throw error;
  }
  if (ws) {
    recordSplitKReduce(backend, shape, ops, t, ws, realSplits, `${cfg.name}${role} reduce`);
    backend.release(ws);
  }
  return cfg;
}
