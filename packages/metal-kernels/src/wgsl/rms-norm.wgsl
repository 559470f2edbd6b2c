// rms-norm.wgsl: per row of x [rows, D], with w = weight (or 1 + weight when OFFSET = 1):
//   forward (BACKWARD = 0): rstd = 1 / sqrt(mean(x²) + eps), y = x·rstd·w
//   backward (BACKWARD = 1): with h = dy·w and n = x·rstd, dx = rstd·(h − n·mean(h·n))
//   residual (RESIDUAL = 1, forward): sum = x + residual is written, then normalized as x above
// f32 arithmetic.
//
// Bindings (group 0):
//   0  x       storage, read        [rows·D] {{T}}
//   1  weight  storage, read        [D] {{T}}
//   2  out     storage, read_write  [rows·D] {{T}}   y, or dx when BACKWARD = 1
//   3  rstd    storage, read_write  [rows] {{T}}     written forward, read backward;
//                                   sum [rows·D] when RESIDUAL = 1
//   4  dy      storage, read        [rows·D] {{T}}   (BACKWARD = 1); residual (RESIDUAL = 1)
//   5  p       uniform { rows: u32, d: u32, grid_x: u32, eps: f32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y) (grid_x = workgroups along x).
// Overrides: OFFSET 0 or 1.
{{ENABLE}}

override OFFSET: u32 = 0u;
const WG: u32 = 256u;

struct Params { rows: u32, d: u32, grid_x: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read> weight: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;
{{^RESIDUAL}}
@group(0) @binding(3) var<storage, read_write> rstd: array<{{T}}>;
{{/RESIDUAL}}
{{#RESIDUAL}}
@group(0) @binding(3) var<storage, read_write> sum: array<{{T}}>;
@group(0) @binding(4) var<storage, read> residual: array<{{T}}>;
{{/RESIDUAL}}
{{#BACKWARD}}
@group(0) @binding(4) var<storage, read> dy: array<{{T}}>;
{{/BACKWARD}}
@group(0) @binding(5) var<uniform> p: Params;

// One sum per row (forward Σ x², backward Σ dy·w·x), by lib/row-reduce.wgsl's tree.
alias Reduced = f32;
fn combine(a: f32, b: f32, op: u32) -> f32 { return a + b; }
{{>row-reduce}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.d;
  let shift = select(0.0, 1.0, OFFSET == 1u);
{{#RESIDUAL}}
  // Each thread normalizes the elements it summed, so it reads back only its own writes.
  var ss = 0.0;
  for (var k = lid.x; k < p.d; k += WG) {
    let s = {{T}}(f32(x[base + k]) + f32(residual[base + k]));
    sum[base + k] = s;
    ss += f32(s) * f32(s);
  }
  let r = 1.0 / sqrt(row_reduce(ss, lid.x, 0u) / f32(p.d) + p.eps);
  for (var k = lid.x; k < p.d; k += WG) {
    out[base + k] = {{T}}(f32(sum[base + k]) * r * (f32(weight[k]) + shift));
  }
{{/RESIDUAL}}
{{^RESIDUAL}}
{{^BACKWARD}}
  var ss = 0.0;
  for (var k = lid.x; k < p.d; k += WG) {
    let v = f32(x[base + k]);
    ss += v * v;
  }
  let r = 1.0 / sqrt(row_reduce(ss, lid.x, 0u) / f32(p.d) + p.eps);
  for (var k = lid.x; k < p.d; k += WG) {
    out[base + k] = {{T}}(f32(x[base + k]) * r * (f32(weight[k]) + shift));
  }
  if (lid.x == 0u) { rstd[row] = {{T}}(r); }
{{/BACKWARD}}
{{/RESIDUAL}}
{{#BACKWARD}}
  var dot = 0.0;
  for (var k = lid.x; k < p.d; k += WG) {
    dot += f32(dy[base + k]) * (f32(weight[k]) + shift) * f32(x[base + k]);
  }
  let r = f32(rstd[row]);
  // mean(h·n) = r·dot / D, and n = x·r: the correction per element is x·r²·(r·dot / D).
  let c = r * r * r * row_reduce(dot, lid.x, 0u) / f32(p.d);
  for (var k = lid.x; k < p.d; k += WG) {
    out[base + k] = {{T}}(r * f32(dy[base + k]) * (f32(weight[k]) + shift) - f32(x[base + k]) * c);
  }
{{/BACKWARD}}
}
