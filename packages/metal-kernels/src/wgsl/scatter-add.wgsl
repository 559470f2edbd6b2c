// scatter-add.wgsl: out[o, r, q] = Σ_{j : idx[j] = r} updates[o, j, q]: the adjoint of gather.
// Each thread owns one output element and scans the indices, so no atomics are needed (WGSL has
// no float atomics) and the sum order is fixed (deterministic). Cost: n·count; fine for the
// embedding gradients it serves.
//
// Bindings (group 0):
//   0  indices  storage, read        [count] i32
//   1  updates  storage, read        [outer·count·inner] {{T}}
//   2  out      storage, read_write  [outer·len·inner] {{T}}
//   3  p        uniform { n, len, inner, count, grid_x }   (n = outer·len·inner)
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).
{{ENABLE}}

struct Params { n: u32, len: u32, inner: u32, count: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> indices: array<i32>;
@group(0) @binding(1) var<storage, read> updates: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let q = i % p.inner;
  let r = i32((i / p.inner) % p.len);
  let o = i / (p.inner * p.len);
  var acc = 0.0;
  for (var j = 0u; j < p.count; j++) {
    if (indices[j] == r) { acc += f32(updates[(o * p.count + j) * p.inner + q]); }
  }
  out[i] = {{T}}(acc);
}
