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

// Offsets of cond, a and b (lib/strided-index.wgsl).
alias Offsets = vec3u;
fn strides_at(d: u32) -> Offsets { return vec3u(at(p.c_strides, d), at(p.a_strides, d), at(p.b_strides, d)); }
{{>strided-index}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let o = strided_offsets(i, vec3u(0u));
  out[i] = select(b[o.z], a[o.y], cond[o.x] != {{TC}}(0));
}
