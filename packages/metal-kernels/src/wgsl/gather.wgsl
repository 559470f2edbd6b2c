// gather.wgsl: out[o, j, q] = table[o, idx[j], q] with table viewed as [outer, len, inner] and
// the indices flattened to [count]. Out-of-range indices are clamped (the op validates them on
// host-side backends; a GPU kernel must never read outside its buffer).
//
// Bindings (group 0):
//   0  table    storage, read        [outer·len·inner] {{T}}
//   1  indices  storage, read        [count] i32
//   2  out      storage, read_write  [outer·count·inner] {{T}}
//   3  p        uniform { n, len, inner, count, grid_x }
// Dispatch: ceil(n / 256) workgroups of 256 (n = outer·count·inner), folded into (x, y).
{{ENABLE}}

struct Params { n: u32, len: u32, inner: u32, count: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> table: array<{{T}}>;
@group(0) @binding(1) var<storage, read> indices: array<i32>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let q = i % p.inner;
  let j = (i / p.inner) % p.count;
  let o = i / (p.inner * p.count);
  let row = u32(clamp(indices[j], 0, i32(p.len) - 1));
  out[i] = table[(o * p.len + row) * p.inner + q];
}
