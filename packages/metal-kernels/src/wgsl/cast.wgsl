// cast.wgsl: y[i] = convert(x[i]) between f32, f16, i32 and bool (u32 0/1).
//
// Bindings (group 0):
//   0  x  storage, read        [n] {{TI}}
//   1  y  storage, read_write  [n] {{TO}}
//   2  p  uniform { n: u32, grid_x: u32 }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).
// float → i32 truncates toward zero (WGSL conversion semantics); anything → bool tests != 0.
{{ENABLE}}

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{TI}}>;
@group(0) @binding(1) var<storage, read_write> y: array<{{TO}}>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  y[i] = {{CONVERT}};
}
