/**
 * The one selector of the GEMM family: a pure function of the product's shape and the device
 * description, for plain products (`selectGemm`) and for the products of a LoRA layer
 * (`selectLoraForward`, `selectLoraBackward`; over a quantized base `quantConfig`,
 * `selectQLoraForward` and `selectLoraBackward`'s `quant`), so every choice is table-tested. Each product is
 * decided here once; the recorders take the config they are given.
 */
import type { QuantSpec } from '@metal-lora/tensor';
import type { AdapterReport } from '../device';
import {
  type GemmConfig,
  type GemmDevice,
  type GemmOverrides,
  type GemmShape,
  type GemvColsConfig,
  type GemvConfig,
  type GemvRowsConfig,
  gemvColsStream,
  gemvGroups,
  gemvRowBucket,
  gemvRowsStorage,
  gemvRowsStream,
  kSplit,
  type LoraPlan,
  type Product,
  type SgmatConfig,
  subgroupFlushFits,
  type TiledConfig,
  tiledStorageBytes,
  type Vec4Config,
  vec4Aligned,
  vec4Tiles,
  withSplits,
} from './types';

/** Big products: 128×128 on 16×16 threads, 8×8 outputs each, tiles in row-major order. */
export const VEC4_128: Vec4Config = { kind: 'vec4', name: 'vec4-128x128', splits: 1 };
/**
 * The same with the tiles walked four tile rows down before one column across: faster for
 * products other than A·Bᵀ (groups of two, eight and sixteen rows were slower), slower for A·Bᵀ
 * itself, so `bigTile` picks per layout (RESULTS.md, "Raster groups of four tile rows").
 */
export const VEC4_128_G4: Vec4Config = { kind: 'vec4', name: 'vec4-128x128/g4', splits: 1, groupM: 4 };
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

/** The 128×128 tile for a layout: row-major for A·Bᵀ, four-row raster groups otherwise (see {@link VEC4_128_G4}). */
export function bigTile(shape: Pick<GemmShape, 'transA' | 'transB'>): Vec4Config {
  return shape.transB && !shape.transA ? VEC4_128 : VEC4_128_G4;
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

/** K splits toward `target` workgroups from `groups` per split: each split keeps ≥ `minChunk` of K, at most `cap` splits. */
function splitsToward(target: number, groups: number, K: number, minChunk: number, cap = 64): number {
  return Math.max(1, Math.min(cap, Math.ceil(target / groups), Math.floor(K / minChunk)));
}

export function splitsFor(tiles: number, K: number): number {
  // Enough workgroups to fill a large GPU (~256), but each split keeps ≥ 256 of K.
  if (tiles >= 128 || K < 1024) return 1;
  return splitsToward(256, tiles, K, 256, 16);
}

/**
 * The portable gemv's config for few rows of op(A) (M ≤ 16): 32 lanes per column of W for
 * x·Wᵀ; with B as stored ([K, N]) the columns side by side (up to 256) and the rest of the 256
 * threads as lanes along K, so a rank-sized N (U = dy·B at decode, N = r) keeps every thread busy.
 * K split toward 512 workgroups, each lane walking at least 4 of K per split.
 */
function gemvConfig(shape: GemmShape): GemvConfig {
  const { M, N, K, batch } = shape;
  const mr = gemvRowBucket(M);
  const lanes = shape.transB ? 32 : 256 / Math.min(256, 2 ** Math.ceil(Math.log2(Math.max(1, N))));
  const groups = Math.ceil(N / (256 / lanes)) * batch;
  return {
    kind: 'gemv',
    name: shape.transB || lanes === 1 ? `gemv${mr}` : `gemv${mr}/l${lanes}`,
    mr,
    lanes,
    // Batched (a decode step's attention): K splits only past 1024 per split, so a context of
    // a few hundred keys writes C directly instead of paying a reduction's dispatch.
    splits: splitsToward(512, groups, K, batch > 1 ? 1024 : Math.max(128, 4 * lanes)),
  };
}

/**
 * The bandwidth-bound choice, or null: one operand has ≤ 16 rows (decode, or a LoRA rank ≤ 16),
 * the other is read once by gemv-rows or gemv-cols. The settings are those the sweeps found best
 * (`gemm-bench --explore-gemv`, `--explore-lanes`; RESULTS.md, "Decode and
 * gemv"): gemv-cols on 32 column lanes; ranks above 16 run faster on tiles. The fused decode
 * forward uses this gemv-rows choice for its LoRA epilogue.
 */
export function gemvChoice(shape: GemmShape, device: GemmDevice): GemvRowsConfig | GemvColsConfig | null {
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
    // ~256 workgroups, one wave ("Decode and gemv" in RESULTS.md gives the measurements):
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
  const groups = gemvGroups(shape, config);
  // Decode x·Wᵀ (≤ 4 rows streaming W) splits K only where the grid is tiny and K long: within a
  // decode step the reduction's extra dispatch cost more than the split saved (on the H200 a
  // SmolLM2-shaped step's gemvs took 3.1 ms of GPU time unsplit against 5.6 ms split, Llama-3.2-1B's
  // 2.4 against 3.0; RESULTS.md, "Text generation").
  if (rowsStream === 'b' && !manyRows && (groups >= 64 || K < 2048)) return config;
  const target = (many === N && mr <= 4) || (rowsStream && manyRows) ? 512 : 2048;
  return withSplits(config, splitsToward(target, groups, K, 256));
}

/**
 * Picks the GEMM variant for a shape: a pure function of (M, N, K, batch, transposes) and the
 * device's limits, so its choices are table-tested. Rank-shaped dims (≤ 64) get skinny tiles,
 * few rows get the matrix-vector kernel, big products the 128×128 tile, and grids too small to
 * fill the GPU split K.
 */
export function selectGemm(shape: GemmShape, device: GemmDevice): GemmConfig {
  const { M, N, K, batch } = shape;
  const gemv = gemvChoice(shape, device);
  const vec4Ok = vec4Aligned(shape) && device.maxWorkgroupStorage >= 16384 && device.maxInvocations >= 256;
  if (gemv) return gemv;
  // Few rows, batched too: a decode step's attention (q·Kᵀ and P·V per KV head) on the tiled
  // skinny kernel took ~60 µs a product on the H200 (RESULTS.md, "Text generation").
  if (M <= 16 && K >= 64) return gemvConfig(shape);
  const rankShaped = (Math.min(M, N) <= 64 && Math.max(M, N) >= 256) || (Math.min(M, N) <= 256 && Math.max(M, N) >= 1024);
  if (vec4Ok && rankShaped && K >= 64) {
    // Rank-shaped products (x·Aᵀ, dy·B, dyᵀ·T with N = r; Uᵀ·x with M = r) with r > 16, or any
    // r for dy·B. Their time follows the number of tile steps, not the rank, so the tile is sized
    // to the rank on 128 threads: 128×32 / 32×128 up to r = 32 with K split to ~512 workgroups,
    // 128×64 (8×8 per thread) with N = r ≤ 64 to ~256; Uᵀ·x at r = 64 keeps the 64×128 tile on
    // 256 threads, and ranks above 64 the 128×128 tile (RESULTS.md, "Rank-shaped products").
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
  // Subgroup matrices for the products that are neither decode- nor rank-shaped. A configuration
  // that prefetches takes only products every workgroup of which prefetches: edge workgroups
  // stage element by element, several times slower, and a product waits for its slowest
  // workgroup. On the H200, SmolLM2's mixed-precision step (hidden size 576: a column of edge
  // workgroups in most products) took 288.8 ms with every product on subgroup matrices, 104.4
  // with this rule; Qwen2.5's head backward (28 workgroups over K = 151,936) took 19.7 ms on
  // subgroup matrices against 30.1 with the portable kernels' K split (two calls' profiles).
  const sgmat = fittingSgmat(device);
  if (sgmat && Math.min(M, N) > 64 && K >= 16) {
    const { BM, BN } = sgmatTile(sgmat);
    const whole = M % BM === 0 && N % BN === 0;
    if (!sgmat.prefetch || (sgmatPrefetches(shape, sgmat) && whole)) return sgmat;
  }
  let base: TiledConfig;
  if (N <= 16) base = TILED_VARIANTS.skinnyN16;
  else if (N <= 64 && M >= 256)
    base = TILED_VARIANTS.tile64x64; // one column of tiles; split K fills the GPU
  else if (M <= 16) base = TILED_VARIANTS.skinnyM16;
  else if (M * N >= 1024 * 1024 || (M * N >= 256 * 256 && K >= 8192)) {
    // Long reductions (an LM head's dlogits·W over the vocabulary) take the big tile with K split:
    // the 64×64 tile ran such products far slower (RESULTS.md, "The LM head's loss in chunks of rows").
    if (vec4Ok) return withSplits(bigTile(shape), splitsFor(vec4Tiles(VEC4_128, M, N, batch), K));
    base = TILED_VARIANTS.tile128x128;
  } else if (M * N >= 256 * 256) base = TILED_VARIANTS.tile64x64;
  else base = TILED_VARIANTS.tile32x32;
  if (tiledStorageBytes(base) > device.maxWorkgroupStorage || base.wgx * base.wgy > device.maxInvocations) base = TILED_VARIANTS.tile32x32;
  return withSplits(base, splitsFor(Math.ceil(M / (base.wgy * base.tm)) * Math.ceil(N / (base.wgx * base.tn)) * batch, K));
}

/** The config a product runs on: the override where one is set, else the selector's. */
export function chooseGemm(shape: GemmShape, device: GemmDevice, overrides: GemmOverrides = {}): GemmConfig {
  if (overrides.gemm) return overrides.gemm;
  const config = selectGemm(shape, device);
  return overrides.maxSplits && config.splits > overrides.maxSplits ? withSplits(config, overrides.maxSplits) : config;
}

/**
 * The configuration gemm-sgmat.wgsl would use on an adapter for operands of `dtype`, or null: a
 * float configuration with f32 results and dims of at most 16, on an adapter whose subgroup size
 * is fixed and at most 64 (four subgroups make a workgroup). f32 operands need f32 components
 * (f16 ones would round them); f16 operands prefer f16 components (exact for them) and take f32
 * ones otherwise. Each subgroup owns 4 × 4 result tiles (a workgroup tile of 128 × 128 with
 * 16 × 16 matrices, prefetched; 64 × 64 with 8 × 8, staged).
 */
export function subgroupMatrixChoice(
  report: Pick<AdapterReport, 'features' | 'shaderF16' | 'subgroupMatrixConfigs' | 'subgroupMinSize' | 'subgroupMaxSize'>,
  dtype: 'float32' | 'float16',
): SgmatConfig | null {
  if (!report.features.includes('chromium-experimental-subgroup-matrix')) return null;
  const size = report.subgroupMinSize;
  if (size === undefined || size !== report.subgroupMaxSize || size < 4 || size > 64) return null;
  const usable = (component: string) =>
    report.subgroupMatrixConfigs.find(
      (c) => c.componentType === component && c.resultComponentType === 'f32' && [c.M, c.N, c.K].every((d) => d >= 1 && d <= 16),
    );
  const components: ('f32' | 'f16')[] = dtype === 'float16' && report.shaderF16 ? ['f16', 'f32'] : ['f32'];
  for (const component of components) {
    const c = usable(component);
    if (c) {
      // Interior workgroups of 16-wide configurations prefetch (measured 2.8× loading straight
      // from storage on the H200); Apple's 8 × 8 ones stage element by element until measured there.
      return sgmatConfig(component, c.M, c.N, c.K, size, 4, 4, c.M >= 16 && c.N >= 16);
    }
  }
  return null;
}

/**
 * Whether gemm-sgmat.wgsl's interior workgroups prefetch for `shape` under `cfg` (its section
 * PREFETCH: A not transposed, K a whole number of tiles, rows starting on whole 16 bytes, for
 * contiguous operands of the configuration's component type); elsewhere every tile is staged
 * element by element, slower than the portable kernels.
 */
export function sgmatPrefetches(shape: GemmShape, cfg: SgmatConfig): boolean {
  const { BK, e } = sgmatTile(cfg);
  return cfg.prefetch && !shape.transA && shape.K % BK === 0 && shape.K % e === 0 && (shape.transB || shape.N % e === 0);
}

/**
 * Whether gemm-sgmat.wgsl's section QUANT takes a product whose op(B) is MLX affine-quantized
 * (`quant`) under `cfg`: it has no element-wise fallback, so every workgroup must prefetch whole
 * tiles (operands stored as the configuration's component, batch 1, M and N whole tiles, K whole
 * tiles), and each thread's chunk of 32 values of a row of W must be whole words of one group
 * (groups of a multiple of 32; a tile's run along W's rows a multiple of 32).
 */
export function sgmatQuantApplies(shape: GemmShape, cfg: SgmatConfig, quant: QuantSpec): boolean {
  const { BM, BN, BK } = sgmatTile(cfg);
  const stored = (shape.dtype ?? 'float32') === (cfg.component === 'f16' ? 'float16' : 'float32');
  const run = shape.transB ? BK : BN;
  return (
    stored &&
    shape.batch === 1 &&
    sgmatPrefetches(shape, cfg) &&
    shape.M % BM === 0 &&
    shape.N % BN === 0 &&
    shape.M > 0 &&
    quant.groupSize % 32 === 0 &&
    run % 32 === 0 &&
    (shape.transB ? shape.K : shape.N) % quant.groupSize === 0
  );
}

/**
 * gemm-sgmat.wgsl's workgroup tile for `cfg`: BM × BN outputs, BK deep, E elements of the
 * component in 16 bytes; and its staged tiles, in elements: A's [BM][ap], B's [BN][bpT] or
 * [BK][bpN] (bTile, the larger), rows padded by 16 bytes where `padded` (section PREFETCH).
 */
export function sgmatTile(cfg: SgmatConfig, padded = cfg.prefetch) {
  const e = cfg.component === 'f16' ? 8 : 4;
  const [BM, BN, BK] = [2 * cfg.rm * cfg.sm, 2 * cfg.rn * cfg.sn, 2 * cfg.sk];
  const pad = padded ? e : 0;
  const [ap, bpT, bpN] = [BK + pad, BK + pad, BN + pad];
  return { BM, BN, BK, e, ap, bpT, bpN, aTile: BM * ap, bTile: Math.max(BN * bpT, BK * bpN) };
}

/** The device's subgroup-matrix configuration where its workgroup memory fits the device, else null. */
export function fittingSgmat(device: GemmDevice): SgmatConfig | null {
  const { sgmat } = device;
  return sgmat && sgmatStorageBytes(sgmat) <= device.maxWorkgroupStorage ? sgmat : null;
}

/** The workgroup memory gemm-sgmat.wgsl declares for `cfg`: its staged tiles (`sgmatTile`) and one result tile per subgroup. */
export function sgmatStorageBytes(cfg: SgmatConfig): number {
  const { aTile, bTile } = sgmatTile(cfg);
  return (aTile + bTile) * (cfg.component === 'f16' ? 2 : 4) + 4 * cfg.sm * cfg.sn * 4;
}

/** A subgroup-matrix GEMM configuration (benchmarks force other blockings with it). */
export function sgmatConfig(
  component: 'f32' | 'f16',
  sm: number,
  sn: number,
  sk: number,
  subgroupSize: number,
  rm: number,
  rn: number,
  prefetch: boolean,
): SgmatConfig {
  const name = `sgmat-${2 * rm * sm}x${2 * rn * sn}${prefetch ? '/prefetch' : ''} ${component} ${sm}x${sn}x${sk}`;
  return { kind: 'sgmat', name, component, sm, sn, sk, subgroupSize, rm, rn, prefetch, splits: 1 };
}

/** `cfg` where it is the vec4 kernel splitting K for `shape` (batch 1), else null: what a pair of products needs. */
function splitVec4(shape: GemmShape, cfg: GemmConfig): Vec4Config | null {
  if (cfg.kind !== 'vec4' || shape.batch !== 1) return null;
  return kSplit(shape.K, cfg.splits).realSplits > 1 ? cfg : null;
}

/**
 * Whether rows can be appended to op(B)ᵀ (`GemmOperands.concatN`) on `cfg`: the vec4 kernel
 * splitting K, or gemv-rows streaming B with its rows per lane group dividing N (split or not).
 */
function concatApplies(shape: GemmShape, cfg: GemmConfig): boolean {
  if (cfg.kind === 'gemv-rows') return shape.batch === 1 && shape.transB && gemvRowsStream(shape) === 'b' && shape.N % cfg.rows === 0;
  return splitVec4(shape, cfg) !== null;
}

/** Ranks the dual kernel handles: 4..64, multiples of 4 (up to 4 accumulators of each kind per thread). */
export const LORA_DUAL_MAX_RANK = 64;

/** Whether the dual kernel (U and dB from one read of dy) applies: f32, r a multiple of 4 up to 64, N a multiple of 4, and enough rows to fill blocks. */
export function loraDualApplies(M: number, N: number, r: number, dtype: string): boolean {
  return dtype === 'float32' && r % 4 === 0 && r > 0 && r <= LORA_DUAL_MAX_RANK && N % 4 === 0 && M > 16;
}

/** A loraLinear layer: x [M, in], W [out, in], A [r, in], B [out, r]. */
export interface LoraDims {
  M: number;
  inF: number;
  outF: number;
  r: number;
  dtype: string;
}

/** The GEMM shape's dtype for tensors of `dtype` (float16 storage, else float32). */
export const gemmDType = (dtype: string): 'float32' | 'float16' => (dtype === 'float16' ? 'float16' : 'float32');

/** y = x·Wᵀ: the layer's base product. */
export function baseShape({ M, inF, outF, dtype }: LoraDims): GemmShape {
  return { M, N: outF, K: inF, batch: 1, transA: false, transB: true, dtype: gemmDType(dtype) };
}

/**
 * The 128×128 tile that carries the LoRA term is walked row-major: raster groups, which made the
 * plain dy·W faster, made dx with the LoRA prologue slower (RESULTS.md, "raster order").
 */
export const LORA_TILE = VEC4_128;

/**
 * How loraLinear runs on the GPU (table-tested). float32 and float16 (storage only: the kernels
 * compute and accumulate in f32) take the same plans.
 * - `fused`, M > 16: the low-rank product enters the base GEMM as a prologue of the vec4 kernel
 *   (forward: y = x·Wᵀ + s·T·Bᵀ + bias in one pass over y; backward: U and dB from one read of dy
 *   for f32 and r ≤ 8, and dx = dy·W + mask⊙(U·A) likewise, the mask only with dropout). Needs
 *   in, out, rank divisible by 4.
 * - `fused`, M ≤ 16 (decode): the forward's gemv-rows pass over W adds s·T·Bᵀ in its epilogue;
 *   needs a shape gemv-rows can stream (in % 4 = 0, in and out ≥ 64; {@link gemvChoice}).
 *   Without dropout T = x·Aᵀ rides along that pass and s·T·Bᵀ is added by a small pass after it.
 * - `composed`: separate GEMMs accumulating into the same output buffer (odd sizes, and base
 *   products the subgroup-matrix GEMM takes), still without an [M, out] intermediate.
 */
export function loraPlan(dims: LoraDims, device: GemmDevice, overrides: GemmOverrides = {}): LoraPlan {
  const { M, inF, outF, r, dtype } = dims;
  const fusable =
    (dtype === 'float32' || dtype === 'float16') &&
    (M > 16 ? inF % 4 === 0 && outF % 4 === 0 && r % 4 === 0 : gemvChoice(baseShape(dims), device)?.kind === 'gemv-rows');
  const forced = overrides.loraPlan;
  if (forced) return forced === 'fused' && !fusable ? 'composed' : forced;
  // Where the subgroup-matrix GEMM takes the base product, the LoRA term is added by its own pass
  // rather than riding in the portable kernel's prologue.
  const onMatrixUnits = M > 16 && device.sgmat != null && chooseGemm(baseShape(dims), device).kind === 'sgmat';
  return fusable && !onMatrixUnits ? 'fused' : 'composed';
}

/**
 * loraLinear's forward products (T = dropout(x)·Aᵀ and y = x·Wᵀ + bias + s·T·Bᵀ), by plan:
 * - `along` (decode, no dropout): T = x·Aᵀ rides along the pass over W (A's rows appended to W's:
 *   one pass for y = x·Wᵀ + bias and T), then y += s·T·Bᵀ in a small pass over B;
 * - `fused`: T, then y with the LoRA term inside (the vec4 prologue, or gemv-rows' epilogue at decode);
 * - `composed`: T, y = x·Wᵀ + bias, then y += s·T·Bᵀ.
 */
export type LoraForward =
  | { kind: 'along'; y: Product; term: Product }
  | { kind: 'fused'; t: Product; y: Product }
  | { kind: 'composed'; t: Product; y: Product; term: Product };

export function selectLoraForward(dims: LoraDims & { dropout: number }, device: GemmDevice, overrides: GemmOverrides = {}): LoraForward {
  const { M, r } = dims;
  const shape = baseShape(dims);
  const termShape: GemmShape = { ...shape, K: r };
  const tShape: GemmShape = { ...shape, N: r };
  const fused = loraPlan(dims, device, overrides) === 'fused';
  if (M <= 16 && dims.dropout === 0 && fused) {
    const along = chooseGemm(shape, device, overrides);
    if (concatApplies(shape, along)) {
      const term: GemmConfig =
        r % 4 === 0
          ? { kind: 'gemv-rows', name: 'gemv-rows/8 lanes', lanes: 8, rows: 1, mr: gemvRowBucket(M), unroll: 1, splits: 1 }
          : chooseGemm(termShape, device, overrides);
      return { kind: 'along', y: { shape, config: along }, term: { shape: termShape, config: term } };
    }
  }
  const t = { shape: tShape, config: chooseGemm(tShape, device, overrides) };
  if (fused) {
    // The plan checked that gemvChoice picks gemv-rows at decode; named here so a forced config cannot displace it.
    const config = M > 16 ? LORA_TILE : gemvChoice(shape, device)!;
    return { kind: 'fused', t, y: { shape, config } };
  }
  return {
    kind: 'composed',
    t,
    y: { shape, config: chooseGemm(shape, device, overrides) },
    term: { shape: termShape, config: chooseGemm(termShape, device, overrides) },
  };
}

/** The gradients loraLinearBackward is asked for. */
export interface LoraNeeds {
  needX: boolean;
  needA: boolean;
  needB: boolean;
  needWeight: boolean;
  needBias: boolean;
}

/**
 * loraLinear's backward products, each decided once:
 * - `u`: U = s·dy·B [M, r] (for dx and dA) and dB = s·dyᵀ·T from one read of dy (`dual`), or U as a product;
 * - `dx`: dy·W with U·A as the vec4 prologue (`fused`), or U·A then dy·W accumulated onto it
 *   (with `quant`, dy·W over W's packed words: {@link quantConfig}, {@link quantLoraFuses});
 * - `dA`: Uᵀ·x, paired with dBᵀ = s·Tᵀ·dy in one dispatch where in = out (`pair`), or alone;
 * - `dB`, `dWeight`, `dBias`: plain products (dB absent where the dual or the pair makes it).
 */
export interface LoraBackward {
  u: 'dual' | Product | null;
  dx: { fused: Product } | { term: Product; base: Product } | null;
  dA: { pair: Product } | Product | null;
  dB: Product | null;
  dWeight: Product | null;
  dBias: Product | null;
}

export function selectLoraBackward(
  dims: LoraDims,
  needs: LoraNeeds,
  device: GemmDevice,
  overrides: GemmOverrides = {},
  quant: QuantSpec | null = null,
): LoraBackward {
  const { M, inF, outF, r, dtype } = dims;
  const product = (M: number, N: number, K: number, transA: boolean): Product => {
    const shape: GemmShape = { M, N, K, batch: 1, transA, transB: false, dtype: gemmDType(dtype) };
    return { shape, config: chooseGemm(shape, device, overrides) };
  };
  const fused = loraPlan(dims, device, overrides) === 'fused';
  const needU = needs.needX || needs.needA;
  // The dual kernel is used up to r = 8: above it the two GEMMs on rank-sized tiles are faster
  // (RESULTS.md, "one read of dy").
  const dual = needU && needs.needB && fused && r <= 8 && loraDualApplies(M, outF, r, dtype);
  const u = dual ? 'dual' : needU ? product(M, r, outF, false) : null;
  let dx: LoraBackward['dx'] = null;
  const dxShape: GemmShape = { M, N: inF, K: outF, batch: 1, transA: false, transB: false, dtype: gemmDType(dtype) };
  if (needs.needX && quant) {
    // Over a quantized base dy·W reads the packed words: fused where quantLoraFuses says, whatever
    // the float plan (its base product may be on subgroup matrices where the quantized one is
    // not, or the other way round).
    const config = quantConfig(dxShape, device, quant, overrides);
    dx = quantLoraFuses(dxShape, r, config, overrides)
      ? { fused: { shape: dxShape, config: LORA_TILE } }
      : { term: product(M, inF, r, false), base: { shape: dxShape, config } };
  } else if (needs.needX && fused && M > 16) {
    // dx = dy·W + mask⊙(U·A)/(1-p) in one GEMM: U·A is the prologue (masked in registers with
    // dropout), so no [M, in] intermediate exists, and it is faster than U·A written into dx with
    // dy·W accumulated on top, which also reads dx back (RESULTS.md, "dx through the prologue").
    dx = { fused: { shape: dxShape, config: LORA_TILE } };
  } else if (needs.needX) dx = { term: product(M, inF, r, false), base: product(M, inF, outF, false) };
  // dA = Uᵀ·dropout(x) and dB = s·dyᵀ·T: where in = out the two are one pair of products of the
  // same shape (dA and dBᵀ = s·Tᵀ·dy, r × in, K = M) in one dispatch and one reduction, which
  // writes dB transposed. The pair is two products' workgroups in one dispatch: half the
  // selector's K splits for one keeps the workgroup count, which measured faster than the full
  // count (RESULTS.md, "The pair at half the selector's K splits").
  const grad = product(r, inF, M, true);
  const pairBase = needs.needA && needs.needB && !dual && inF === outF && fused ? splitVec4(grad.shape, grad.config) : null;
  const dA = !needs.needA
    ? null
    : pairBase
      ? { pair: { shape: grad.shape, config: withSplits(pairBase, Math.max(2, Math.floor(pairBase.splits / 2))) } }
      : grad;
  return {
    u,
    dx,
    dA,
    dB: needs.needB && !dual && !pairBase ? product(outF, r, M, true) : null,
    dWeight: needs.needWeight ? product(outF, inF, M, true) : null,
    // Column sums of dy as a 1-row product: onesᵀ·dy.
    dBias: needs.needBias ? product(1, outF, M, false) : null,
  };
}

/**
 * The kernel for a quantized B: the subgroup-matrix GEMM's section QUANT where the backend's
 * configuration takes the product whole ({@link sgmatQuantApplies}: mixed-precision training's
 * products on the H200); else gemm-vec4's 128×128 tiles (K split as {@link splitsFor} says) where
 * the product is large and aligned (K, and N for dy·W, multiples of 4: every MLX group size makes
 * K one), else gemm-tiled, one 8-row block for the few rows of decode or 64×64 tiles.
 */
export function quantConfig(shape: GemmShape, device: GemmDevice, quant: QuantSpec, overrides: GemmOverrides = {}): GemmConfig {
  const sgmat = fittingSgmat(device);
  if (sgmat && sgmatQuantApplies(shape, sgmat, quant)) return sgmat;
  if (shape.M >= 64 && vec4Aligned(shape)) {
    // K split where the tiles are few and K long, as for float B (an LM head's dlogits·W over the
    // vocabulary: unsplit it took 25 ms a chunk of Llama-3.2-1B's on the H200), capped as
    // `overrides.maxSplits` caps the selector's.
    const base: Vec4Config = { kind: 'vec4', name: 'qmm-vec4-128x128', splits: 1 };
    const splits = splitsFor(vec4Tiles(base, shape.M, shape.N, 1), shape.K);
    return withSplits(base, overrides.maxSplits ? Math.min(splits, overrides.maxSplits) : splits);
  }
  return shape.M <= 8
    ? { kind: 'tiled', name: 'qmm-8x64', tm: 1, tn: 2, tk: 32, wgx: 32, wgy: 8, splits: 1 }
    : { kind: 'tiled', name: 'qmm-64x64', tm: 4, tn: 4, tk: 16, wgx: 16, wgy: 16, splits: 1 };
}

/**
 * Whether QLoRA's base product `shape` (y = x·Wᵀ, or dx = dy·W), which {@link quantConfig} gave
 * `config`, takes the vec4 kernel with the LoRA term as its prologue instead (M > 16; in, out and
 * rank multiples of 4): not where the subgroup-matrix GEMM takes it (as over a float base, the
 * term is then a product of its own), nor under a forced `composed` plan.
 */
export function quantLoraFuses(shape: GemmShape, r: number, config: GemmConfig, overrides: GemmOverrides = {}): boolean {
  const { M, N, K } = shape;
  return M > 16 && N % 4 === 0 && K % 4 === 0 && r % 4 === 0 && overrides.loraPlan !== 'composed' && config.kind !== 'sgmat';
}

/**
 * loraLinear's forward products over a quantized base (QLoRA), W's packing `quant`: T =
 * dropout(x)·Aᵀ, then y = x·Wᵀ + bias + s·T·Bᵀ in one vec4 GEMM where {@link quantLoraFuses}
 * (`fused`), else y = x·Wᵀ on {@link quantConfig}'s config (at decode, M ≤ 16 at 2, 4 or 8 bits
 * and M ≤ 4 at 3, 5 or 6, the recorder streams W through qgemv.wgsl instead) and the term and bias
 * added onto it.
 */
export function selectQLoraForward(
  dims: LoraDims,
  device: GemmDevice,
  quant: QuantSpec,
  overrides: GemmOverrides = {},
): Extract<LoraForward, { kind: 'fused' | 'composed' }> {
  const shape = baseShape(dims);
  const tShape: GemmShape = { ...shape, N: dims.r };
  const termShape: GemmShape = { ...shape, K: dims.r };
  const t = { shape: tShape, config: chooseGemm(tShape, device, overrides) };
  const config = quantConfig(shape, device, quant, overrides);
  if (quantLoraFuses(shape, dims.r, config, overrides)) return { kind: 'fused', t, y: { shape, config: LORA_TILE } };
  return { kind: 'composed', t, y: { shape, config }, term: { shape: termShape, config: chooseGemm(termShape, device, overrides) } };
}
