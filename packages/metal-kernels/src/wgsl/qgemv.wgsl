// qgemv.wgsl: C [M, N] = A [M, K]·Wᵀ for the few rows of decode (M = MR ≤ 16), W [N, K] MLX
// affine-quantized with BITS in {2, 4, 8} (a word holds 32 / BITS whole values, all of one group):
//   C[m, n] = Σ_words s·Σ_j q_j·A[m, k_j] + b·Σ_j A[m, k_j]   (s, b: the word's group scale and bias)
// W is read once, as packed words: a lane group of 32 threads walks one row of W word by word
// (consecutive lanes, consecutive words), each workgroup of 256 threads covers 8 rows of W, and the
// lanes' partial sums meet in workgroup memory. f32 accumulation.
//
// Bindings (group 0):
//   0  a       storage, read        [MR, K] {{T}}
//   1  wq      storage, read        [N, words] u32
//   2  scales  storage, read        [N, K / GROUP] {{T}}
//   3  biases  storage, read        [N, K / GROUP] {{T}}
//   4  c       storage, read_write  [MR, N] {{T}}
//   5  p       uniform { N, K, words, groups_x: u32 }
// Dispatch: ceil(N / 8) workgroups of 256 threads, folded into (groups_x, y) above 65535.
// Text constants: BITS (2, 4, 8), GROUP (32, 64, 128), MR (1..16; workgroup memory 1 KiB per row).
{{ENABLE}}

const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
const MR: u32 = {{MR}}u;
const PER: u32 = 32u / BITS;
const MASK: u32 = (1u << BITS) - 1u;

struct Params { N: u32, K: u32, words: u32, groups_x: u32 }

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(3) var<storage, read> biases: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> c: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> partial: array<f32, 256 * MR>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let lane = tid % 32u;
  let n = (wid.y * p.groups_x + wid.x) * 8u + tid / 32u;
  var acc: array<f32, MR>;
  for (var m = 0u; m < MR; m++) { acc[m] = 0.0; }
  if (n < p.N) {
    let groups = p.K / GROUP;
    for (var w = lane; w < p.words; w += 32u) {
      let word = wq[n * p.words + w];
      let k0 = w * PER;
      let g = n * groups + k0 / GROUP;
      let s = f32(scales[g]);
      let b = f32(biases[g]);
      for (var m = 0u; m < MR; m++) {
        var dot = 0.0;
        var sum = 0.0;
        for (var j = 0u; j < PER; j++) {
          let x = f32(a[m * p.K + k0 + j]);
          dot = fma(f32((word >> (j * BITS)) & MASK), x, dot);
          sum += x;
        }
        acc[m] = fma(s, dot, fma(b, sum, acc[m]));
      }
    }
  }
  for (var m = 0u; m < MR; m++) { partial[m * 256u + tid] = acc[m]; }
  workgroupBarrier();
  for (var stride = 16u; stride > 0u; stride >>= 1u) {
    if (lane < stride) {
      for (var m = 0u; m < MR; m++) { partial[m * 256u + tid] += partial[m * 256u + tid + stride]; }
    }
    workgroupBarrier();
  }
  if (lane == 0u && n < p.N) {
    for (var m = 0u; m < MR; m++) { c[m * p.N + n] = {{T}}(partial[m * 256u + tid]); }
  }
}
