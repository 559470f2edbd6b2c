// copy-vec4.wgsl: dst[i] = src[i] over vec4<f32>, the bandwidth ceiling a bandwidth-bound
// kernel can reach through WebGPU (bytes read + bytes written).
//
// Bindings (group 0):
//   0  src  storage, read        [n] vec4<f32>
//   1  dst  storage, read_write  [n] vec4<f32>
//   2  p    uniform { n: u32, grid_x: u32 }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i < p.n) { dst[i] = src[i]; }
}
