// fill.wgsl: y[i] = value for i < n.
//
// Bindings (group 0):
//   0  y  storage, read_write  [n] {{T}}
//   1  p  uniform { n: u32, grid_x: u32, value: f32 }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).
{{ENABLE}}

struct Params { n: u32, grid_x: u32, value: f32 }

@group(0) @binding(0) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  y[i] = {{T}}(p.value);
}
