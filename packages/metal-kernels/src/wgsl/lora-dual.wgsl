// lora-dual.wgsl: the two LoRA backward products that read dy, from one read of it:
//   U  = dy·B   [M, r]  (a sum over the columns n of dy)
//   dB = dyᵀ·T  [N, r]  (a sum over the rows m of dy)
// with dy [M, N], B [N, r], T [M, r] (f32, r a multiple of 4, N a multiple of 4). Each workgroup
// owns a block of BM rows of dy and a chunk of its columns, and walks the chunk in tiles of
// BM × NS that pass through workgroup memory once; from each tile it adds to its U rows (kept in
// registers across the chunk) and finishes that tile's dB rows for its block of m. Both results
// are partial sums, written to workspaces that lora-dual-reduce.wgsl adds up (and scales) in one
// more dispatch:
//   ws_u [chunks, M, r]:  Σ over the chunk's columns
//   ws_b [blocks, N, r]:  Σ over the block's rows
//
// Bindings (group 0):
//   0  dy    storage, read        [M, N / 4] vec4<f32>
//   1  bm    storage, read        [N, R4] vec4<f32>  (B)
//   2  tm    storage, read        [M, R4] vec4<f32>  (T)
//   3  ws_u  storage, read_write  [chunks, M, R4] vec4<f32>
//   4  ws_b  storage, read_write  [blocks, N, R4] vec4<f32>
//   5  p     uniform { M, N, n_chunk (a multiple of NS), _ }
// Dispatch: (blocks = ceil(M / BM), chunks = ceil(N / n_chunk), 1) workgroups of 256 threads.
// Text constants: R4 = r / 4 (1..16) and OU (outputs of each kind per thread: the least power of
// two with (BM / OU)·R4 ≤ 256, or ≤ 128 to split the roles): thread t < (BM / OU)·R4 owns vec4
// column j4 = t % R4 of OU consecutive rows g·OU + i of its U block and of each tile's dB rows
// (g = t / R4); when (BM / OU)·R4 ≤ 128 the dB rows go to thread 128 + t instead, so both
// products run at once. U_DECL .. U_STORE are the straight-line
// statements lora-dual.ts writes for the OU accumulators (accumulator arrays indexed in loops
// spill to local memory on NVIDIA).

const BM: u32 = 64u;
const NS: u32 = 64u;
const R4: u32 = {{R4}}u;
const OU: u32 = {{OU}}u;
const ACTIVE: u32 = (BM / OU) * R4;
// With ACTIVE ≤ 128 (r ≤ 8) the two halves of the workgroup take one product each, in parallel:
// threads 0..127 the U rows, threads 128..255 the dB rows (with thread index t - 128).
const SPLIT_ROLES: bool = ACTIVE <= 128u;

struct Params { M: u32, N: u32, n_chunk: u32, pad0: u32 }

@group(0) @binding(0) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> bm: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> tm: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> ws_u: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> ws_b: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> p: Params;

// The dy tile, element (m, n) at m·NS + (n + m) % NS: rows are rotated so that reading one
// column across rows (U) and one row across columns (dB) both land on distinct banks. 16 KiB.
var<workgroup> tile: array<f32, BM * NS>;

fn at(m: u32, n: u32) -> u32 { return m * NS + (n + m) % NS; }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = lid.x;
  let block = wid.x;
  let chunk = wid.y;
  let m0 = block * BM;
  let n_begin = chunk * p.n_chunk;
  let n_end = min(p.N, n_begin + p.n_chunk);
  let tt = select(t, t - 128u, SPLIT_ROLES && t >= 128u);
  let does_u = tt < ACTIVE && (!SPLIT_ROLES || t < 128u);
  let does_b = tt < ACTIVE && (!SPLIT_ROLES || t >= 128u);
  let j4 = tt % R4;
  let g = tt / R4;
  let N4 = p.N / 4u;
{{U_DECL}}
  for (var n0 = n_begin; n0 < n_end; n0 += NS) {
    // Stage dy[m0 .. m0+BM, n0 .. n0+NS] (zeros outside dy or the chunk): 4 vec4 per thread.
    for (var q = 0u; q < BM * NS / 4u; q += 256u) {
      let idx = q + t;
      let m = idx / (NS / 4u);
      let n = (idx % (NS / 4u)) * 4u;
      var v = vec4<f32>(0.0);
      if (m0 + m < p.M && n0 + n < n_end) { v = dy[(m0 + m) * N4 + (n0 + n) / 4u]; }
      tile[at(m, n)] = v.x;
      tile[at(m, n + 1u)] = v.y;
      tile[at(m, n + 2u)] = v.z;
      tile[at(m, n + 3u)] = v.w;
    }
    workgroupBarrier();
    if (does_u) {
      // U rows g·OU + i: Σ_n dy[m, n]·B[n, j4·4 ..].
      for (var n = 0u; n < NS; n++) {
        let bv = bm[min(n0 + n, p.N - 1u) * R4 + j4];
{{U_FMA}}
      }
    }
    if (does_b) {
      // This tile's dB rows n0 + g·OU + i: Σ_m dy[m, n]·T[m, j4·4 ..] over the block.
{{B_DECL}}
      for (var m = 0u; m < BM; m++) {
        let tv = tm[min(m0 + m, p.M - 1u) * R4 + j4];
{{B_FMA}}
      }
{{B_STORE}}
    }
    workgroupBarrier();
  }
  if (does_u) {
{{U_STORE}}
  }
}
