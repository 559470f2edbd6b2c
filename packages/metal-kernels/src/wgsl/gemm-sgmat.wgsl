// gemm-sgmat.wgsl: C = α·op(A)·op(B) (+ β·C) (+ bias), batched, on subgroup matrices
// (`chromium-experimental-subgroup-matrix`: Apple's simdgroup matrices through Dawn or a browser).
// Used only where the adapter offers a float configuration (component MT ∈ {f32, f16}, result f32,
// SM × SN × SK); accumulation is f32 throughout.
//   op(A) is [M, K]: A stored [M, K], or [K, M] when TRANS_A.
//   op(B) is [K, N]: B stored [K, N], or [N, K] when TRANS_B.
// Any M, N, K. Four subgroups (2 × 2) per workgroup; each owns RM × RN result tiles of SM × SN,
// so a workgroup covers BM = 2·RM·SM rows and BN = 2·RN·SN columns, and each loaded left matrix
// serves RN products and each right one RM. The workgroup stages BM × BK of op(A) and BK × BN of
// op(B) (BK = 2·SK) in workgroup memory in the order they are stored in (so global reads run
// along memory in every layout; a transposed operand is loaded column-major), converted to MT,
// zero outside the matrices, so the subgroup-matrix loads never leave the tiles (a tile inside
// both operands, rows on whole vec4s, is staged a vec4 at a time without checks). Results leave
// one tile per subgroup at a time through workgroup memory; the store to C checks bounds.
//
// Bindings (group 0):
//   0  a     storage, read        batches of A (T)
//   1  b     storage, read        batches of B (T); under QUANT wq, W's packed words (u32)
//   2  bias  storage, read        [N] T (a dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  [batch][M, N] T
//   4  a4    storage, read        binding 0 again as vec4<T>
//   5  b4    storage, read        binding 1 again as vec4<T>
//   6  a16   storage, read        binding 0 again as vec4<u32> (section PREFETCH)
//   7  b16   storage, read        binding 1 again as vec4<u32> (section PREFETCH)
//   8  scales, 9 biases  storage, read  [rows of W][groups per row] T (section QUANT)
//   UB p     uniform { M, N, K, batch, a_batch_stride, b_batch_stride, _, _, alpha, beta }
//            (UB is 10 with QUANT, 8 with PREFETCH, else 6)
// Dispatch: (ceil(N / BN), ceil(M / BM), batch) workgroups of 4·SG threads.
// Text constants: T (storage type), MT (matrix component type), ENABLE, SM, SN, SK (the
//   configuration), SG (the adapter's subgroup size: its minimum and maximum must agree), RM, RN
//   (result tiles per subgroup down and across), A_TILE, B_TILE (elements of the staged tiles).
// Section PREFETCH (T is MT): a workgroup inside C whose rows start on whole 16 bytes, with A not
//   transposed and K a multiple of BK, stages through registers: each thread loads its share of
//   the next tiles 16 bytes at a time while the subgroups multiply the current ones, and stores
//   it into tiles whose rows are padded by 16 bytes (so the matrix loads do not conflict).
//   Measured 2.8× the direct loads from storage on the H200 (probe-sgmat-gemm, 2026-12-04).
// Section QUANT (with PREFETCH; text constants BITS, GROUP; batch 1): op(B) is an MLX
//   affine-quantized matrix W (W [N, K] when TRANS_B, else [K, N]), its packed u32 words at
//   binding 1 (and 7, 16 bytes at a time, where BITS is a multiple of 4) and a scale and bias per
//   group of GROUP values of a row at bindings 8 and 9 (the uniform moves to 10). Each thread
//   fetches chunks of 32 consecutive values of a row (BITS whole words, one group) and stores them
//   dequantized (scale·q + bias, in f32, rounded to MT) into the staged tile. Every workgroup must
//   be interior and prefetch (the recorder checks it): there is no element-wise fallback.
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
const RM: u32 = {{RM}}u;
const RN: u32 = {{RN}}u;
const THREADS: u32 = 4u * SG;
const BM: u32 = 2u * RM * SM;
const BN: u32 = 2u * RN * SN;
const BK: u32 = 2u * SK;
// Elements in 16 bytes (PREFETCH's loads).
const E: u32 = {{E}}u;

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;

struct Params {
{{>gemm-uniform}}
}

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
{{^QUANT}}
@group(0) @binding(1) var<storage, read> b: array<{{T}}>;
{{/QUANT}}
{{#QUANT}}
const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
{{/QUANT}}
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{T}}>;
// The same operands again, four elements at a time, for the staging of interior tiles.
@group(0) @binding(4) var<storage, read> a4: array<vec4<{{T}}>>;
{{^QUANT}}
@group(0) @binding(5) var<storage, read> b4: array<vec4<{{T}}>>;
{{/QUANT}}
{{#PREFETCH}}
@group(0) @binding(6) var<storage, read> a16: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> b16: array<vec4<u32>>;
{{/PREFETCH}}
{{#QUANT}}
@group(0) @binding(8) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(9) var<storage, read> biases: array<{{T}}>;
{{/QUANT}}
@group(0) @binding({{UB}}) var<uniform> p: Params;

// op(A)'s tile: [BM][BK], or [BK][BM] when TRANS_A. op(B)'s: [BK][BN], or [BN][BK] when TRANS_B.
// (PREFETCH stages A as [BM][BK + pad], B as [BN][BK + pad], or [BK][BN + pad] unless TRANS_B.)
var<workgroup> As: array<{{MT}}, {{A_TILE}}>;
var<workgroup> Bs: array<{{MT}}, {{B_TILE}}>;
// One result tile per subgroup on its way to C.
var<workgroup> Cs: array<f32, 4u * SM * SN>;

{{>gemm-epilogue}}

{{^QUANT}}
fn stage(row0: u32, col0: u32, k0: u32, a_base: u32, b_base: u32, t: u32) {
  let a_inside = row0 + BM <= p.M && k0 + BK <= p.K;
  for (var e = t; e < BM * BK; e += THREADS) {
    var m = e / BK;
    var k = e % BK;
    if (TRANS_A == 1u) {
      k = e / BM;
      m = e % BM;
    }
    var v = {{MT}}(0);
    if (a_inside || (row0 + m < p.M && k0 + k < p.K)) {
      if (TRANS_A == 1u) {
        v = {{MT}}(a[a_base + (k0 + k) * p.M + row0 + m]);
      } else {
        v = {{MT}}(a[a_base + (row0 + m) * p.K + k0 + k]);
      }
    }
    As[e] = v;
  }
  let b_inside = col0 + BN <= p.N && k0 + BK <= p.K;
  for (var e = t; e < BK * BN; e += THREADS) {
    var k = e / BN;
    var n = e % BN;
    if (TRANS_B == 1u) {
      n = e / BK;
      k = e % BK;
    }
    var v = {{MT}}(0);
    if (b_inside || (col0 + n < p.N && k0 + k < p.K)) {
      if (TRANS_B == 1u) {
        v = {{MT}}(b[b_base + (col0 + n) * p.K + k0 + k]);
      } else {
        v = {{MT}}(b[b_base + (k0 + k) * p.N + col0 + n]);
      }
    }
    Bs[e] = v;
  }
}

// `stage` for a tile inside both operands whose rows start on whole vec4s (checked by the caller):
// one vec4 load per four elements, no bounds checks.
fn stage_vec4(row0: u32, col0: u32, k0: u32, a_base: u32, b_base: u32, t: u32) {
  for (var e = t; e < BM * BK / 4u; e += THREADS) {
    var o: u32;
    var at: u32;
    if (TRANS_A == 1u) {
      let k = e / (BM / 4u);
      let m = (e % (BM / 4u)) * 4u;
      o = a_base + (k0 + k) * p.M + row0 + m;
      at = k * BM + m;
    } else {
      let m = e / (BK / 4u);
      let k = (e % (BK / 4u)) * 4u;
      o = a_base + (row0 + m) * p.K + k0 + k;
      at = m * BK + k;
    }
    let v = vec4<{{MT}}>(a4[o / 4u]);
    As[at] = v.x;
    As[at + 1u] = v.y;
    As[at + 2u] = v.z;
    As[at + 3u] = v.w;
  }
  for (var e = t; e < BK * BN / 4u; e += THREADS) {
    var o: u32;
    var at: u32;
    if (TRANS_B == 1u) {
      let n = e / (BK / 4u);
      let k = (e % (BK / 4u)) * 4u;
      o = b_base + (col0 + n) * p.K + k0 + k;
      at = n * BK + k;
    } else {
      let k = e / (BN / 4u);
      let n = (e % (BN / 4u)) * 4u;
      o = b_base + (k0 + k) * p.N + col0 + n;
      at = k * BN + n;
    }
    let v = vec4<{{MT}}>(b4[o / 4u]);
    Bs[at] = v.x;
    Bs[at + 1u] = v.y;
    Bs[at + 2u] = v.z;
    Bs[at + 3u] = v.w;
  }
}
{{/QUANT}}

// Writes result tile (i, j) of every subgroup, parked in Cs, to C through the epilogue.
fn write_tile(i: u32, j: u32, row0: u32, col0: u32, batch: u32, t: u32) {
  workgroupBarrier();
  for (var e = t; e < 4u * SM * SN; e += THREADS) {
    let s = e / (SM * SN);
    let r = e % (SM * SN);
    let m = row0 + ((s / 2u) * RM + i) * SM + r / SN;
    let n = col0 + ((s % 2u) * RN + j) * SN + r % SN;
    if (m < p.M && n < p.N) {
      let o = batch * p.M * p.N + m * p.N + n;
      c[o] = {{T}}(epilogue(o, n, Cs[e]));
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(THREADS)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sg: u32) {
  let row0 = wid.y * BM;
  let col0 = wid.x * BN;
  let batch = wid.z;
  let a_base = batch * p.a_batch_stride;
  let b_base = batch * p.b_batch_stride;
  // This subgroup's first result tile, down and across.
  let tm0 = (sg / 2u) * RM;
  let tn0 = (sg % 2u) * RN;

  // The tiles, operands and results alike, are separate variables written out by the host
  // (sgmat.ts): an array of subgroup matrices indexed in a loop is kept in memory rather than in
  // registers by a driver that does not unroll it.
{{ACC}}
{{OPERANDS}}

{{#QUANT}}
  // Every workgroup is interior and every row starts on whole 16 bytes (the recorder checks).
  let kv = p.K / E;
  let a16_base = a_base / E;
{{PREFETCH_LOOP}}
{{/QUANT}}
{{^QUANT}}
{{#PREFETCH}}
  // E elements make 16 bytes; every row of both operands (and each batch) starts on whole ones.
  let rows16 = TRANS_A == 0u && p.K % BK == 0u && p.K % E == 0u && (TRANS_B == 1u || p.N % E == 0u) &&
    p.a_batch_stride % E == 0u && p.b_batch_stride % E == 0u;
  if (row0 + BM <= p.M && col0 + BN <= p.N && rows16) {
    let kv = p.K / E;
    let nv = p.N / E;
    let a16_base = a_base / E;
    let b16_base = b_base / E;
{{PREFETCH_LOOP}}
  } else {
{{/PREFETCH}}
  // Every row of both operands starts on a whole vec4 (the batch offsets too).
  let vec4_rows = (TRANS_A == 1u || p.K % 4u == 0u) && (TRANS_A == 0u || p.M % 4u == 0u) && (TRANS_B == 0u || p.K % 4u == 0u) &&
    (TRANS_B == 1u || p.N % 4u == 0u) && p.a_batch_stride % 4u == 0u && p.b_batch_stride % 4u == 0u;
  let inside = vec4_rows && row0 + BM <= p.M && col0 + BN <= p.N;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    if (inside && k0 + BK <= p.K) {
      stage_vec4(row0, col0, k0, a_base, b_base, t);
    } else {
      stage(row0, col0, k0, a_base, b_base, t);
    }
    workgroupBarrier();
    for (var ks = 0u; ks < BK; ks += SK) {
{{STAGED_STEP}}
    }
    workgroupBarrier();
  }
{{#PREFETCH}}
  }
{{/PREFETCH}}

{{/QUANT}}

{{STORE}}
}
