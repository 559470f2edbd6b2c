// gemm-tiled.wgsl: C = α·op(A)·op(B) (+ β·C) (+ bias), batched; register-blocked tiles.
//   op(A) is [M, K]: A stored [M, K], or [K, M] when TRANS_A.
//   op(B) is [K, N]: B stored [K, N], or [N, K] when TRANS_B (x·Wᵀ with W [N, K]).
//
// Bindings (group 0):
//   0  a     storage, read        batches of op(A) ({{T}})
//   1  b     storage, read        batches of op(B) ({{T}})
//   2  bias  storage, read        [N] {{T}} (bound to a dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  [batch or splits][M, N] (f32 workspace when SPLIT_K > 1, else {{T}})
//   4  p     uniform { M, N, K, batch, a_batch_stride, b_batch_stride, k_chunk, _, alpha, beta }
// Dispatch: (ceil(N / BN), ceil(M / BM), batch · splits) workgroups of WGX × WGY threads, with
//   BM = WGY·TM and BN = WGX·TN. Workgroup z = batch index · splits + split; split s covers
//   k in [s·k_chunk, min(K, (s+1)·k_chunk)) and writes unscaled partial sums to its own slice of
//   the workspace, which gemm-splitk-reduce.wgsl sums with α, β and bias.
// Each thread accumulates a TM × TN block in registers; A and B tiles of TK × BM and TK × BN
// pass through workgroup memory (k-major, so a thread's TM values are contiguous). Any M, N, K:
// loads outside the matrix read zero, stores outside are skipped.
// Text constants (valid ranges): TM, TN in 1..8; WGX·WGY ≤ 256; TK in 4..32 with TK·(BM + BN)·4
//   bytes ≤ 16 KiB (the portable workgroup-memory limit).
// Overrides: TRANS_A, TRANS_B, HAS_BIAS (0/1), ACCUMULATE (β term: 0/1), SPLIT (0/1).
// Section QUANT (text constants BITS, GROUP): op(B) is an MLX affine-quantized matrix W (W [N, K]
//   when TRANS_B, else [K, N], batch 1): binding 1 holds its packed u32 words (rows of
//   cols·BITS/32 words), the uniform moves to binding 6, and
//   4  scales  storage, read  [rows, cols / GROUP] {{T}}
//   5  biases  storage, read  [rows, cols / GROUP] {{T}}
//   each element of the B tile is unpacked, scaled and biased as it is staged: W is never written out.
{{ENABLE}}

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const TK: u32 = {{TK}}u;
const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const BM: u32 = WGY * TM;
const BN: u32 = WGX * TN;
const NT: u32 = WGX * WGY;

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
override SPLIT: u32 = 0u;

struct Params {
{{>gemm-uniform}}
}

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
{{^QUANT}}
@group(0) @binding(1) var<storage, read> b: array<{{T}}>;
{{/QUANT}}
{{#QUANT}}
{{>gemm-quant}}
{{/QUANT}}
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{TC}}>;
{{^QUANT}}
@group(0) @binding(4) var<uniform> p: Params;
{{/QUANT}}
{{#QUANT}}
@group(0) @binding(6) var<uniform> p: Params;
{{/QUANT}}

{{>gemm-epilogue}}

var<workgroup> As: array<f32, TK * BM>;
var<workgroup> Bs: array<f32, TK * BN>;

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let split = wid.z % p.splits;
  let batch = wid.z / p.splits;
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let tid = lid.y * WGX + lid.x;
  let a_base = batch * p.a_batch_stride;
  let b_base = batch * p.b_batch_stride;
  let k_begin = split * p.k_chunk;
  let k_end = min(p.K, k_begin + p.k_chunk);

  var acc: array<f32, TM * TN>;
  for (var i = 0u; i < TM * TN; i++) { acc[i] = 0.0; }
  var ar: array<f32, TM>;
  var br: array<f32, TN>;

  for (var k0 = k_begin; k0 < k_end; k0 += TK) {
    // Tile loads: consecutive threads read consecutive addresses of the stored layout.
    for (var i = tid; i < TK * BM; i += NT) {
      var kk: u32;
      var mm: u32;
      if (TRANS_A == 1u) { mm = i % BM; kk = i / BM; } else { kk = i % TK; mm = i / TK; }
      let gm = row0 + mm;
      let gk = k0 + kk;
      var v = 0.0;
      if (gm < p.M && gk < k_end) {
        if (TRANS_A == 1u) { v = f32(a[a_base + gk * p.M + gm]); } else { v = f32(a[a_base + gm * p.K + gk]); }
      }
      As[kk * BM + mm] = v;
    }
    for (var i = tid; i < TK * BN; i += NT) {
      var kk: u32;
      var nn: u32;
      if (TRANS_B == 1u) { kk = i % TK; nn = i / TK; } else { nn = i % BN; kk = i / BN; }
      let gn = col0 + nn;
      let gk = k0 + kk;
      var v = 0.0;
      if (gn < p.N && gk < k_end) {
{{^QUANT}}
        if (TRANS_B == 1u) { v = f32(b[b_base + gn * p.K + gk]); } else { v = f32(b[b_base + gk * p.N + gn]); }
{{/QUANT}}
{{#QUANT}}
        if (TRANS_B == 1u) { v = weight_at(gn, gk); } else { v = weight_at(gk, gn); }
{{/QUANT}}
      }
      Bs[kk * BN + nn] = v;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      for (var i = 0u; i < TM; i++) { ar[i] = As[kk * BM + lid.y * TM + i]; }
      for (var j = 0u; j < TN; j++) { br[j] = Bs[kk * BN + lid.x * TN + j]; }
      for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) { acc[i * TN + j] = fma(ar[i], br[j], acc[i * TN + j]); }
      }
    }
    workgroupBarrier();
  }

  let c_base = (batch * p.splits + split) * p.M * p.N;
  for (var i = 0u; i < TM; i++) {
    let gm = row0 + lid.y * TM + i;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < TN; j++) {
      let gn = col0 + lid.x * TN + j;
      if (gn >= p.N) { continue; }
      let o = c_base + gm * p.N + gn;
      if (SPLIT == 1u) {
        c[o] = {{TC}}(acc[i * TN + j]);
      } else {
        c[o] = {{TC}}(epilogue(o, gn, acc[i * TN + j]));
      }
    }
  }
}
