import { type DType, type KernelOutput, registerKernel } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from '../backend';
import {
  concatConfig,
  type GemmConfig,
  type GemmShape,
  gemmDevice,
  gemmOutput,
  gemvChoice,
  gemvRowBucket,
  recordGemm,
  splitVec4Config,
  VEC4_128,
  withSplits,
} from '../gemm';
import dropoutSource from '../wgsl/dropout.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform } from './common';
import { fill } from './elementwise';
import { loraDualApplies, recordLoraDual } from './lora-dual';

const gemmType = (dtype: DType) => (dtype === 'float16' ? 'float16' : 'float32');

/**
 * The 128×128 tile that carries the LoRA term is walked row-major: raster groups, which made the
 * plain dy·W faster, made dx with the LoRA prologue slower (RESULTS.md, "raster order").
 */
const LORA_TILE = VEC4_128;

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

export type LoraPlan = 'fused' | 'composed';

let forcedPlan: LoraPlan | null = null;

/** Forces the plan where it applies (benchmarks compare both); `null` restores {@link loraPlan}'s choice. */
export function forceLoraPlan(plan: LoraPlan | null): void {
  forcedPlan = plan;
}

/**
 * How loraLinear runs on the GPU, a pure function of the shape (table-tested). float32 and
 * float16 (storage only: the kernels compute and accumulate in f32) take the same plans.
 * - `fused`, M > 16: the low-rank product enters the base GEMM as a prologue of the vec4 kernel
 *   (forward: y = x·Wᵀ + s·T·Bᵀ + bias in one pass over y; backward: U and dB from one read of dy
 *   for f32 and r ≤ 8, and dx = dy·W + mask⊙(U·A) likewise, the mask only with dropout). Needs
 *   in, out, rank divisible by 4.
 * - `fused`, M ≤ 16 (decode): the forward's gemv-rows pass over W adds s·T·Bᵀ in its epilogue;
 *   needs a shape gemv-rows can stream (in % 4 = 0, in and out ≥ 64; {@link gemvChoice}).
 *   Without dropout T = x·Aᵀ rides along that pass and s·T·Bᵀ is added by a small pass after it.
 * - `composed`: separate GEMMs accumulating into the same output buffer (odd sizes), still
 *   without an [M, out] intermediate.
 */
export function loraPlan(M: number, inF: number, outF: number, r: number, dtype: DType): LoraPlan {
  const fusable =
    (dtype === 'float32' || dtype === 'float16') &&
    (M > 16
      ? inF % 4 === 0 && outF % 4 === 0 && r % 4 === 0
      : gemvChoice({ M, N: outF, K: inF, batch: 1, transA: false, transB: true, dtype })?.kind === 'gemv-rows');
  if (forcedPlan) return forcedPlan === 'fused' && !fusable ? 'composed' : forcedPlan;
  return fusable ? 'fused' : 'composed';
}

/**
 * loraLinear forward: T = dropout(x)·Aᵀ (kept for backward), then y = x·Wᵀ + bias + s·T·Bᵀ,
 * fused into one GEMM where the plan allows, else two GEMMs into the same output buffer.
 */
function loraLinearKernel({ inputs, attrs, backend }: Args): KernelOutput[] {
  const [x, w, a, b, bias] = inputs;
  const dtype = x.dtype;
  const [M, inF] = x.shape;
  const outF = w.shape[0];
  const r = a.shape[0];
  // y = x·Wᵀ (K = in), and the LoRA term s·T·Bᵀ (K = r) where it is a product of its own.
  const shape = { M, N: outF, K: inF, batch: 1, transA: false, transB: true, dtype: gemmType(dtype) } as const;
  const termShape: GemmShape = { ...shape, K: r };
  const biasBuf = attrs.hasBias ? buf(bias) : undefined;
  const fused = loraPlan(M, inF, outF, r, dtype) === 'fused';
  const decodeAlong = M <= 16 && attrs.dropout === 0 && fused;
  // Decode without dropout: T = x·Aᵀ rides along the pass over W (A's rows streamed after W's:
  // one pass for y = x·Wᵀ + bias and T), then y += s·T·Bᵀ in a small pass over B. The pass is
  // the selector's gemv-rows (where it splits K, its reduction writes y and T).
  const along = decodeAlong ? concatConfig(shape, gemmDevice(backend)) : null;
  if (along) {
    const t = gemmOutput(backend, dtype, 1, M, r);
    const y = gemmOutput(backend, dtype, 1, M, outF);
    recordGemm(
      backend,
      shape,
      {
        a: buf(x),
        b: buf(w),
        c: y.buffer,
        bias: biasBuf,
        aBatchStride: 0,
        bBatchStride: 0,
        alpha: 1,
        beta: 0,
        dtype,
        concatN: { b: buf(a), c: t.buffer, rows: r },
      },
      along,
    );
    const term: GemmConfig | undefined =
      r % 4 === 0 ? { kind: 'gemv-rows', name: 'gemv-rows/8 lanes', lanes: 8, rows: 1, mr: gemvRowBucket(M), unroll: 1, splits: 1 } : undefined;
    recordGemm(backend, termShape, { a: t.buffer, b: buf(b), c: y.buffer, aBatchStride: 0, bBatchStride: 0, alpha: attrs.scale, beta: 1, dtype }, term);
    return [out(y, [M, outF], dtype), out(t, [M, r], dtype)];
  }
  const xd = attrs.dropout > 0 ? dropoutData(backend, dtype, buf(x), M * inF, attrs.dropout, attrs.seed) : null;
  const t = gemmOutput(backend, dtype, 1, M, r);
  recordGemm(
    backend,
    { M, N: r, K: inF, batch: 1, transA: false, transB: true, dtype: gemmType(dtype) },
    { a: xd?.buffer ?? buf(x), b: buf(a), c: t.buffer, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, dtype },
  );
  if (xd) backend.release(xd.buffer);
  const y = gemmOutput(backend, dtype, 1, M, outF);
  if (fused) {
    // M > 16: the vec4 kernel's prologue; decode: gemv-rows with the LoRA epilogue (the plan
    // checked that gemvChoice picks it; named here so a forced GEMM config cannot displace it).
    recordGemm(
      backend,
      shape,
      {
        a: buf(x),
        b: buf(w),
        c: y.buffer,
        bias: biasBuf,
        aBatchStride: 0,
        bBatchStride: 0,
        alpha: 1,
        beta: 0,
        dtype,
        lora: { la: t.buffer, lb: buf(b), r, transB: true, scale: attrs.scale },
      },
      M > 16 ? LORA_TILE : gemvChoice(shape, gemmDevice(backend))!,
    );
    return [out(y, [M, outF], dtype), out(t, [M, r], dtype)];
  }
  recordGemm(backend, shape, { a: buf(x), b: buf(w), c: y.buffer, bias: biasBuf, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, dtype });
  recordGemm(backend, termShape, { a: t.buffer, b: buf(b), c: y.buffer, aBatchStride: 0, bBatchStride: 0, alpha: attrs.scale, beta: 1, dtype });
  return [out(y, [M, outF], dtype), out(t, [M, r], dtype)];
}

/** The gradients of loraLinear, each requested one with GEMMs (see the op's CPU reference). */
function loraLinearBackwardKernel({ inputs, attrs, backend }: Args): KernelOutput[] {
  const [dy, x, w, a, b, t] = inputs;
  const dtype = dy.dtype;
  const [M, outF] = dy.shape;
  const inF = x.shape[1];
  const r = a.shape[0];
  const s: number = attrs.scale;
  const p: number = attrs.dropout;
  const gemm = (
    shape: { M: number; N: number; K: number; transA: boolean; transB: boolean },
    ops: { a: GPUBuffer; b: GPUBuffer; c: GPUBuffer; alpha: number; beta: number },
  ) => recordGemm(backend, { ...shape, batch: 1, dtype: gemmType(dtype) }, { ...ops, aBatchStride: 0, bBatchStride: 0, dtype });
  const outputs: KernelOutput[] = [];
  const plan = loraPlan(M, inF, outF, r, dtype);
  // U = s·dy·B [M, r] (for dx and dA) and dB = s·dyᵀ·T [out, r]: from one read of dy where the
  // dual kernel applies, else as two GEMMs (B as stored: the selector's rank-shaped tiles take it).
  const needU = attrs.needX || attrs.needA;
  let dB: GpuData | null = null;
  let u: GpuData;
  // The dual kernel is used up to r = 8: above it the two GEMMs on rank-sized tiles are faster
  // (RESULTS.md, "one read of dy").
  if (needU && attrs.needB && plan === 'fused' && r <= 8 && loraDualApplies(M, outF, r, dtype)) {
    ({ u, dB } = recordLoraDual(backend, buf(dy), buf(b), buf(t), M, outF, r, s));
  } else {
    u = gemmOutput(backend, dtype, 1, M, r);
    if (needU) gemm({ M, N: r, K: outF, transA: false, transB: false }, { a: buf(dy), b: buf(b), c: u.buffer, alpha: s, beta: 0 });
  }
  if (attrs.needX && plan === 'fused' && M > 16) {
    // dx = dy·W + mask⊙(U·A)/(1-p) in one GEMM: U·A is the prologue (masked in registers with
    // dropout), so no [M, in] intermediate exists, and it is faster than U·A written into dx with
    // dy·W accumulated on top, which also reads dx back (RESULTS.md, session 4). The mask's code
    // is a shader variant of its own: only dropout pays for it.
    const dx = gemmOutput(backend, dtype, 1, M, inF);
    recordGemm(
      backend,
      { M, N: inF, K: outF, batch: 1, transA: false, transB: false },
      {
        a: buf(dy),
        b: buf(w),
        c: dx.buffer,
        aBatchStride: 0,
        bBatchStride: 0,
        alpha: 1,
        beta: 0,
        dtype,
        lora: { la: u.buffer, lb: buf(a), r, transB: false, scale: 1, dropout: p > 0 ? { p, seed: attrs.seed } : undefined },
      },
      LORA_TILE,
    );
    outputs.push(out(dx, [M, inF], dtype));
  } else if (attrs.needX) {
    // dx = dropout(U·A) + dy·W: the LoRA term first, then the base product accumulates onto it.
    let dx = gemmOutput(backend, dtype, 1, M, inF);
    gemm({ M, N: inF, K: r, transA: false, transB: false }, { a: u.buffer, b: buf(a), c: dx.buffer, alpha: 1, beta: 0 });
    if (p > 0) {
      const masked = dropoutData(backend, dtype, dx.buffer, M * inF, p, attrs.seed);
      backend.release(dx.buffer);
      dx = masked;
    }
    gemm({ M, N: inF, K: outF, transA: false, transB: false }, { a: buf(dy), b: buf(w), c: dx.buffer, alpha: 1, beta: 1 });
    outputs.push(out(dx, [M, inF], dtype));
  }
  // dA = Uᵀ·dropout(x) and dB = s·dyᵀ·T: where in = out the two are one pair of products of the
  // same shape (dA and dBᵀ = s·Tᵀ·dy, r × in, K = M) in one dispatch and one reduction, which
  // writes dB transposed.
  const gradShape = { M: r, N: inF, K: M, batch: 1, transA: true, transB: false, dtype: gemmType(dtype) } as const;
  const pairBase = attrs.needA && attrs.needB && !dB && inF === outF && plan === 'fused' ? splitVec4Config(gradShape, gemmDevice(backend)) : null;
  // The pair is two products' workgroups in one dispatch: half the selector's K splits for one
  // keeps the workgroup count, which measured faster than the full count (RESULTS.md, session 7).
  const pairSplits = pairBase ? Math.max(2, Math.floor(pairBase.splits / 2)) : 0;
  const paired = pairBase ? withSplits(pairBase, pairSplits) : null;
  if (attrs.needA) {
    const xd = p > 0 ? dropoutData(backend, dtype, buf(x), M * inF, p, attrs.seed) : null;
    const dA = gemmOutput(backend, dtype, 1, r, inF);
    if (paired) {
      dB = gemmOutput(backend, dtype, 1, outF, r);
      recordGemm(
        backend,
        gradShape,
        {
          a: u.buffer,
          b: xd?.buffer ?? buf(x),
          c: dA.buffer,
          aBatchStride: 0,
          bBatchStride: 0,
          alpha: 1,
          beta: 0,
          dtype,
          pair: { a: buf(t), b: buf(dy), cT: dB.buffer, alpha: s },
        },
        paired,
      );
    } else {
      gemm({ M: r, N: inF, K: M, transA: true, transB: false }, { a: u.buffer, b: xd?.buffer ?? buf(x), c: dA.buffer, alpha: 1, beta: 0 });
    }
    if (xd) backend.release(xd.buffer);
    outputs.push(out(dA, [r, inF], dtype));
  }
  backend.release(u.buffer);
  if (attrs.needB) {
    if (!dB) {
      dB = gemmOutput(backend, dtype, 1, outF, r);
      gemm({ M: outF, N: r, K: M, transA: true, transB: false }, { a: buf(dy), b: buf(t), c: dB.buffer, alpha: s, beta: 0 });
    }
    outputs.push(out(dB, [outF, r], dtype));
  }
  if (attrs.needWeight) {
    const dW = gemmOutput(backend, dtype, 1, outF, inF);
    gemm({ M: outF, N: inF, K: M, transA: true, transB: false }, { a: buf(dy), b: buf(x), c: dW.buffer, alpha: 1, beta: 0 });
    outputs.push(out(dW, [outF, inF], dtype));
  }
  if (attrs.needBias) {
    // Column sums of dy as a 1-row product: onesᵀ·dy.
    const ones = fill(backend, dtype, M, 1, 'ones');
    const dBias = gemmOutput(backend, dtype, 1, 1, outF);
    gemm({ M: 1, N: outF, K: M, transA: false, transB: false }, { a: ones.buffer, b: buf(dy), c: dBias.buffer, alpha: 1, beta: 0 });
    backend.release(ones.buffer);
    outputs.push(out(dBias, [outF], dtype));
  }
  return outputs;
}

export function registerLoraKernels(): void {
  registerKernel('webgpu', 'loraLinear', loraLinearKernel);
  registerKernel('webgpu', 'loraLinearBackward', loraLinearBackwardKernel);
}
