// dequantize.wgsl: W[r, c] = scales[r, c / GROUP]·q[r, c] + biases[r, c / GROUP] (MLX affine
// quantization), f32 arithmetic, one thread per element.
//
// Bindings (group 0):
//   0  wq      storage, read        [rows · words] u32 (the packed int32 words)
//   1  scales  storage, read        [rows · groups] {{T}}
//   2  biases  storage, read        [rows · groups] {{T}}
//   3  w       storage, read_write  [rows · cols] {{T}}
//   4  p       uniform { n, cols, words, grid_x: u32 }
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
// Text constants: BITS (2, 3, 4, 5, 6, 8), GROUP (32, 64, 128).
{{ENABLE}}

const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;

struct Params { n: u32, cols: u32, words: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> wq: array<u32>;
@group(0) @binding(1) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(2) var<storage, read> biases: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> w: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

{{>quant-unpack}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let r = i / p.cols;
  let c = i % p.cols;
  let g = r * (p.cols / GROUP) + c / GROUP;
  w[i] = {{T}}(f32(scales[g]) * f32(unpack_q(r * p.words, c)) + f32(biases[g]));
}
