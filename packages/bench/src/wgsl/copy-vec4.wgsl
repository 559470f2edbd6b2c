// copy-vec4.wgsl: dst[i] = src[i] over vec4<f32>, the bandwidth ceiling a bandwidth-bound
// kernel can reach through WebGPU (bytes read + bytes written).
//
// Bindings (group 0):
//   0  src  storage, read        [n] vec4<f32>
//   1  dst  storage, read_write  [n] vec4<f32>
//   2  p    uniform { n: u32, grid_x: u32 }
// Override PER (1, 2, 4 or 8): vec4s per thread, all loaded before any is stored; workgroup w copies
//   [w·256·PER, (w + 1)·256·PER), thread t the vec4s t, t + 256, … of it.
// Dispatch: ceil(n / (256·PER)) workgroups of 256, folded into (x, y).

override PER: u32 = 1u;

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: Params;

// Thread's j-th vec4 (zero past n, never stored there).
fn load(base: u32, j: u32) -> vec4<f32> {
  let i = base + j * 256u;
  return select(vec4<f32>(0.0), src[min(i, p.n - 1u)], i < p.n);
}

fn store(base: u32, j: u32, v: vec4<f32>) {
  let i = base + j * 256u;
  if (i < p.n) { dst[i] = v; }
}

// Written out for PER ≤ 8 (no array: an indexed private array can land in local memory).
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let base = (wid.x + wid.y * p.grid_x) * 256u * PER + lid.x;
  let v0 = load(base, 0u);
  var v1 = vec4<f32>(0.0);
  var v2 = vec4<f32>(0.0);
  var v3 = vec4<f32>(0.0);
  var v4 = vec4<f32>(0.0);
  var v5 = vec4<f32>(0.0);
  var v6 = vec4<f32>(0.0);
  var v7 = vec4<f32>(0.0);
  if (PER > 1u) { v1 = load(base, 1u); }
  if (PER > 2u) { v2 = load(base, 2u); v3 = load(base, 3u); }
  if (PER > 4u) { v4 = load(base, 4u); v5 = load(base, 5u); v6 = load(base, 6u); v7 = load(base, 7u); }
  store(base, 0u, v0);
  if (PER > 1u) { store(base, 1u, v1); }
  if (PER > 2u) { store(base, 2u, v2); store(base, 3u, v3); }
  if (PER > 4u) { store(base, 4u, v4); store(base, 5u, v5); store(base, 6u, v6); store(base, 7u, v7); }
}
