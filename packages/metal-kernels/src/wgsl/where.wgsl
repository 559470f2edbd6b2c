// where.wgsl: out[i] = cond[ic] != 0 ? a[ia] : b[ib], all three broadcast to the output shape.
//
// Bindings (group 0):
//   0  cond  storage, read        {{TC}}
//   1  a     storage, read        {{T}}
//   2  b     storage, read        {{T}}
//   3  out   storage, read_write  [n] {{T}}
//   4  p     uniform { n, rank, grid_x, _, shape[8], c_strides[8], a_strides[8], b_strides[8] }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y). Ranks up to 8.
{{ENABLE}}

struct Params {
  n: u32, rank: u32, grid_x: u32, pad0: u32,
  shape: array<vec4u, 2>,
  c_strides: array<vec4u, 2>,
  a_strides: array<vec4u, 2>,
  b_strides: array<vec4u, 2>,
}

@group(0) @binding(0) var<storage, read> cond: array<{{TC}}>;
@group(0) @binding(1) var<storage, read> a: array<{{T}}>;
@group(0) @binding(2) var<storage, read> b: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

fn at(v: array<vec4u, 2>, d: u32) -> u32 { return v[d / 4u][d % 4u]; }

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  var rest = i;
  var ic = 0u;
  var ia = 0u;
  var ib = 0u;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let dim = at(p.shape, u32(d));
    let idx = rest % dim;
    rest = rest / dim;
    ic += idx * at(p.c_strides, u32(d));
    ia += idx * at(p.a_strides, u32(d));
    ib += idx * at(p.b_strides, u32(d));
  }
  out[i] = select(b[ib], a[ia], cond[ic] != {{TC}}(0));
}
