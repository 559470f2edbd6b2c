// write-slice.wgsl: dst[o, start + s, q] = src[o, s, q] with dst viewed as [outer, dim, inner],
// src as [outer, span, inner] and start read from a buffer (so a recorded dispatch serves every
// step of a cache that grows). Rows that would land outside dst (start < 0 or start + s ≥ dim)
// are not written: a GPU kernel must never write outside its buffer.
//
// Bindings (group 0):
//   0  src    storage, read        [outer·span·inner] {{T}}
//   1  start  storage, read        [1] i32
//   2  dst    storage, read_write  [outer·dim·inner] {{T}}
//   3  p      uniform { n, span, inner, dim, grid_x }
// Dispatch: ceil(n / 256) workgroups of 256 (n = outer·span·inner), folded into (x, y).
{{ENABLE}}

struct Params { n: u32, span: u32, inner: u32, dim: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> src: array<{{T}}>;
@group(0) @binding(1) var<storage, read> start: array<i32>;
@group(0) @binding(2) var<storage, read_write> dst: array<{{T}}>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let q = i % p.inner;
  let s = (i / p.inner) % p.span;
  let o = i / (p.inner * p.span);
  let at = start[0];
  if (at < 0 || u32(at) + s >= p.dim) { return; }
  dst[(o * p.dim + u32(at) + s) * p.inner + q] = src[i];
}
