// qmm.wgsl: C = A·op(W) with W an MLX affine-quantized matrix dequantized as its tile is staged:
//   TRANS = 1: C [M, N] = A [M, K]·Wᵀ, W [N, K] (a Linear layer's x·Wᵀ);
//   TRANS = 0: C [M, N] = A [M, K]·W,  W [K, N] (its gradient's dy·W).
// W[r, c] = scales[r, c / GROUP]·q[r, c] + biases[r, c / GROUP], packed rows of `words` u32.
//
// Bindings (group 0):
//   0  a       storage, read        [M, K] {{T}}
//   1  wq      storage, read        packed W, u32
//   2  scales  storage, read        {{T}}
//   3  biases  storage, read        {{T}}
//   4  c       storage, read_write  [M, N] {{T}}
//   5  p       uniform { M, N, K, words, wcols: u32 }  (wcols: W's unpacked columns)
// Dispatch: (ceil(N / BN), ceil(M / BM)) workgroups of WGX × WGY threads, BM = WGY·TM, BN = WGX·TN.
// Each thread accumulates a TM × TN block in f32 registers; the A tile and the dequantized W tile
// (TK × BM and TK × BN, k-major) pass through workgroup memory. Any M, N, K: loads outside read
// zero, stores outside are skipped.
// Text constants: BITS, GROUP, TM, TN, TK, WGX, WGY. Overrides: TRANS (0/1).
{{ENABLE}}

const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const TK: u32 = {{TK}}u;
const WGX: u32 = {{WGX}}u;
const WGY: u32 = {{WGY}}u;
const BM: u32 = WGY * TM;
const BN: u32 = WGX * TN;
const NT: u32 = WGX * WGY;

override TRANS: u32 = 1u;

struct Params { M: u32, N: u32, K: u32, words: u32, wcols: u32 }

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(3) var<storage, read> biases: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> c: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

{{>quant-unpack}}

/** W[r, col] dequantized. */
fn weight_at(r: u32, col: u32) -> f32 {
  let g = r * (p.wcols / GROUP) + col / GROUP;
  return f32(scales[g]) * f32(unpack_q(r * p.words, col)) + f32(biases[g]);
}

var<workgroup> As: array<f32, TK * BM>;
var<workgroup> Bs: array<f32, TK * BN>;

@compute @workgroup_size(WGX, WGY)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let tid = lid.y * WGX + lid.x;

  var acc: array<f32, TM * TN>;
  for (var i = 0u; i < TM * TN; i++) { acc[i] = 0.0; }
  var ar: array<f32, TM>;
  var br: array<f32, TN>;

  for (var k0 = 0u; k0 < p.K; k0 += TK) {
    for (var i = tid; i < TK * BM; i += NT) {
      let kk = i % TK;
      let mm = i / TK;
      let gm = row0 + mm;
      let gk = k0 + kk;
      var v = 0.0;
      if (gm < p.M && gk < p.K) { v = f32(a[gm * p.K + gk]); }
      As[kk * BM + mm] = v;
    }
    // Consecutive threads walk along a packed row: k when W is [N, K], n when it is [K, N].
    for (var i = tid; i < TK * BN; i += NT) {
      var kk: u32;
      var nn: u32;
      if (TRANS == 1u) { kk = i % TK; nn = i / TK; } else { nn = i % BN; kk = i / BN; }
      let gn = col0 + nn;
      let gk = k0 + kk;
      var v = 0.0;
      if (gn < p.N && gk < p.K) {
        if (TRANS == 1u) { v = weight_at(gn, gk); } else { v = weight_at(gk, gn); }
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

  for (var i = 0u; i < TM; i++) {
    let gm = row0 + lid.y * TM + i;
    if (gm >= p.M) { continue; }
    for (var j = 0u; j < TN; j++) {
      let gn = col0 + lid.x * TN + j;
      if (gn >= p.N) { continue; }
      c[gm * p.N + gn] = {{T}}(acc[i * TN + j]);
    }
  }
}
