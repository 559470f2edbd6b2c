// lora-dual-reduce.wgsl: the second step of lora-dual.wgsl, both results in one dispatch:
//   U[i]  = scale·Σ_c ws_u[c, i]   for i < M·R4 (vec4 elements)
//   dB[j] = scale·Σ_b ws_b[b, j]   for j < N·R4
// Bindings (group 0):
//   0  ws_u  storage, read        [chunks, M·R4] vec4<f32>
//   1  ws_b  storage, read        [blocks, N·R4] vec4<f32>
//   2  u     storage, read_write  [M·R4] vec4<f32>
//   3  db    storage, read_write  [N·R4] vec4<f32>
//   4  p     uniform { mr4: M·R4, nr4: N·R4, chunks, blocks, grid_x, _, _, scale }
// Dispatch: ceil((mr4 + nr4) / 256) workgroups of 256, folded into (x, y). Fixed summation order.

struct Params { mr4: u32, nr4: u32, chunks: u32, blocks: u32, grid_x: u32, pad0: u32, pad1: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> ws_u: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> ws_b: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> u: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> db: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

// Sums of `count` vec4s `stride` apart, four independent loads per step (the loop is
// latency-bound: one thread per output vec4).
fn sum_u(i: u32) -> vec4<f32> {
  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  let whole = p.chunks / 4u * 4u;
  for (var c = 0u; c < whole; c += 4u) {
    s0 += ws_u[c * p.mr4 + i] + ws_u[(c + 1u) * p.mr4 + i];
    s1 += ws_u[(c + 2u) * p.mr4 + i] + ws_u[(c + 3u) * p.mr4 + i];
  }
  for (var c = whole; c < p.chunks; c++) { s0 += ws_u[c * p.mr4 + i]; }
  return s0 + s1;
}

fn sum_b(j: u32) -> vec4<f32> {
  var s0 = vec4<f32>(0.0);
  var s1 = vec4<f32>(0.0);
  let whole = p.blocks / 4u * 4u;
  for (var b = 0u; b < whole; b += 4u) {
    s0 += ws_b[b * p.nr4 + j] + ws_b[(b + 1u) * p.nr4 + j];
    s1 += ws_b[(b + 2u) * p.nr4 + j] + ws_b[(b + 3u) * p.nr4 + j];
  }
  for (var b = whole; b < p.blocks; b++) { s0 += ws_b[b * p.nr4 + j]; }
  return s0 + s1;
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i < p.mr4) {
    u[i] = p.scale * sum_u(i);
  } else if (i < p.mr4 + p.nr4) {
    db[i - p.mr4] = p.scale * sum_b(i - p.mr4);
  }
}
