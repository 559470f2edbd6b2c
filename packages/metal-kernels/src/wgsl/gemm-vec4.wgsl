// gemm-vec4.wgsl: C = α·op(A)·op(B) (+ β·C) (+ bias) for the large, aligned products (the base
// GEMM of every LoRA layer): f32, or f16 storage (T = f16, with `shader-f16`) with f32 arithmetic
// and accumulation throughout (tiles in workgroup memory, accumulators and split-K partials stay
// f32; values are widened as they are loaded and rounded once as C is stored). BM×BN outputs
// per workgroup of WGX×WGY threads (text constants: BM ∈ {16, 32, 64, 128}, BN ∈ {32, 64, 128},
// WGX ∈ {8, 16, 32}, WGY ∈ {4, 8, 16}, at most 256 threads, BM and BN at most the thread count,
// BM / (4·WGY) and BN / (4·WGX) each 1 or 2), up to 8×8 per thread held as up to 16 vec4
// accumulators; A and B tiles of 8 (k) × BM / BN pass through workgroup memory as vec4,
// double-buffered, with the next tile prefetched into registers while the current one is
// multiplied (one barrier per k-step).
// 128×128 is the big-GEMM tile; the rank-shaped products (x·Aᵀ, dy·B, dyᵀ·T with N = r; Uᵀ·x with
// M = r) take tiles sized to the rank (128×32 / 32×128 and 128×64 on 128 threads, 64×128 on 256),
// since their time follows the number of tile steps and a 128-wide tile is mostly padding there;
// decode with 9..16 rows takes 16×128 on 32×4 threads, K split.
// A half-size dimension simply drops the second half of each thread's rows (or columns): the
// statements for it sit behind `if (HM == 2u)` / `if (HN == 2u)` on constants and compile away.
// With 8 threads on a side (128 threads), a tile of 2·BM > 128 vec4 loads two per thread
// (sections A2, B2).
//   op(A) is [M, K]: A stored [M, K], or [K, M] when TRANS_A.
//   op(B) is [K, N]: B stored [K, N], or [N, K] when TRANS_B (x·Wᵀ with W [N, K]).
// Alignment (checked by the host): the contiguous dim of each stored operand is a multiple of 4
//   (K for A / Bᵀ, M for Aᵀ, N for B) and so is N; M, N, K need not be multiples of the tile.
//
// Fused LoRA prologue (r > 0, batch 1): before the main K loop, split 0 initializes its
//   accumulators with the low-rank product L = la·op(lb) (la [M, r]; lb [N, r] when lb_trans(),
//   else [r, N]), run through the same workgroup tiles as the main product, scaled by lora_scale
//   (folded into la as it is loaded) or, with LORA_MASK, in registers by lora_scale and the LoRA
//   dropout mask of output element (m, n) (index m·N + n, lib/counter-hash.wgsl as in dropout.wgsl)
//   over (1 - p). The main product then accumulates on top, so C = α·(op(A)·op(B) + s·mask⊙L) + β·C + bias
//   is written once and no [M, N] intermediate exists. Forward: la = T, lb = B (trans), A = x,
//   B = W (trans), lora_scale = s. Backward dx: la = U = s·dy·B, lb = A (not trans), A = dy,
//   B = W (not trans), lora_scale = 1, with the forward pass's dropout mask.
//
// Bindings (group 0):
//   0  a     storage, read        array<vec4<T>>
//   1  b     storage, read        array<vec4<T>>
//   2  bias  storage, read        [N] T (a dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  [batch · splits][M, N] TC (T, or the f32 workspace when SPLIT = 1)
//   With the text flag VEC_OUT = 1 (N % 4 = 0) both are bound as vec4 and each thread
//   stores whole vec4s of C; with VEC_OUT = 0 (N odd, e.g. a vocabulary projection) it stores
//   scalars.
//   4  la    storage, read        [M, r] vec4<T> (LORA only)
//   5  lb    storage, read        [N, r] or [r, N] vec4<T> (LORA only)
//   6  p     uniform (8 with QUANT) { M, N, K, batch, a_batch_stride, b_batch_stride, k_chunk, splits, alpha, beta,
//                      r, lora_trans_b, lora_scale, dropout_on, dropout_seed, dropout_threshold,
//                      dropout_keep_scale, n1: the columns from B under CONCAT_N } (batch strides in elements, multiples of 4; r % 4 = 0)
// Dispatch: (ceil(N / BN), ceil(M / BM), batch · splits) workgroups of WGX × WGY threads.
//   Split s covers k in [s·k_chunk, min(K, (s+1)·k_chunk)) (k_chunk a multiple of 8) and, with
//   SPLIT = 1, writes raw partial sums for gemm-splitk-reduce.wgsl.
// Workgroup memory: 2 buffers × (8·BM + 8·BN) f32 ≤ 16 KiB (the portable limit).
// The LoRA prologue is only used (and tested) with BM = BN = 128 and 16 × 16 threads.
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, ACCUMULATE, SPLIT (0/1); with LORA also LORA_TRANS_B
//   (0, 1, or 2 for the uniform's lora_trans_b; below).
// Text section RASTER with GROUP_M: the tiles' raster order (tile_of below). Section PAIR: two
//   products of one shape in one dispatch as batch entries 0 and 1, the second reading bindings
//   4 and 5 (a2, b2; batch strides 0, SPLIT = 1, no LORA): the LoRA backward's dA = Uᵀ·x and
//   dBᵀ = Tᵀ·dy, which gemm-splitk-reduce.wgsl (PAIR_T) then writes to dA and, transposed, dB.
//   Section CONCAT_N (TRANS_B, SPLIT = 1): the columns n1..N of C come from a second matrix B2
//   (binding 5) stored like B: the decode LoRA forward's T = x·Aᵀ computed with x·Wᵀ, which
//   gemm-splitk-reduce.wgsl (CONCAT_C) then writes to y and T.
// Text types: T (f32 or f16; ENABLE is `enable f16;` for f16), TC (C's element type).
// Section QUANT (text constants BITS, GROUP; batch 1, no PAIR or CONCAT_N; with or without LORA):
//   op(B) is an MLX affine-quantized matrix, its packed u32 words at binding 1 and its scales and
//   biases at bindings 6 and 7 (the uniform moves to 8); each vec4 of the B tile is unpacked (one
//   word read, one group) and scaled and biased as it is loaded. With LORA: QLoRA's fused term.
// Text flags: VEC_OUT (above); LORA compiles the LoRA prologue and binds la, lb (without it the
//   kernel is the plain GEMM and bindings 4, 5 are absent); LORA_MASK (dx with dropout) adds the
//   mask's code, which even behind a runtime check slowed the forward GEMM (RESULTS.md, "The mask's code out of the prologue"),
//   so the unmasked prologue instead folds lora_scale into la as it loads it.

{{ENABLE}}

const BM: u32 = {{BM}}u;
const BN: u32 = {{BN}}u;
const BM4: u32 = BM / 4u;
// The workgroup is WGX × WGY threads (text constants); each thread owns 4 rows at
// ty·4 and, when HM = 2, 4 more at WGY·4 + ty·4 (likewise HN for its columns).
const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const THREADS: u32 = WGX * WGY;
const HM: u32 = BM / (WGY * 4u);
const HN: u32 = BN / (WGX * 4u);
const BN4: u32 = BN / 4u;
const TK: u32 = 8u;

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
override SPLIT: u32 = 0u;

struct Params {
{{>gemm-uniform}}
  r: u32, lora_trans_b: u32,
  lora_scale: f32, dropout_on: u32, dropout_seed: u32, dropout_threshold: u32,
  dropout_keep_scale: f32, n1: u32,
}

@group(0) @binding(0) var<storage, read> a: array<vec4<{{T}}>>;
{{^QUANT}}
@group(0) @binding(1) var<storage, read> b: array<vec4<{{T}}>>;
{{/QUANT}}
{{#QUANT}}
{{>gemm-quant}}
{{/QUANT}}
{{#VEC_OUT}}
@group(0) @binding(2) var<storage, read> bias: array<vec4<{{T}}>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<{{TC}}>>;
{{/VEC_OUT}}
{{^VEC_OUT}}
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{TC}}>;
{{>gemm-epilogue}}
{{/VEC_OUT}}
{{#PAIR}}
// The second product of a pair (section PAIR): batch entry 1 reads these instead of a and b.
@group(0) @binding(4) var<storage, read> a2: array<vec4<{{T}}>>;
@group(0) @binding(5) var<storage, read> b2: array<vec4<{{T}}>>;
var<private> second: bool;
{{/PAIR}}
{{#CONCAT_N}}
// Rows n1..N of op(B)ᵀ come from here (section CONCAT_N): B2 [N - n1, K].
@group(0) @binding(5) var<storage, read> b2: array<vec4<{{T}}>>;
{{/CONCAT_N}}
{{#LORA}}
// lb's layout: 0 ([r, N]) or 1 ([N, r]) fixed when the pipeline is compiled, so the prologue
// holds one of its two loads and stores; 2: read from the uniform's lora_trans_b, both compiled.
// Which runs faster differs by variant (dx fixed, the forward from the uniform; RESULTS.md,
// "LoRA prologue: lb's layout"); the host picks per layout.
override LORA_TRANS_B: u32 = 2u;

fn lb_trans() -> bool {
  if (LORA_TRANS_B == 2u) { return p.lora_trans_b == 1u; }
  return LORA_TRANS_B == 1u;
}
@group(0) @binding(4) var<storage, read> la: array<vec4<{{T}}>>;
@group(0) @binding(5) var<storage, read> lb: array<vec4<{{T}}>>;
{{/LORA}}
{{^QUANT}}
@group(0) @binding(6) var<uniform> p: Params;
{{/QUANT}}
{{#QUANT}}
@group(0) @binding(8) var<uniform> p: Params;
{{/QUANT}}

// [buffer][k][BM / 4]: row k of a tile holds BM m values as BM / 4 vec4 (likewise B with BN n).
var<workgroup> As: array<array<vec4<f32>, TK * BM4>, 2>;
var<workgroup> Bs: array<array<vec4<f32>, TK * BN4>, 2>;

// Vec4 number t < 2·BM (2·BN) of the A (B) tile per k-step: thread t loads it, and thread t loads
// number t + THREADS too where the tile has more vec4 than the workgroup has threads. For a
// k-contiguous operand it is 4 values of k at row t/2, k offset (t%2)·4; for an m- or
// n-contiguous one, 4 values of m/n at k = t / (BM/4).
fn load_a(t: u32, row0: u32, k0: u32, k_end: u32, base: u32) -> vec4<f32> {
  if (t >= 2u * BM) { return vec4<f32>(0.0); }
  if (TRANS_A == 1u) {
    let k = k0 + t / BM4;
    let m = row0 + (t % BM4) * 4u;
    if (k < k_end && m < p.M) {
{{#PAIR}}
      if (second) { return vec4<f32>(a2[(base + k * p.M + m) / 4u]); }
{{/PAIR}}
      return vec4<f32>(a[(base + k * p.M + m) / 4u]);
    }
  } else {
    let m = row0 + t / 2u;
    let k = k0 + (t % 2u) * 4u;
    if (m < p.M && k < k_end) {
{{#PAIR}}
      if (second) { return vec4<f32>(a2[(base + m * p.K + k) / 4u]); }
{{/PAIR}}
      return vec4<f32>(a[(base + m * p.K + k) / 4u]);
    }
  }
  return vec4<f32>(0.0);
}

fn load_b(t: u32, col0: u32, k0: u32, k_end: u32, base: u32) -> vec4<f32> {
  if (t >= 2u * BN) { return vec4<f32>(0.0); }
  if (TRANS_B == 1u) {
    let n = col0 + t / 2u;
    let k = k0 + (t % 2u) * 4u;
    if (n < p.N && k < k_end) {
{{#QUANT}}
      return weight_vec4(n, k);
{{/QUANT}}
{{^QUANT}}
{{#PAIR}}
      if (second) { return vec4<f32>(b2[(base + n * p.K + k) / 4u]); }
{{/PAIR}}
{{#CONCAT_N}}
      if (n >= p.n1) { return vec4<f32>(b2[((n - p.n1) * p.K + k) / 4u]); }
{{/CONCAT_N}}
      return vec4<f32>(b[(base + n * p.K + k) / 4u]);
{{/QUANT}}
    }
  } else {
    let k = k0 + t / BN4;
    let n = col0 + (t % BN4) * 4u;
    if (k < k_end && n < p.N) {
{{#QUANT}}
      return weight_vec4(k, n);
{{/QUANT}}
{{^QUANT}}
{{#PAIR}}
      if (second) { return vec4<f32>(b2[(base + k * p.N + n) / 4u]); }
{{/PAIR}}
      return vec4<f32>(b[(base + k * p.N + n) / 4u]);
{{/QUANT}}
    }
  }
  return vec4<f32>(0.0);
}

// `m_contig`: the loaded vec4 holds 4 values of m (A stored [K, M]); otherwise 4 values of k.
fn store_a(buf: u32, t: u32, v: vec4<f32>, m_contig: bool) {
  if (t >= 2u * BM) { return; }
  if (m_contig) {
    As[buf][t] = v;
  } else {
    // Four k values of one row m: scatter to four k rows of the tile.
    let m = t / 2u;
    let k = (t % 2u) * 4u;
    As[buf][(k + 0u) * BM4 + m / 4u][m % 4u] = v.x;
    As[buf][(k + 1u) * BM4 + m / 4u][m % 4u] = v.y;
    As[buf][(k + 2u) * BM4 + m / 4u][m % 4u] = v.z;
    As[buf][(k + 3u) * BM4 + m / 4u][m % 4u] = v.w;
  }
}

// `k_contig`: the loaded vec4 holds 4 values of k (B stored [N, K]); otherwise 4 values of n.
fn store_b(buf: u32, t: u32, v: vec4<f32>, k_contig: bool) {
  if (t >= 2u * BN) { return; }
  if (k_contig) {
    let n = t / 2u;
    let k = (t % 2u) * 4u;
    Bs[buf][(k + 0u) * BN4 + n / 4u][n % 4u] = v.x;
    Bs[buf][(k + 1u) * BN4 + n / 4u][n % 4u] = v.y;
    Bs[buf][(k + 2u) * BN4 + n / 4u][n % 4u] = v.z;
    Bs[buf][(k + 3u) * BN4 + n / 4u][n % 4u] = v.w;
  } else {
    Bs[buf][t] = v;
  }
}

// Rows of this thread: ty·4 + {0..3} and (HM = 2) WGY·4 + ty·4 + {0..3}; columns likewise with
// tx, WGX and HN. The two halves keep a warp's workgroup-memory reads on distinct banks.
fn row_of(lid: vec3u, i: u32) -> u32 { return select(lid.y * 4u + i, WGY * 4u + lid.y * 4u + (i - 4u), i >= 4u); }
fn col_of(lid: vec3u, h: u32, j: u32) -> u32 { return h * WGX * 4u + lid.x * 4u + j; }

{{#LORA}}
{{>counter-hash}}

fn lora_factor(m: u32, n: u32) -> f32 {
  if (p.dropout_on == 0u) { return p.lora_scale; }
  let bits = random_bits(p.dropout_seed, m * p.N + n);
  return select(0.0, p.lora_scale * p.dropout_keep_scale, (bits >> 8u) >= p.dropout_threshold);
}

fn factors(m: u32, n0: u32) -> vec4<f32> {
  return vec4<f32>(lora_factor(m, n0), lora_factor(m, n0 + 1u), lora_factor(m, n0 + 2u), lora_factor(m, n0 + 3u));
}

// The LoRA prologue's tiles, loaded like the main ones: la [M, r] is k-contiguous; lb is [N, r]
// (k-contiguous) when lb_trans(), else [r, N].
fn load_la(t: u32, row0: u32, k0: u32) -> vec4<f32> {
  let m = row0 + t / 2u;
  let k = k0 + (t % 2u) * 4u;
  if (t < 2u * BM && m < p.M && k < p.r) { return vec4<f32>(la[(m * p.r + k) / 4u]); }
  return vec4<f32>(0.0);
}

fn load_lb(t: u32, col0: u32, k0: u32) -> vec4<f32> {
  if (t >= 2u * BN) { return vec4<f32>(0.0); }
  if (lb_trans()) {
    let n = col0 + t / 2u;
    let k = k0 + (t % 2u) * 4u;
    if (n < p.N && k < p.r) { return vec4<f32>(lb[(n * p.r + k) / 4u]); }
  } else {
    let k = k0 + t / BN4;
    let n = col0 + (t % BN4) * 4u;
    if (k < p.r && n < p.N) { return vec4<f32>(lb[(k * p.N + n) / 4u]); }
  }
  return vec4<f32>(0.0);
}
{{/LORA}}

{{#RASTER}}
// Raster order of the output tiles (section RASTER; without it workgroup x runs along N and y
// along M): GROUP_M tile rows are walked down before one tile column across, so the workgroups
// resident together share fewer, taller panels of A and B in L2.
const GROUP_M: u32 = {{GROUP_M}}u;

// The output tile (column, row) of workgroup `wid` (the grid is ceil(N / BN) × ceil(M / BM)).
fn tile_of(wid: vec3u) -> vec2u {
  let nx = (p.N + BN - 1u) / BN;
  let ny = (p.M + BM - 1u) / BM;
  let id = wid.y * nx + wid.x;
  let per_group = GROUP_M * nx;
  let first = (id / per_group) * GROUP_M;
  let rows = min(GROUP_M, ny - first);
  let i = id % per_group;
  return vec2u(i / rows, first + i % rows);
}
{{/RASTER}}

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
{{#RASTER}}
  let tile = tile_of(wid);
  let row0 = tile.y * BM;
  let col0 = tile.x * BN;
{{/RASTER}}
{{^RASTER}}
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
{{/RASTER}}
  let split = wid.z % p.splits;
  let batch = wid.z / p.splits;
{{#PAIR}}
  second = batch == 1u;
{{/PAIR}}
  let t = lid.y * WGX + lid.x;
  let a_base = batch * p.a_batch_stride;
  let b_base = batch * p.b_batch_stride;
  let k_begin = split * p.k_chunk;
  let k_end = min(p.K, k_begin + p.k_chunk);

  var acc: array<vec4<f32>, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = vec4<f32>(0.0); }

{{#LORA}}
  if (split == 0u && p.r > 0u) {
{{#LORA_MASK}}
    let la_scale = 1.0;
{{/LORA_MASK}}
{{^LORA_MASK}}
    let la_scale = p.lora_scale;
{{/LORA_MASK}}
    // The LoRA term is the accumulators' initial value: la·op(lb) through the same workgroup
    // tiles and multiply-adds as the main loop (8 of r per step; BM = BN = 128), then scaled and
    // masked in registers; the main loop below is the plain GEMM's. (Two earlier versions were
    // slower: the LoRA steps as a virtual k range inside the main loop, with a phase check per
    // step; and la and lb read straight from memory here: the kernel's register count is set by
    // its busiest point. RESULTS.md, "the LoRA prologue".) Constant
    // accumulator indices only: indexing acc with a loop variable sends it to local memory.
    for (var k0 = 0u; k0 < p.r; k0 += TK) {
      store_a(0u, t, load_la(t, row0, k0) * la_scale, false);
      store_b(0u, t, load_lb(t, col0, k0), lb_trans());
      workgroupBarrier();
      for (var kk = 0u; kk < TK; kk++) {
        let a0 = As[0][kk * BM4 + lid.y];
        let a1 = As[0][kk * BM4 + 16u + lid.y];
        let b0 = Bs[0][kk * BN4 + lid.x];
        let b1 = Bs[0][kk * BN4 + 16u + lid.x];
        acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
        acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
        acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
        acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
        acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
        acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
        acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
        acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
        acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
      }
      workgroupBarrier();
    }
{{#LORA_MASK}}
    acc[0] *= factors(row0 + row_of(lid, 0u), col0 + col_of(lid, 0u, 0u));
    acc[1] *= factors(row0 + row_of(lid, 0u), col0 + col_of(lid, 1u, 0u));
    acc[2] *= factors(row0 + row_of(lid, 1u), col0 + col_of(lid, 0u, 0u));
    acc[3] *= factors(row0 + row_of(lid, 1u), col0 + col_of(lid, 1u, 0u));
    acc[4] *= factors(row0 + row_of(lid, 2u), col0 + col_of(lid, 0u, 0u));
    acc[5] *= factors(row0 + row_of(lid, 2u), col0 + col_of(lid, 1u, 0u));
    acc[6] *= factors(row0 + row_of(lid, 3u), col0 + col_of(lid, 0u, 0u));
    acc[7] *= factors(row0 + row_of(lid, 3u), col0 + col_of(lid, 1u, 0u));
    acc[8] *= factors(row0 + row_of(lid, 4u), col0 + col_of(lid, 0u, 0u));
    acc[9] *= factors(row0 + row_of(lid, 4u), col0 + col_of(lid, 1u, 0u));
    acc[10] *= factors(row0 + row_of(lid, 5u), col0 + col_of(lid, 0u, 0u));
    acc[11] *= factors(row0 + row_of(lid, 5u), col0 + col_of(lid, 1u, 0u));
    acc[12] *= factors(row0 + row_of(lid, 6u), col0 + col_of(lid, 0u, 0u));
    acc[13] *= factors(row0 + row_of(lid, 6u), col0 + col_of(lid, 1u, 0u));
    acc[14] *= factors(row0 + row_of(lid, 7u), col0 + col_of(lid, 0u, 0u));
    acc[15] *= factors(row0 + row_of(lid, 7u), col0 + col_of(lid, 1u, 0u));
{{/LORA_MASK}}
  }
{{/LORA}}

  var ra = load_a(t, row0, k_begin, k_end, a_base);
  var rb = load_b(t, col0, k_begin, k_end, b_base);
  store_a(0u, t, ra, TRANS_A == 1u);
  store_b(0u, t, rb, TRANS_B == 1u);
{{#A2}}
  // Fewer threads than vec4 in the A tile (2·BM): a second one each.
  var ra2 = load_a(t + THREADS, row0, k_begin, k_end, a_base);
  store_a(0u, t + THREADS, ra2, TRANS_A == 1u);
{{/A2}}
{{#B2}}
  var rb2 = load_b(t + THREADS, col0, k_begin, k_end, b_base);
  store_b(0u, t + THREADS, rb2, TRANS_B == 1u);
{{/B2}}
  workgroupBarrier();

  var buf = 0u;
  for (var k0 = k_begin; k0 < k_end; k0 += TK) {
    let next = k0 + TK;
    let more = next < k_end;
    if (more) {
      ra = load_a(t, row0, next, k_end, a_base);
      rb = load_b(t, col0, next, k_end, b_base);
{{#A2}}
      ra2 = load_a(t + THREADS, row0, next, k_end, a_base);
{{/A2}}
{{#B2}}
      rb2 = load_b(t + THREADS, col0, next, k_end, b_base);
{{/B2}}
    }
    for (var kk = 0u; kk < TK; kk++) {
      let a0 = As[buf][kk * BM4 + lid.y];
      let b0 = Bs[buf][kk * BN4 + lid.x];
      acc[0] = fma(vec4<f32>(a0.x), b0, acc[0]);
      acc[2] = fma(vec4<f32>(a0.y), b0, acc[2]);
      acc[4] = fma(vec4<f32>(a0.z), b0, acc[4]);
      acc[6] = fma(vec4<f32>(a0.w), b0, acc[6]);
      if (HN == 2u) {
        let b1 = Bs[buf][kk * BN4 + WGX + lid.x];
        acc[1] = fma(vec4<f32>(a0.x), b1, acc[1]);
        acc[3] = fma(vec4<f32>(a0.y), b1, acc[3]);
        acc[5] = fma(vec4<f32>(a0.z), b1, acc[5]);
        acc[7] = fma(vec4<f32>(a0.w), b1, acc[7]);
      }
      if (HM == 2u) {
        let a1 = As[buf][kk * BM4 + WGY + lid.y];
        acc[8] = fma(vec4<f32>(a1.x), b0, acc[8]);
        acc[10] = fma(vec4<f32>(a1.y), b0, acc[10]);
        acc[12] = fma(vec4<f32>(a1.z), b0, acc[12]);
        acc[14] = fma(vec4<f32>(a1.w), b0, acc[14]);
        if (HN == 2u) {
          let b1 = Bs[buf][kk * BN4 + WGX + lid.x];
          acc[9] = fma(vec4<f32>(a1.x), b1, acc[9]);
          acc[11] = fma(vec4<f32>(a1.y), b1, acc[11]);
          acc[13] = fma(vec4<f32>(a1.z), b1, acc[13]);
          acc[15] = fma(vec4<f32>(a1.w), b1, acc[15]);
        }
      }
    }
    if (more) {
      buf = 1u - buf;
      store_a(buf, t, ra, TRANS_A == 1u);
      store_b(buf, t, rb, TRANS_B == 1u);
{{#A2}}
      store_a(buf, t + THREADS, ra2, TRANS_A == 1u);
{{/A2}}
{{#B2}}
      store_b(buf, t + THREADS, rb2, TRANS_B == 1u);
{{/B2}}
    }
    workgroupBarrier();
  }

  let c_base = (batch * p.splits + split) * p.M * p.N;
  for (var i = 0u; i < 4u * HM; i++) {
    let m = row0 + row_of(lid, i);
    if (m >= p.M) { continue; }
    for (var h = 0u; h < HN; h++) {
      let v4 = acc[i * 2u + h];
{{#VEC_OUT}}
      // 4 consecutive columns n..n+3 with n % 4 = 0 and N % 4 = 0: one whole vec4 of C, stored
      // at once (scalar stores left a K = 8 product, the composed LoRA term, bound by its writes).
      let n = col0 + col_of(lid, h, 0u);
      if (n >= p.N) { continue; }
      let o = (c_base + m * p.N + n) / 4u;
      if (SPLIT == 1u) {
        c[o] = vec4<{{TC}}>(v4);
      } else {
        var v = p.alpha * v4;
        if (ACCUMULATE == 1u) { v += p.beta * vec4<f32>(c[o]); }
        if (HAS_BIAS == 1u) { v += vec4<f32>(bias[n / 4u]); }
        c[o] = vec4<{{TC}}>(v);
      }
{{/VEC_OUT}}
{{^VEC_OUT}}
      for (var j = 0u; j < 4u; j++) {
        let n = col0 + col_of(lid, h, j);
        if (n >= p.N) { continue; }
        let o = c_base + m * p.N + n;
        if (SPLIT == 1u) {
          c[o] = {{TC}}(v4[j]);
        } else {
          c[o] = {{TC}}(epilogue(o, n, v4[j]));
        }
      }
{{/VEC_OUT}}
    }
  }
}
