// gemv.wgsl: skinny products where op(A) has few rows (decode, M ≤ MR): each workgroup writes
// partial sums over one K chunk for COLS = 256 / LANES output columns and all M rows;
// gemm-splitk-reduce.wgsl then sums the chunks with α, β and bias. B is read exactly once overall.
// LANES threads share a column: they walk its K chunk together and reduce in workgroup memory.
//   TRANS_B = 1 (x·Wᵀ, W [N, K] row-major): a column's lanes are adjacent threads, so a row of W
//     is read along K (coalesced).
//   TRANS_B = 0 (B [K, N]): the COLS columns are adjacent threads, so a row of B is read along N
//     (coalesced), and a column's lanes lie COLS threads apart. With N = r (the LoRA backward's
//     U = dy·B) a lane per column left 240 of 256 threads idle and each live one walking its
//     whole chunk alone.
//
// Bindings (group 0):
//   0  a   storage, read        op(A) [batch, M, K] ({{T}}; A stored [K, M] when TRANS_A)
//   1  b   storage, read        B ({{T}}), batch entries b_batch_stride apart (0: one B for all)
//   2  ws  storage, read_write  [batch, splits, M, N] of alpha·acc as {{OUT}}: the f32 workspace
//                                (alpha = 1), or C itself when unsplit (C's type and α)
//   3  p   uniform { M, N, K, k_chunk, splits, a_batch_stride, b_batch_stride, alpha }
// Dispatch: (ceil(N / COLS), splits, batch) workgroups of 256 threads (batch: the attention of a
// decode step, one entry per KV head).
// Text constants: MR (max rows, 1..16: MR·256·4 bytes of workgroup memory ≤ 16 KiB), LANES
//   (threads per column; a power of two, 1..256), OUT (the type of binding 2).
// Overrides: TRANS_A, TRANS_B (0/1).
{{ENABLE}}

const MR: u32 = {{MR}}u;
const LANES: u32 = {{LANES}}u;
const WG: u32 = 256u;

override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 1u;

struct Params { M: u32, N: u32, K: u32, k_chunk: u32, splits: u32, a_batch_stride: u32, b_batch_stride: u32, alpha: f32 }

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
@group(0) @binding(1) var<storage, read> b: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> ws: array<{{OUT}}>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG * MR>;

fn a_at(base: u32, m: u32, k: u32) -> f32 {
  if (TRANS_A == 1u) { return f32(a[base + k * p.M + m]); }
  return f32(a[base + m * p.K + k]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let split = wid.y;
  let entry = wid.z;
  let a_base = entry * p.a_batch_stride;
  let b_base = entry * p.b_batch_stride;
  let k_begin = split * p.k_chunk;
  let k_end = min(p.K, k_begin + p.k_chunk);
  var acc: array<f32, MR>;
  for (var m = 0u; m < MR; m++) { acc[m] = 0.0; }

  // LANES threads share each output column n and walk its K range together, then reduce in
  // workgroup memory. TRANS_B = 1: the lanes of a column are adjacent threads (a row of W is
  // contiguous along K). TRANS_B = 0: the columns are adjacent (a row of B is contiguous along
  // N) and the lanes of a column lie `cols` threads apart.
  let cols = WG / LANES;
  var lane = lid.x % LANES;
  var n = wid.x * cols + lid.x / LANES;
  var stride = 1u;
  if (TRANS_B == 0u) {
    lane = lid.x / cols;
    n = wid.x * cols + lid.x % cols;
    stride = cols;
  }
  if (n < p.N) {
    for (var k = k_begin + lane; k < k_end; k += LANES) {
      let w = f32(b[b_base + select(k * p.N + n, n * p.K + k, TRANS_B == 1u)]);
      for (var m = 0u; m < MR; m++) {
        if (m < p.M) { acc[m] = fma(w, a_at(a_base, m, k), acc[m]); }
      }
    }
  }
  if (LANES > 1u) {
    for (var m = 0u; m < MR; m++) { partial[m * WG + lid.x] = acc[m]; }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
      if (lane < s) {
        for (var m = 0u; m < MR; m++) { partial[m * WG + lid.x] += partial[m * WG + lid.x + s * stride]; }
      }
      workgroupBarrier();
    }
    for (var m = 0u; m < MR; m++) { acc[m] = partial[m * WG + lid.x]; }
  }
  if (lane == 0u && n < p.N) {
    for (var m = 0u; m < p.M; m++) { ws[((entry * p.splits + split) * p.M + m) * p.N + n] = {{OUT}}(p.alpha * acc[m]); }
  }
}
