// gemm-sgmat.wgsl: C = α·op(A)·op(B) (+ β·C) (+ bias), batched, on subgroup matrices
// (`chromium-experimental-subgroup-matrix`: Apple's simdgroup matrices through Dawn or a browser).
// Used only where the adapter offers a float configuration (component MT ∈ {f32, f16}, result f32,
// SM × SN × SK); accumulation is f32 throughout.
//   op(A) is [M, K]: A stored [M, K], or [K, M] when TRANS_A.
//   op(B) is [K, N]: B stored [K, N], or [N, K] when TRANS_B.
// Any M, N, K: the workgroup stages BM × BK of op(A) and BK × BN of op(B) in workgroup memory
// (row-major, converted to MT, zero outside the matrices), so the subgroup-matrix loads never
// leave the tiles; results go through workgroup memory too, and the store to C checks bounds.
// Tiles: BM = 4·SM, BN = 4·SN, BK = 4·SK; the 16 result tiles of SM × SN are shared among the
// 128 / SG subgroups, TPS = 16·SG / 128 consecutive tiles each.
//
// Bindings (group 0):
//   0  a     storage, read        batches of A (T)
//   1  b     storage, read        batches of B (T)
//   2  bias  storage, read        [N] T (a dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  [batch][M, N] T
//   4  p     uniform { M, N, K, batch, a_batch_stride, b_batch_stride, _, _, alpha, beta }
// Dispatch: (ceil(N / BN), ceil(M / BM), batch) workgroups of 128 threads.
// Text constants: T (storage type), MT (matrix component type), ENABLE, SM, SN, SK (the
//   configuration), SG (the adapter's subgroup size: its minimum and maximum must agree, and
//   divide 128 into at most 16 subgroups).
// Overrides: TRANS_A, TRANS_B, HAS_BIAS, ACCUMULATE (0/1).
enable chromium_experimental_subgroup_matrix;
{{ENABLE}}
// The subgroup id is uniform within a subgroup, which is all the matrix builtins need; WGSL's
// analysis only knows workgroup uniformity.
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);

const SM: u32 = {{SM}}u;
const SN: u32 = {{SN}}u;
const SK: u32 = {{SK}}u;
const SG: u32 = {{SG}}u;
const THREADS: u32 = 128u;
const BM: u32 = 4u * SM;
const BN: u32 = 4u * SN;
const BK: u32 = 4u * SK;
const TPS: u32 = 16u * SG / THREADS;

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;

struct Params {
{{>gemm-uniform}}
}

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
@group(0) @binding(1) var<storage, read> b: array<{{T}}>;
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> As: array<{{MT}}, BM * BK>;
var<workgroup> Bs: array<{{MT}}, BK * BN>;
var<workgroup> Cs: array<f32, BM * BN>;

{{>gemm-epilogue}}

fn a_at(m: u32, k: u32, base: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (TRANS_A == 1u) { return f32(a[base + k * p.M + m]); }
  return f32(a[base + m * p.K + k]);
}

fn b_at(k: u32, n: u32, base: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  if (TRANS_B == 1u) { return f32(b[base + n * p.K + k]); }
  return f32(b[base + k * p.N + n]);
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sg: u32) {
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let batch = wid.z;
  let a_base = batch * p.a_batch_stride;
  let b_base = batch * p.b_batch_stride;

  var acc: array<subgroup_matrix_result<f32, {{SN}}, {{SM}}>, TPS>;
  for (var i = 0u; i < TPS; i++) { acc[i] = subgroup_matrix_result<f32, {{SN}}, {{SM}}>(); }

  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var e = t; e < BM * BK; e += THREADS) { As[e] = {{MT}}(a_at(row0 + e / BK, k0 + e % BK, a_base)); }
    for (var e = t; e < BK * BN; e += THREADS) { Bs[e] = {{MT}}(b_at(k0 + e / BN, col0 + e % BN, b_base)); }
    workgroupBarrier();
    for (var ks = 0u; ks < BK; ks += SK) {
      for (var i = 0u; i < TPS; i++) {
        let tile = sg * TPS + i;
        let left = subgroupMatrixLoad<subgroup_matrix_left<{{MT}}, {{SK}}, {{SM}}>>(&As, (tile / 4u) * SM * BK + ks, false, BK);
        let right = subgroupMatrixLoad<subgroup_matrix_right<{{MT}}, {{SN}}, {{SK}}>>(&Bs, ks * BN + (tile % 4u) * SN, false, BN);
        acc[i] = subgroupMatrixMultiplyAccumulate(left, right, acc[i]);
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < TPS; i++) {
    let tile = sg * TPS + i;
    subgroupMatrixStore(&Cs, (tile / 4u) * SM * BN + (tile % 4u) * SN, acc[i], false, BN);
  }
  workgroupBarrier();

  for (var e = t; e < BM * BN; e += THREADS) {
    let m = row0 + e / BN;
    let n = col0 + e % BN;
    if (m < p.M && n < p.N) {
      let o = batch * p.M * p.N + m * p.N + n;
      c[o] = {{T}}(epilogue(o, n, Cs[e]));
    }
  }
}
