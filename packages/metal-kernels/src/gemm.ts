import { type DType, ValueError } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from './backend';
import {
  type GemvColsConfig,
  type GemvRowsConfig,
  fixedSubgroupSize,
  gemvColsStream,
  gemvGroups,
  gemvRowsStorage,
  gemvRowsStream,
  recordGemvCols,
  recordGemvRows,
  subgroupFlushFits,
} from './gemv';
import { type Args, dummy, enableFor, grid1d, shader, typeOf, uniform } from './kernels/common';
import { recordSgmat, type SgmatConfig, subgroupMatrixChoice } from './sgmat';
import splitkSource from './wgsl/gemm-splitk-reduce.wgsl';
import tiledSource from './wgsl/gemm-tiled.wgsl';
import vec4Source from './wgsl/gemm-vec4.wgsl';
import gemvSource from './wgsl/gemv.wgsl';

/** A register-blocked tile configuration (see gemm-tiled.wgsl). */
export interface TiledConfig {
  kind: 'tiled';
  name: string;
  tm: number;
  tn: number;
  tk: number;
  wgx: number;
  wgy: number;
  splits: number;
}

/** A matrix-vector configuration for few rows of any layout and dtype (see gemv.wgsl). */
export interface GemvConfig {
  kind: 'gemv';
  name: string;
  mr: number;
  /** Threads per output column walking its K chunk together (a power of two, 1..256): 256 / lanes columns per workgroup. */
  lanes: number;
  splits: number;
}

/**
 * The portable gemv's config for few rows of op(A) (M ≤ 16): 32 lanes per column of W for
 * x·Wᵀ; with B as stored ([K, N]) the columns side by side (up to 256) and the rest of the 256
 * threads as lanes along K, so a rank-sized N (U = dy·B at decode, N = r) keeps every thread busy.
 * K split toward 512 workgroups, each lane walking at least 4 of K per split.
 */
export function gemvConfig(shape: GemmShape): GemvConfig {
  const { M, N, K } = shape;
  const mr = gemvRowBucket(M);
  const lanes = shape.transB ? 32 : 256 / Math.min(256, 2 ** Math.ceil(Math.log2(Math.max(1, N))));
  const groups = Math.ceil(N / (256 / lanes));
  return {
    kind: 'gemv',
    name: shape.transB || lanes === 1 ? `gemv${mr}` : `gemv${mr}/l${lanes}`,
    mr,
    lanes,
    splits: splitsToward(512, groups, K, Math.max(128, 4 * lanes)),
  };
}

/**
 * The vectorized, double-buffered kernel for aligned f32 products (see gemm-vec4.wgsl): BM×BN
 * outputs per workgroup, 128×128 for big products, 128×64 / 64×128 for rank-shaped ones.
 */
export interface Vec4Config {
  kind: 'vec4';
  name: string;
  splits: number;
  /** Rows of C per workgroup (default 128); 16 for decode-sized M with 4 threads down. */
  bm?: 16 | 32 | 64 | 128;
  /** Columns of C per workgroup (default 128). */
  bn?: 32 | 64 | 128;
  /** Threads across (columns) and down (rows) the workgroup (default 16 × 16): bn / (4·wgx) and bm / (4·wgy) must be 1 or 2. */
  wgx?: 8 | 16 | 32;
  wgy?: 4 | 8 | 16;
  /** Raster order of the tiles: G tile rows walked down before one column across (0 or absent: row-major). */
  groupM?: number;
}

export type GemmConfig = TiledConfig | GemvConfig | Vec4Config | GemvRowsConfig | GemvColsConfig | SgmatConfig;
export type { GemvColsConfig, GemvRowsConfig, SgmatConfig };

/** Big products: 128×128 on 16×16 threads, 8×8 outputs each, tiles in row-major order. */
export const VEC4_128: Vec4Config = { kind: 'vec4', name: 'vec4-128x128', splits: 1 };
/**
 * The same with the tiles walked four tile rows down before one column across: faster for
 * products other than A·Bᵀ (groups of two, eight and sixteen rows were slower), slower for A·Bᵀ
 * itself, so `bigTile` picks per layout (RESULTS.md, session 5, "raster groups").
 */
export const VEC4_128_G4: Vec4Config = { kind: 'vec4', name: 'vec4-128x128/g4', splits: 1, groupM: 4 };

/** The 128×128 tile for a layout: row-major for A·Bᵀ, four-row raster groups otherwise (see {@link VEC4_128_G4}). */
export function bigTile(shape: Pick<GemmShape, 'transA' | 'transB'>): Vec4Config {
  return shape.transB && !shape.transA ? VEC4_128 : VEC4_128_G4;
}
/** N = rank products (x·Aᵀ, dy·B, dyᵀ·T): 128 rows × 64 columns per workgroup. */
export const VEC4_128x64: Vec4Config = { kind: 'vec4', name: 'vec4-128x64', splits: 1, bm: 128, bn: 64 };
/** M = rank products (Uᵀ·x): 64 rows × 128 columns per workgroup. */
export const VEC4_64x128: Vec4Config = { kind: 'vec4', name: 'vec4-64x128', splits: 1, bm: 64, bn: 128 };
/** N = rank products with r ≤ 32: 128 × 32 on 8 × 16 threads (8 × 4 outputs each). */
export const VEC4_128x32: Vec4Config = { kind: 'vec4', name: 'vec4-128x32', splits: 1, bm: 128, bn: 32, wgx: 8 };
/** M = rank products with r ≤ 32: 32 × 128 on 16 × 8 threads. */
export const VEC4_32x128: Vec4Config = { kind: 'vec4', name: 'vec4-32x128', splits: 1, bm: 32, bn: 128, wgy: 8 };
/** N = rank products with 32 < r ≤ 64: 128 × 64 on 8 × 16 threads, 8 × 8 outputs each as in the big tile. */
export const VEC4_128x64_T128: Vec4Config = { kind: 'vec4', name: 'vec4-128x64/128t', splits: 1, bm: 128, bn: 64, wgx: 8 };

/**
 * Whether gemm-vec4.wgsl's alignment holds: each stored operand's contiguous dim is a multiple of
 * 4 (f32, or f16 storage where the device has `shader-f16`; the kernel computes in f32 either way).
 */
export function vec4Aligned(shape: GemmShape): boolean {
  const aContiguous = shape.transA ? shape.M : shape.K;
  const bContiguous = shape.transB ? shape.K : shape.N;
  return aContiguous % 4 === 0 && bContiguous % 4 === 0;
}

export interface GemmShape {
  M: number;
  N: number;
  K: number;
  batch: number;
  transA: boolean;
  transB: boolean;
  /** Element type of the operands and C (default float32); float16 is storage only, every kernel computes in f32. */
  dtype?: 'float32' | 'float16';
}

/** What the selector needs to know of the device. */
export interface GemmDevice {
  /** Bytes of workgroup memory a kernel may use. */
  maxWorkgroupStorage: number;
  maxInvocations: number;
  /** The subgroup-matrix configuration to use for big products, where the backend opts in (see sgmat.ts). */
  sgmat?: SgmatConfig | null;
  /** The subgroup size where the `subgroups` feature is on and the size is fixed (see `fixedSubgroupSize`). */
  subgroupSize?: number;
}

/** The selector's device where none is given: WebGPU's default limits. */
const DEFAULT_DEVICE: GemmDevice = { maxWorkgroupStorage: 16384, maxInvocations: 256 };

/** What the selector needs of `backend`'s device; given the operands' type, also the subgroup-matrix configuration where the backend opts in. */
export function gemmDevice(backend: WebGPUBackend, t?: string): GemmDevice {
  const { limits } = backend.device;
  const sgmat =
    t !== undefined && backend.subgroupMatrix && (t === 'f32' || t === 'f16')
      ? subgroupMatrixChoice(backend.context.report, t === 'f16' ? 'float16' : 'float32')
      : null;
  return {
    maxWorkgroupStorage: limits.maxComputeWorkgroupStorageSize,
    maxInvocations: limits.maxComputeInvocationsPerWorkgroup,
    sgmat,
    subgroupSize: fixedSubgroupSize(backend.context.report),
  };
}

/** Rows of the small operand a gemv dispatch is compiled for (1, 4, 8 or 16) to cover `rows`. */
export function gemvRowBucket(rows: number): 1 | 4 | 8 | 16 {
  return rows <= 1 ? 1 : rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
}

const tile = (name: string, tm: number, tn: number, tk: number, wgx: number, wgy: number): TiledConfig => ({
  kind: 'tiled',
  name,
  tm,
  tn,
  tk,
  wgx,
  wgy,
  splits: 1,
});

/** The tiled variants, by name (tests and benchmarks force each one). */
export const TILED_VARIANTS: Record<string, TiledConfig> = {
  /** Big GEMMs: 128×128 outputs per workgroup, 8×8 per thread. */
  tile128x128: tile('tile128x128', 8, 8, 8, 16, 16),
  /** 128×64, 8×4 per thread. */
  tile128x64: tile('tile128x64', 8, 4, 16, 16, 16),
  /** Mid-size GEMMs. */
  tile64x64: tile('tile64x64', 4, 4, 16, 16, 16),
  /** Small GEMMs: more workgroups for the same work. */
  tile32x32: tile('tile32x32', 2, 2, 16, 16, 16),
  /** N = rank (x·Aᵀ, dy·B): 128 rows × 16 columns per workgroup. */
  skinnyN16: tile('skinnyN16', 8, 1, 16, 16, 16),
  /** M = rank (Uᵀ·x): 16 rows × 128 columns per workgroup. */
  skinnyM16: tile('skinnyM16', 1, 8, 16, 16, 16),
};

/** Bytes of workgroup memory a tiled config uses. */
export function tiledStorageBytes(c: TiledConfig): number {
  return c.tk * (c.wgy * c.tm + c.wgx * c.tn) * 4;
}

/** K splits toward `target` workgroups from `groups` per split: each split keeps ≥ `minChunk` of K, at most `cap` splits. */
function splitsToward(target: number, groups: number, K: number, minChunk: number, cap = 64): number {
  return Math.max(1, Math.min(cap, Math.ceil(target / groups), Math.floor(K / minChunk)));
}

function splitsFor(tiles: number, K: number): number {
  // Enough workgroups to fill a large GPU (~256), but each split keeps ≥ 256 of K.
  if (tiles >= 128 || K < 1024) return 1;
  return splitsToward(256, tiles, K, 256, 16);
}

/**
 * `config` with K split `splits` ways (named `…+splitKn`), or unsplit for one; a config that is
 * already split is renamed for the new count.
 */
export function withSplits<C extends GemmConfig>(config: C, splits: number): C {
  const name = config.name.replace(/\+splitK\d+$/, '');
  if (splits > 1) return { ...config, name: `${name}+splitK${splits}`, splits };
  return config.splits > 1 ? { ...config, name, splits: 1 } : config;
}

/** The K chunk (elements, a multiple of 16) of each of `splits` splits of K, and how many splits that makes (the last may be short, none empty). */
function kSplit(K: number, splits: number): { kChunk: number; realSplits: number } {
  const kChunk = Math.max(1, Math.ceil(K / splits / 16) * 16);
  return { kChunk, realSplits: Math.max(1, Math.ceil(K / kChunk)) };
}

/** Workgroup tiles of a vec4 config over an M×N output (per batch entry: times `batch`). */
function vec4Tiles(c: Vec4Config, M: number, N: number, batch: number): number {
  return Math.ceil(M / (c.bm ?? 128)) * Math.ceil(N / (c.bn ?? 128)) * batch;
}

/**
 * The bandwidth-bound choice, or null: one operand has ≤ 16 rows (decode, or a LoRA rank ≤ 16),
 * the other is read once by gemv-rows or gemv-cols. The settings are those the sweeps found best
 * (`gemm-bench --explore-gemv`, `--explore-lanes`; RESULTS.md, "the bandwidth-bound gemv
 * kernels"): gemv-cols on 32 column lanes; ranks above 16 run faster on tiles. The fused decode
 * forward uses this gemv-rows choice for its LoRA epilogue.
 */
export function gemvChoice(shape: GemmShape, device: GemmDevice = DEFAULT_DEVICE): GemvRowsConfig | GemvColsConfig | null {
  const { M, N, K } = shape;
  const bucket = (n: number) => (n <= 1 ? 1 : n <= 2 ? 2 : n <= 4 ? 4 : n <= 8 ? 8 : 16);
  const rowsStream = gemvRowsStream(shape);
  const colsStream = gemvColsStream(shape);
  const few = rowsStream === 'b' || colsStream === 'b' ? M : N;
  const many = rowsStream === 'b' || colsStream === 'b' ? N : M;
  if (!(rowsStream || colsStream) || K < 64 || many < 64 || few > 16) return null;
  const mr = bucket(few);
  // With 8..16 rows of the small operand: 16 lanes per row, two rows per lane group, one load in
  // flight, ~512 workgroups. Decode with M ≤ 4: 32 lanes, four loads in flight, ~512 workgroups;
  // otherwise 32 lanes, two loads, ~2048 workgroups (each the sweeps' best).
  const manyRows = mr >= 8;
  if (rowsStream === 'b' && manyRows) {
    // Decode with 5..16 rows: x staged in workgroup memory 32 vec4 per row at a time (16 where
    // the device has only 16 KiB), 8 lanes per row, four rows of W per lane group, K split to
    // ~256 workgroups, one wave (sessions 6–9 in RESULTS.md give the measurements):
    // - with 9..16 rows, each stage's x is loaded into registers while the one before streams;
    // - where subgroups of a fixed size hold whole lane groups, the partials are summed by
    //   shuffles instead of through workgroup memory (`/sg`), which also keeps 32 vec4 staged
    //   within 16 KiB; with 8 rows the lane groups then take 16 lanes (half the accumulators);
    // - x is staged by k (`xk`: a step's MR reads share one index) and each product is a chain
    //   of four fma() on its accumulator: fewer instructions per step.
    const sg = subgroupFlushFits(device.subgroupSize, 8);
    const lanes = sg && mr === 8 && subgroupFlushFits(device.subgroupSize, 16) ? 16 : 8;
    const name = (stage: string) => `gemv-rows${mr}/xk${stage}${sg ? '/sg' : ''}${lanes === 16 ? '/l16' : ''}`;
    const staged: GemvRowsConfig = {
      kind: 'gemv-rows',
      name: name(mr === 16 ? '32p' : '32'),
      lanes,
      rows: 4,
      mr,
      unroll: 1,
      splits: 1,
      stage: 32,
      prefetchX: mr === 16,
      stageByK: true,
      fmaChains: true,
      ...(sg ? { subgroupFlush: true } : {}),
    };
    const fits = gemvRowsStorage(staged) <= device.maxWorkgroupStorage ? staged : { ...staged, name: name('16'), stage: 16, prefetchX: false };
    return withSplits(fits, splitsToward((256 * lanes) / 8, gemvGroups(shape, fits), K, 256));
  }
  const config: GemvRowsConfig | GemvColsConfig = rowsStream
    ? {
        kind: 'gemv-rows',
        name: `gemv-rows${mr}`,
        lanes: manyRows ? 16 : 32,
        rows: manyRows ? 2 : 1,
        mr,
        unroll: manyRows ? 1 : mr <= 4 && many === N ? 4 : 2,
        splits: 1,
      }
    : { kind: 'gemv-cols', name: `gemv-cols${mr}`, colLanes: 32, mr, unroll: 2, splits: 1 };
  const target = (many === N && mr <= 4) || (rowsStream && manyRows) ? 512 : 2048;
  return withSplits(config, splitsToward(target, gemvGroups(shape, config), K, 256));
}

/**
 * Picks the GEMM variant for a shape: a pure function of (M, N, K, batch, transposes) and the
 * device's limits, so its choices are table-tested. Rank-shaped dims (≤ 64) get skinny tiles,
 * few rows get the matrix-vector kernel, big products the 128×128 tile, and grids too small to
 * fill the GPU split K.
 */
export function selectGemm(shape: GemmShape, device: GemmDevice = DEFAULT_DEVICE): GemmConfig {
  const { M, N, K, batch } = shape;
  const gemv = gemvChoice(shape, device);
  const vec4Ok = vec4Aligned(shape) && device.maxWorkgroupStorage >= 16384 && device.maxInvocations >= 256;
  if (gemv) return gemv;
  if (M <= 16 && batch === 1 && K >= 64) return gemvConfig(shape);
  const rankShaped = (Math.min(M, N) <= 64 && Math.max(M, N) >= 256) || (Math.min(M, N) <= 256 && Math.max(M, N) >= 1024);
  if (vec4Ok && rankShaped && K >= 64) {
    // Rank-shaped products (x·Aᵀ, dy·B, dyᵀ·T with N = r; Uᵀ·x with M = r) with r > 16, or any
    // r for dy·B. Their time follows the number of tile steps, not the rank, so the tile is sized
    // to the rank on 128 threads: 128×32 / 32×128 up to r = 32 with K split to ~512 workgroups,
    // 128×64 (8×8 per thread) with N = r ≤ 64 to ~256; Uᵀ·x at r = 64 keeps the 64×128 tile on
    // 256 threads, and ranks above 64 the 128×128 tile (RESULTS.md, "rank-shaped tiles").
    const rank = Math.min(M, N);
    const onN = N <= M;
    if (rank <= 32 || (rank <= 64 && onN)) {
      // The sized tiles split K down to 128 per split.
      const sized = rank <= 32 ? (onN ? VEC4_128x32 : VEC4_32x128) : VEC4_128x64_T128;
      return withSplits(sized, splitsToward(rank <= 32 ? 512 : 256, vec4Tiles(sized, M, N, batch), K, 128));
    }
    const base = rank > 64 ? bigTile(shape) : VEC4_64x128;
    return withSplits(base, splitsFor(vec4Tiles(base, M, N, batch), K));
  }
  // Subgroup matrices (opt-in) for the products that are neither decode- nor rank-shaped.
  if (device.sgmat && Math.min(M, N) > 64 && K >= 16) return device.sgmat;
  let base: TiledConfig;
  if (N <= 16) base = TILED_VARIANTS.skinnyN16;
  else if (N <= 64 && M >= 256)
    base = TILED_VARIANTS.tile64x64; // one column of tiles; split K fills the GPU
  else if (M <= 16) base = TILED_VARIANTS.skinnyM16;
  else if (M * N >= 1024 * 1024 || (M * N >= 256 * 256 && K >= 8192)) {
    // Long reductions (an LM head's dlogits·W over the vocabulary) take the big tile with K split:
    // the 64×64 tile ran such products far slower (RESULTS.md, "End-to-end training step").
    if (vec4Ok) return withSplits(bigTile(shape), splitsFor(vec4Tiles(VEC4_128, M, N, batch), K));
    base = TILED_VARIANTS.tile128x128;
  } else if (M * N >= 256 * 256) base = TILED_VARIANTS.tile64x64;
  else base = TILED_VARIANTS.tile32x32;
  if (tiledStorageBytes(base) > device.maxWorkgroupStorage || base.wgx * base.wgy > device.maxInvocations) base = TILED_VARIANTS.tile32x32;
  return withSplits(base, splitsFor(Math.ceil(M / (base.wgy * base.tm)) * Math.ceil(N / (base.wgx * base.tn)) * batch, K));
}

let forced: GemmConfig | null = null;

/**
 * gemm-vec4's LORA_TRANS_B for a LoRA term with lb transposed or not: dx's layout (lb = A as
 * stored) is compiled in as a constant, while the forward's (lb = B) reads the uniform (2), which
 * measured faster for each (RESULTS.md, "LoRA prologue: lb's layout").
 */
function loraLayoutConstant(transB: boolean): number {
  return transB ? 2 : 0;
}

/**
 * The selector's config for `shape` where it is the vec4 kernel splitting K, else null: what a
 * pair of products (`GemmOperands.pair`) or appended rows (`concatN`) need.
 */
export function splitVec4Config(shape: GemmShape, device?: GemmDevice): Vec4Config | null {
  const cfg = forced ?? selectGemm(shape, device);
  if (cfg.kind !== 'vec4' || shape.batch !== 1) return null;
  return kSplit(shape.K, cfg.splits).realSplits > 1 ? cfg : null;
}

/**
 * The selector's config for `shape` where rows can be appended to op(B)ᵀ (`GemmOperands.concatN`),
 * else null: the vec4 kernel splitting K, or gemv-rows streaming B with its rows per lane group
 * dividing N (split or not).
 */
export function concatConfig(shape: GemmShape, device?: GemmDevice): GemmConfig | null {
  const cfg = forced ?? selectGemm(shape, device);
  if (cfg.kind === 'gemv-rows') return shape.batch === 1 && shape.transB && gemvRowsStream(shape) === 'b' && shape.N % cfg.rows === 0 ? cfg : null;
  return splitVec4Config(shape, device);
}

/** Forces every GEMM to use `config` (tests and benchmarks); `null` restores the selector. */
export function forceGemmConfig(config: GemmConfig | null): void {
  forced = config;
}

/**
 * The fused LoRA term: C gets s·mask⊙(la·op(lb)) added before α. gemm-vec4.wgsl (128×128) runs it
 * as a prologue; gemv-rows.wgsl, streaming B with lb [N, r] and no mask, as an epilogue (decode).
 */
export interface LoraPrologue {
  /** [M, r], r contiguous. */
  la: GPUBuffer;
  /** [N, r] when `transB`, else [r, N]. */
  lb: GPUBuffer;
  r: number;
  transB: boolean;
  scale: number;
  /** The LoRA dropout mask over output elements (index m·N + n), kept ones scaled by 1/(1-p). */
  dropout?: { p: number; seed: number };
}

export interface GemmOperands {
  a: GPUBuffer;
  b: GPUBuffer;
  /** Output; when `beta` is non-zero its current contents are accumulated. */
  c: GPUBuffer;
  bias?: GPUBuffer;
  aBatchStride: number;
  bBatchStride: number;
  alpha: number;
  beta: number;
  dtype: DType;
  /** Only with the vec4 kernel, batch 1 and r % 4 = 0. */
  lora?: LoraPrologue;
  /**
   * A second product of the same shape in the same dispatch (vec4 kernel, batch 1, K split, no
   * bias, β or LoRA term): C2ᵀ = α2·op(A2)·op(B2), written transposed ([N, M]) into `c`. The LoRA
   * backward's dA = Uᵀ·x and dB = (Tᵀ·dy)ᵀ.
   */
  pair?: { a: GPUBuffer; b: GPUBuffer; cT: GPUBuffer; alpha: number };
  /**
   * Rows appended to op(B)ᵀ (B transposed, batch 1, no β, LoRA term or pair; the vec4 kernel
   * splitting K, or gemv-rows streaming B): B2 [rows, K], its products written as they are
   * ([M, rows], no α or bias) to `c`. The decode LoRA forward's T = x·Aᵀ computed with x·Wᵀ.
   */
  concatN?: { b: GPUBuffer; c: GPUBuffer; rows: number };
}

/** Records `C = α·op(A)·op(B) + β·C + bias` for one shape and configuration. */
export function recordGemm(backend: WebGPUBackend, shape: GemmShape, ops: GemmOperands, config?: GemmConfig): GemmConfig {
  const { M, N, K, batch } = shape;
  const t = typeOf(backend, ops.dtype, 'matmul');
  if (M === 0 || N === 0 || batch === 0) return config ?? forced ?? selectGemm(shape);
  const cfg = config ?? forced ?? selectGemm(shape, gemmDevice(backend, t));
  const hasBias = ops.bias ? 1 : 0;
  const accumulate = ops.beta !== 0 ? 1 : 0;
  const bias = ops.bias ?? dummy(backend);
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
  if (cfg.kind === 'gemv' && batch !== 1) throw new ValueError('matmul', 'the gemv variant handles one batch', 'batch 1', String(batch));
  if (cfg.kind === 'gemv' && M > cfg.mr) throw new ValueError('matmul', `gemv${cfg.mr} handles at most ${cfg.mr} rows`, `M <= ${cfg.mr}`, String(M));
  const { kChunk, realSplits } = kSplit(K, cfg.splits);
  const useWorkspace = cfg.kind === 'gemv' || realSplits > 1;
  const pair = ops.pair;
  if (pair && (cfg.kind !== 'vec4' || batch !== 1 || realSplits < 2 || ops.lora || ops.bias || ops.beta !== 0)) {
    throw new ValueError(
      'matmul',
      'a pair of products needs the vec4 kernel with K split, batch 1, and no bias, β or LoRA term',
      'a vec4 config splitting K',
      `${cfg.name}, batch ${batch}, ${realSplits} split(s)`,
    );
  }
  const concatN = ops.concatN;
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
  try {
    recordKernels(cfg);
  } catch (error) {
    // A refused config records nothing: its workspace goes back to the pool.
    if (ws) backend.release(ws);
    throw error;
  }
  return cfg;

  // The product (and reduction) dispatches; `cfg` narrowed past the subgroup-matrix path.
  function recordKernels(cfg: Exclude<GemmConfig, SgmatConfig>): void {
    if (cfg.kind === 'gemv-rows' || cfg.kind === 'gemv-cols') {
      const lora = ops.lora ? { t: ops.lora.la, b: ops.lora.lb, r: ops.lora.r, scale: ops.lora.scale } : undefined;
      const concat = concatN ? { w: concatN.b, c: concatN.c, rows: concatN.rows } : undefined;
      const gemvOps = {
        a: ops.a,
        b: ops.b,
        bias: ops.bias,
        c: ws ?? ops.c,
        alpha: ops.alpha,
        beta: ops.beta,
        split: ws !== null,
        lora,
        concat,
        t: t === 'f16' ? ('f16' as const) : ('f32' as const),
      };
      if (cfg.kind === 'gemv-rows') recordGemvRows(backend, shape, gemvOps, cfg, kChunk, realSplits);
      else recordGemvCols(backend, shape, gemvOps, cfg, kChunk, realSplits);
    } else if (cfg.kind === 'gemv') {
      if (!(cfg.lanes >= 1 && cfg.lanes <= 256 && Number.isInteger(Math.log2(cfg.lanes)))) {
        throw new ValueError('matmul', `${cfg.name}: lanes per column must be a power of two from 1 to 256`, 'lanes in {1, 2, 4, …, 256}', String(cfg.lanes));
      }
      const { key, source } = shader('gemv', gemvSource, { ENABLE: enableFor(t), T: t, MR: String(cfg.mr), LANES: String(cfg.lanes) });
      const cols = 256 / cfg.lanes;
      backend.dispatch({
        key,
        source,
        constants: { TRANS_A: shape.transA ? 1 : 0, TRANS_B: shape.transB ? 1 : 0 },
        buffers: [ops.a, ops.b, ws!],
        uniform: uniform([M, N, K, kChunk, realSplits]),
        workgroups: [Math.ceil(N / cols), realSplits, 1],
        label: cfg.name,
      });
    } else if (cfg.kind === 'vec4') {
      const [bm, bn, wgx, wgy] = [cfg.bm ?? 128, cfg.bn ?? 128, cfg.wgx ?? 16, cfg.wgy ?? 16];
      const halves = [bm / (4 * wgy), bn / (4 * wgx)];
      if (!halves.every((h) => h === 1 || h === 2) || wgx * wgy > 256 || Math.max(bm, bn) > wgx * wgy) {
        throw new ValueError(
          'matmul',
          `${cfg.name}: each thread covers 4 or 8 rows and columns and loads at most two vec4 of each tile`,
          'bm / (4·wgy) and bn / (4·wgx) in {1, 2}, wgx·wgy ≤ 256, bm and bn ≤ wgx·wgy',
          `bm ${bm}, bn ${bn}, wgx ${wgx}, wgy ${wgy}`,
        );
      }
      // Whole-vec4 stores where N % 4 = 0 (much faster for the K = r products, even for the rest),
      // except with the masked prologue, which they made slower (RESULTS.md, session 4).
      const lora = ops.lora;
      const drop = lora?.dropout && lora.dropout.p > 0 ? lora.dropout : null;
      // The LoRA term is a prologue of the main loop. Its dropout mask (dx with dropout) is code
      // of its own, compiled only where dropout is on (RESULTS.md: compiled in behind a runtime
      // check it slowed the forward GEMM).
      const mask = lora !== undefined && drop !== null;
      const vecOut = NT % 4 === 0 && !mask;
      const flag = (b: boolean) => (b ? '1' : '0');
      const { key, source } = shader('gemm-vec4', vec4Source, {
        ENABLE: enableFor(t),
        T: t,
        TC: useWorkspace ? 'f32' : t,
        BM: String(bm),
        BN: String(bn),
        WGX: String(wgx),
        WGY: String(wgy),
        A2: flag(2 * bm > wgx * wgy),
        B2: flag(2 * bn > wgx * wgy),
        VEC_OUT: flag(vecOut),
        LORA: flag(!!lora),
        LORA_MASK: flag(mask),
        RASTER: flag(!!cfg.groupM),
        ...(cfg.groupM ? { GROUP_M: String(cfg.groupM) } : {}),
        PAIR: flag(!!pair),
        CONCAT_N: flag(!!concatN),
      });
      backend.dispatch({
        key,
        source,
        constants: {
          TRANS_A: shape.transA ? 1 : 0,
          TRANS_B: shape.transB ? 1 : 0,
          HAS_BIAS: hasBias,
          ACCUMULATE: accumulate,
          SPLIT: useWorkspace ? 1 : 0,
          ...(lora ? { LORA_TRANS_B: loraLayoutConstant(lora.transB) } : {}),
        },
        buffers: [ops.a, ops.b, bias, ws ?? ops.c, lora?.la ?? pair?.a ?? null, lora?.lb ?? pair?.b ?? concatN?.b ?? null],
        uniform: uniform([
          M,
          NT,
          K,
          entries,
          ops.aBatchStride,
          ops.bBatchStride,
          useWorkspace ? kChunk : K,
          realSplits,
          { f32: ops.alpha },
          { f32: ops.beta },
          lora?.r ?? 0,
          lora?.transB ? 1 : 0,
          { f32: lora?.scale ?? 0 },
          drop ? 1 : 0,
          drop ? drop.seed >>> 0 : 0,
          drop ? Math.ceil(drop.p * 2 ** 24) : 0,
          { f32: drop ? 1 / (1 - drop.p) : 1 },
          N,
        ]),
        workgroups: [Math.ceil(NT / bn), Math.ceil(M / bm), entries * realSplits],
        label: `${cfg.name}${role}`,
      });
    } else {
      const { key, source } = shader('gemm-tiled', tiledSource, {
        ENABLE: enableFor(t),
        T: t,
        TC: useWorkspace ? 'f32' : t,
        TM: String(cfg.tm),
        TN: String(cfg.tn),
        TK: String(cfg.tk),
        WGX: String(cfg.wgx),
        WGY: String(cfg.wgy),
      });
      const bm = cfg.wgy * cfg.tm;
      const bn = cfg.wgx * cfg.tn;
      backend.dispatch({
        key,
        source,
        constants: { TRANS_A: shape.transA ? 1 : 0, TRANS_B: shape.transB ? 1 : 0, HAS_BIAS: hasBias, ACCUMULATE: accumulate, SPLIT: useWorkspace ? 1 : 0 },
        buffers: [ops.a, ops.b, bias, ws ?? ops.c],
        uniform: uniform([M, N, K, batch, ops.aBatchStride, ops.bBatchStride, useWorkspace ? kChunk : K, realSplits, { f32: ops.alpha }, { f32: ops.beta }]),
        workgroups: [Math.ceil(N / bn), Math.ceil(M / bm), batch * realSplits],
        label: cfg.name,
      });
    }
    if (ws) {
      const n = entries * M * NT;
      const { workgroups, gridX } = grid1d(n);
      const second = pair?.cT ?? concatN?.c;
      const { key, source } = shader('gemm-splitk-reduce', splitkSource, {
        ENABLE: enableFor(t),
        T: t,
        TWO_OUT: second ? '1' : '0',
        PAIR_T: pair ? '1' : '0',
        CONCAT_C: concatN ? '1' : '0',
      });
      backend.dispatch({
        key,
        source,
        constants: { HAS_BIAS: hasBias, ACCUMULATE: accumulate },
        buffers: second ? [ws, bias, ops.c, second] : [ws, bias, ops.c],
        uniform: uniform([n, M * NT, NT, realSplits, gridX, 0, { f32: ops.alpha }, { f32: ops.beta }, { f32: pair?.alpha ?? 0 }, N]),
        workgroups,
        label: `${cfg.name}${role} reduce`,
      });
      backend.release(ws);
    }
  }
}

/** A fresh output buffer for C. */
export function gemmOutput(backend: WebGPUBackend, dtype: DType, batch: number, M: number, N: number): GpuData {
  return backend.allocate(dtype, batch * M * N, 'matmul out');
}

export type { Args };
