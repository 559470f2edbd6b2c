// rms-norm.wgsl: per row of x [rows, D]: rstd = 1 / sqrt(mean(x²) + eps), y = x·rstd·w with
// w = weight (or 1 + weight when OFFSET = 1); f32 arithmetic.
//
// Bindings (group 0):
//   0  x       storage, read        [rows·D] {{T}}
//   1  weight  storage, read        [D] {{T}}
//   2  y       storage, read_write  [rows·D] {{T}}
//   3  rstd    storage, read_write  [rows] {{T}}
//   4  p       uniform { rows: u32, d: u32, grid_x: u32, eps: f32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y) (grid_x = workgroups along x).
// Overrides: OFFSET 0 or 1.
{{ENABLE}}

override OFFSET: u32 = 0u;
const WG: u32 = 256u;

struct Params { rows: u32, d: u32, grid_x: u32, eps: f32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read> weight: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> rstd: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.d;
  var ss = 0.0;
  for (var k = lid.x; k < p.d; k += WG) {
    let v = f32(x[base + k]);
    ss += v * v;
  }
  partial[lid.x] = ss;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
    workgroupBarrier();
  }
  let r = 1.0 / sqrt(partial[0] / f32(p.d) + p.eps);
  for (var k = lid.x; k < p.d; k += WG) {
    let w = f32(weight[k]) + select(0.0, 1.0, OFFSET == 1u);
    y[base + k] = {{T}}(f32(x[base + k]) * r * w);
  }
  if (lid.x == 0u) { rstd[row] = {{T}}(r); }
}
