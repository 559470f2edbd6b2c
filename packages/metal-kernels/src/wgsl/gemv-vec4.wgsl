// gemv-vec4.wgsl: decode-shaped x·Wᵀ for aligned f32 (K a multiple of 4): partial sums over one
// K chunk for COLS = 256 / LANES rows of W and all M ≤ MR rows of x. Each group of LANES threads
// walks one row of W in vec4 loads (LANES·16 contiguous bytes per step), multiplies with the
// matching vec4 of every x row, and reduces in workgroup memory. gemm-splitk-reduce.wgsl sums the
// chunks with α, β and bias. W is read once overall.
//
// Bindings (group 0):
//   0  x   storage, read        [M, K / 4] vec4<f32>
//   1  w   storage, read        [N, K / 4] vec4<f32>
//   2  ws  storage, read_write  [splits, M, N] f32
//   3  p   uniform { M, N, K4: K / 4, k4_chunk, splits }
// Dispatch: (ceil(N / COLS), splits, 1) workgroups of 256 threads.
// Text constants: MR (1..16; MR·256·4 bytes of workgroup memory ≤ 16 KiB), LANES (8..256, a power
//   of two), UNROLL (1..8: vec4 loads of W each thread issues before using them, so more bytes are
//   in flight per thread).

const MR: u32 = {{MR}}u;
const LANES: u32 = {{LANES}}u;
const UNROLL: u32 = {{UNROLL}}u;
const WG: u32 = 256u;

struct Params { M: u32, N: u32, K4: u32, k4_chunk: u32, splits: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> ws: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG * MR>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let split = wid.y;
  let k_begin = split * p.k4_chunk;
  let k_end = min(p.K4, k_begin + p.k4_chunk);
  let lane = lid.x % LANES;
  let n = wid.x * (WG / LANES) + lid.x / LANES;
  var acc: array<f32, MR>;
  for (var m = 0u; m < MR; m++) { acc[m] = 0.0; }
  if (n < p.N) {
    var wv: array<vec4<f32>, UNROLL>;
    for (var k = k_begin + lane; k < k_end; k += LANES * UNROLL) {
      for (var u = 0u; u < UNROLL; u++) {
        let kk = k + u * LANES;
        wv[u] = select(vec4<f32>(0.0), w[n * p.K4 + min(kk, p.K4 - 1u)], kk < k_end);
      }
      for (var u = 0u; u < UNROLL; u++) {
        let kk = min(k + u * LANES, p.K4 - 1u);
        for (var m = 0u; m < MR; m++) {
          if (m < p.M) { acc[m] += dot(wv[u], x[m * p.K4 + kk]); }
        }
      }
    }
  }
  for (var m = 0u; m < MR; m++) { partial[m * WG + lid.x] = acc[m]; }
  workgroupBarrier();
  for (var s = LANES / 2u; s > 0u; s = s / 2u) {
    if (lane < s) {
      for (var m = 0u; m < MR; m++) { partial[m * WG + lid.x] += partial[m * WG + lid.x + s]; }
    }
    workgroupBarrier();
  }
  if (lane == 0u && n < p.N) {
    for (var m = 0u; m < p.M; m++) { ws[(split * p.M + m) * p.N + n] = partial[m * WG + lid.x]; }
  }
}
