// rms-norm-backward.wgsl: per row, with w = weight (or 1 + weight when OFFSET = 1), h = dy·w and
// n = x·rstd: dx = rstd·(h − n·mean(h·n)); f32 arithmetic.
//
// Bindings (group 0):
//   0  dy      storage, read        [rows·D] {{T}}
//   1  x       storage, read        [rows·D] {{T}}
//   2  weight  storage, read        [D] {{T}}
//   3  rstd    storage, read        [rows] {{T}}
//   4  dx      storage, read_write  [rows·D] {{T}}
//   5  p       uniform { rows: u32, d: u32, grid_x: u32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y) (grid_x = workgroups along x).
// Overrides: OFFSET 0 or 1.
{{ENABLE}}

override OFFSET: u32 = 0u;
const WG: u32 = 256u;

struct Params { rows: u32, d: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> dy: array<{{T}}>;
@group(0) @binding(1) var<storage, read> x: array<{{T}}>;
@group(0) @binding(2) var<storage, read> weight: array<{{T}}>;
@group(0) @binding(3) var<storage, read> rstd: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> dx: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.d;
  let shift = select(0.0, 1.0, OFFSET == 1u);
  var dot = 0.0;
  for (var k = lid.x; k < p.d; k += WG) {
    dot += f32(dy[base + k]) * (f32(weight[k]) + shift) * f32(x[base + k]);
  }
  partial[lid.x] = dot;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid.x < s) { partial[lid.x] = partial[lid.x] + partial[lid.x + s]; }
    workgroupBarrier();
  }
  let r = f32(rstd[row]);
  // mean(h·n) = r·dot / D, and n = x·r: the correction per element is x·r²·(r·dot / D).
  let c = r * r * r * partial[0] / f32(p.d);
  for (var k = lid.x; k < p.d; k += WG) {
    let h = f32(dy[base + k]) * (f32(weight[k]) + shift);
    dx[base + k] = {{T}}(r * h - f32(x[base + k]) * c);
  }
}
