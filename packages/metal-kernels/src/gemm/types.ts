/**
 * The GEMM family's vocabulary: product shapes, kernel configurations, the device description the
 * selector reads, the operands a recorder takes, and facts that follow from a shape or a config
 * alone. Every other file of `gemm/` builds on this one; it imports none of them.
 *
 * Layers, one way: `types` → `select` (the pure selector) → one recorder per kernel kind
 * (`tiled`, `vec4`, `gemv`, `gemv-rows`, `gemv-cols`, `sgmat`, `lora-dual`, `splitk`) →
 * `record` (validates a product against its config and calls the recorder) → the kernels.
 */
import type { AdapterReport } from '../device';

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

/** What the selector needs to know of the device (`gemmDevice(backend)` builds it). */
export interface GemmDevice {
  /** Bytes of workgroup memory a kernel may use. */
  maxWorkgroupStorage: number;
  maxInvocations: number;
  /** The subgroup-matrix configuration to use for big products, where the backend opts in (see sgmat.ts). */
  sgmat?: SgmatConfig | null;
  /** The subgroup size where the `subgroups` feature is on and the size is fixed (see {@link fixedSubgroupSize}). */
  subgroupSize?: number;
}

/** WebGPU's default limits, without subgroups or subgroup matrices: a device description every adapter satisfies. */
export const DEFAULT_GEMM_DEVICE: GemmDevice = { maxWorkgroupStorage: 16384, maxInvocations: 256 };

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

/** gemv-rows.wgsl: LANES threads walk R rows of the streamed operand along K; MR rows of the small one per dispatch. */
export interface GemvRowsConfig {
  kind: 'gemv-rows';
  name: string;
  lanes: number;
  rows: number;
  mr: number;
  unroll: number;
  splits: number;
  /**
   * vec4s of each row of the small operand staged in workgroup memory at a time (section XS),
   * 0 or absent to read them from global memory. Storage: MR·stage·16 bytes besides the
   * reduction's 9 KiB.
   */
  stage?: number;
  /** With `stage`: load the next stage of X into registers while the current one streams (section XP). */
  prefetchX?: boolean;
  /**
   * Sum each lane group's partials with subgroup shuffles (section SG: a butterfly in which each
   * lane keeps half of what is left at each step) instead of through workgroup memory with two
   * barriers per eight accumulators. Needs the `subgroups` feature with one subgroup size (the
   * adapter's minimum and maximum agree) that lanes divides.
   */
  subgroupFlush?: boolean;
  /**
   * With `stage`: stage X by k (`xs[k][row]`, rows padded by one vec4) instead of by row, so a
   * step's reads of the MR rows share one index and differ by constant offsets (section XSK).
   */
  stageByK?: boolean;
  /** Accumulate each product as a chain of four fma() on the accumulator instead of adding a dot(). */
  fmaChains?: boolean;
  /** Threads per workgroup: 64, 128 or 256 (the default). */
  threads?: 64 | 128 | 256;
}

/** gemv-cols.wgsl: each thread owns a vec4 of columns of the streamed operand; MR columns of the small one per dispatch. */
export interface GemvColsConfig {
  kind: 'gemv-cols';
  name: string;
  colLanes: number;
  mr: number;
  unroll: number;
  splits: number;
}

/** The subgroup-matrix kernel (gemm-sgmat.wgsl) on one of the adapter's configurations. */
export interface SgmatConfig {
  kind: 'sgmat';
  name: string;
  /** The matrices' component type; results are always f32. */
  component: 'f32' | 'f16';
  sm: number;
  sn: number;
  sk: number;
  /** The adapter's (fixed) subgroup size. */
  subgroupSize: number;
  /** Result tiles per subgroup down (M) and across (N); four subgroups (2 × 2) make a workgroup's 2·rm·sm × 2·rn·sn tile. */
  rm: number;
  rn: number;
  /**
   * Interior workgroups whose rows start on whole 16 bytes (operands stored as the component type,
   * A not transposed) stage through registers, 16 bytes a load, the next tiles loaded while the
   * current ones multiply, into padded tiles (else every tile is staged element by element).
   */
  prefetch: boolean;
  splits: 1;
}

export type GemmConfig = TiledConfig | GemvConfig | Vec4Config | GemvRowsConfig | GemvColsConfig | SgmatConfig;

/** How loraLinear runs: the LoRA term inside the base product (`fused`) or as products of its own (`composed`). */
export type LoraPlan = 'fused' | 'composed';

/**
 * Choices forced on a backend's kernels (tests and benchmarks; `WebGPUBackend.overrides`):
 * `gemm` replaces the selector's config for every product the selector would pick; `loraPlan`
 * replaces loraLinear's plan where that plan applies.
 */
export interface GemmOverrides {
  gemm?: GemmConfig | null;
  loraPlan?: LoraPlan | null;
  /** At most this many K splits for the plain products the selector picks (1: none). */
  maxSplits?: number | null;
  /**
   * qgemv.wgsl's lanes per team (8, 16, 32) and rows of W per team (1, 2, 4, 8), for benchmarks;
   * with `once` its section ONCE (each packed value unpacked once for all rows of x; off when
   * absent), and without it the chunk's `body` (`'loop'` when absent; `'unroll'`: section GEN),
   * which `stage` makes read x from tiles in workgroup memory (section STAGE: `true` for the
   * largest tiles that fit, or a number of chunks a tile, a multiple of `lanes`; off when absent).
   */
  qgemv?: { lanes: number; rows: number; once?: boolean; body?: 'loop' | 'unroll'; stage?: boolean | number } | null;
}

/** One product of a layer: its shape and the config it runs on (the selector's answer). */
export interface Product<C extends GemmConfig = GemmConfig> {
  shape: GemmShape;
  config: C;
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
  /** Only with the vec4 kernel, batch 1 and r % 4 = 0. */
  lora?: LoraPrologue;
  /**
   * op(B) is an MLX affine-quantized matrix (tiled, vec4 or subgroup-matrix kernel, batch 1): `b`
   * holds its packed u32 words, unpacked as the B tile is staged (the kernels' QUANT sections).
   */
  quant?: { bits: number; groupSize: number; scales: GPUBuffer; biases: GPUBuffer };
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

/**
 * Where a recorder writes: C itself, or with `split` the f32 workspace of K splits
 * ([entries·splits, M, NT], NT = N plus appended rows) that `splitk.ts` reduces into C.
 */
export interface GemmTarget {
  out: GPUBuffer;
  split: boolean;
  /** Elements of K per split (a multiple of 16; K itself unsplit). */
  kChunk: number;
  splits: number;
}

/** The WGSL type the operands are stored as (the float kernels compute in f32 either way). */
export type GemmType = 'f32' | 'f16' | 'i32' | 'u32';

/** Whether gemm-vec4.wgsl's alignment holds: each stored operand's contiguous dim is a multiple of 4. */
export function vec4Aligned(shape: GemmShape): boolean {
  const aContiguous = shape.transA ? shape.M : shape.K;
  const bContiguous = shape.transB ? shape.K : shape.N;
  return aContiguous % 4 === 0 && bContiguous % 4 === 0;
}

/** Rows of the small operand a gemv dispatch is compiled for (1, 4, 8 or 16) to cover `rows`. */
export function gemvRowBucket(rows: number): 1 | 4 | 8 | 16 {
  return rows <= 1 ? 1 : rows <= 4 ? 4 : rows <= 8 ? 8 : 16;
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
export function kSplit(K: number, splits: number): { kChunk: number; realSplits: number } {
  const kChunk = Math.max(1, Math.ceil(K / splits / 16) * 16);
  return { kChunk, realSplits: Math.max(1, Math.ceil(K / kChunk)) };
}

/** Workgroup tiles of a vec4 config over an M×N output (per batch entry: times `batch`). */
export function vec4Tiles(c: Vec4Config, M: number, N: number, batch: number): number {
  return Math.ceil(M / (c.bm ?? 128)) * Math.ceil(N / (c.bn ?? 128)) * batch;
}

/** Bytes of workgroup memory a tiled config uses. */
export function tiledStorageBytes(c: TiledConfig): number {
  return c.tk * (c.wgy * c.tm + c.wgx * c.tn) * 4;
}

/**
 * Which operand gemv-rows streams, or null where it does not apply: batch 1, op(A)·op(B)ᵀ
 * with both stored contiguous along K (A not transposed, B transposed), K % 4 = 0. The operand
 * with more rows is streamed.
 */
export function gemvRowsStream(s: GemmShape): 'a' | 'b' | null {
  if (s.batch !== 1 || s.transA || !s.transB || s.K % 4 !== 0) return null;
  return s.M <= s.N ? 'b' : 'a';
}

/**
 * Which operand gemv-cols streams, or null: batch 1, and the streamed operand stored K-major
 * with its other dimension a multiple of 4 (B not transposed, N % 4 = 0; or A transposed,
 * M % 4 = 0). The larger one is preferred.
 */
export function gemvColsStream(s: GemmShape): 'a' | 'b' | null {
  if (s.batch !== 1) return null;
  const b = !s.transB && s.N % 4 === 0;
  const a = s.transA && s.M % 4 === 0;
  if (a && b) return s.M > s.N ? 'a' : 'b';
  return b ? 'b' : a ? 'a' : null;
}

/** A gemv-rows config's threads per workgroup. */
export function gemvRowsThreads(c: GemvRowsConfig): number {
  return c.threads ?? 256;
}

/** Rows of the streamed operand one gemv-rows workgroup covers: its lane groups × their rows. */
export function streamedRowsPerWorkgroup(c: GemvRowsConfig): number {
  return (gemvRowsThreads(c) / c.lanes) * c.rows;
}

/** Bytes of workgroup memory gemv-rows takes for a config: the reduction's (none with subgroupFlush), plus the staged rows of X (section XS). */
export function gemvRowsStorage(c: GemvRowsConfig): number {
  return (c.subgroupFlush ? 0 : 8 * (gemvRowsThreads(c) + 32) * 4) + (c.stageByK ? c.mr + 1 : c.mr) * (c.stage ?? 0) * 16;
}

/** Workgroups of one gemv dispatch before K splits (the selector sizes the splits from it). */
export function gemvGroups(s: GemmShape, c: GemvRowsConfig | GemvColsConfig): number {
  if (c.kind === 'gemv-rows') return Math.ceil((gemvRowsStream(s) === 'b' ? s.N : s.M) / streamedRowsPerWorkgroup(c));
  return Math.ceil((gemvColsStream(s) === 'b' ? s.N : s.M) / 4 / c.colLanes);
}

/**
 * The subgroup size gemv-rows' subgroup flush can rely on: the adapter's, where the `subgroups`
 * feature is on, its minimum and maximum agree (whether a config's lane groups and workgroup are
 * then whole subgroups is {@link subgroupFlushFits}) and WGSL has `@builtin(subgroup_id)` (the
 * `subgroup_id` language extension: Chrome 144, Dawn); otherwise undefined.
 */
export function fixedSubgroupSize(
  report: Pick<AdapterReport, 'subgroups' | 'subgroupMinSize' | 'subgroupMaxSize' | 'wgslLanguageFeatures'>,
): number | undefined {
  const fixed = report.subgroups && report.subgroupMinSize !== undefined && report.subgroupMinSize === report.subgroupMaxSize;
  return fixed && report.wgslLanguageFeatures.includes('subgroup_id') ? report.subgroupMinSize : undefined;
}

/**
 * Whether gemv-rows' subgroup flush runs with lane groups of `lanes` on subgroups of `size` (from
 * {@link fixedSubgroupSize}): each lane group inside one subgroup, and the workgroup of `threads` (256
 * unless the config says otherwise) whole subgroups.
 */
export function subgroupFlushFits(size: number | undefined, lanes: number, threads = 256): boolean {
  return size !== undefined && size % lanes === 0 && threads % size === 0;
}
