// reduce-rows.wgsl: out[r] = reduce(x[r, 0..len)) for a row-major [rows, len] input.
// The backend first permutes reduced axes to the end when they are not already trailing.
//
// Bindings (group 0):
//   0  x    storage, read        [rows·len] {{T}}
//   1  out  storage, read_write  [rows] {{T}}
//   2  p    uniform { rows: u32, len: u32, grid_x: u32 }  (grid_x = workgroups along x)
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y). Each thread strides the
// row, then a tree reduction in workgroup memory. Accumulates in f32.
// Overrides: OP 0 = sum, 1 = max (NaN propagates; max of an empty row is -inf).
{{ENABLE}}

override OP: u32;
const WG: u32 = 256u;

struct Params { rows: u32, len: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

// The row's threads merge their values by lib/row-reduce.wgsl's tree, with op = OP.
alias Reduced = f32;
fn combine(a: f32, b: f32, op: u32) -> f32 {
  if (op == 0u) { return a + b; }
  if (a != a) { return a; }
  if (b != b) { return b; }
  return max(a, b);
}
{{>row-reduce}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var neg_inf_bits = 0xff800000u; // a var: constant -inf is rejected by constant evaluation
  var acc = select(bitcast<f32>(neg_inf_bits), 0.0, OP == 0u);
  for (var k = lid.x; k < p.len; k += WG) {
    acc = combine(acc, f32(x[base + k]), OP);
  }
  let total = row_reduce(acc, lid.x, OP);
  if (lid.x == 0u) { out[row] = {{T}}(total); }
}
