// softmax-rows.wgsl: softmax (or log-softmax) of each row of a row-major [rows, len] input.
// The backend permutes the softmax axis to the end first when it is not the last one.
//
// Bindings (group 0):
//   0  x    storage, read        [rows·len] {{T}}
//   1  out  storage, read_write  [rows·len] {{T}}
//   2  p    uniform { rows: u32, len: u32, grid_x: u32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y). Three passes over the
// row (max, sum of exp(x - max), write), each reduced in workgroup memory; f32 arithmetic.
// Overrides: LOG 0 = softmax, 1 = log-softmax.
{{ENABLE}}

override LOG: u32 = 0u;
const WG: u32 = 256u;

struct Params { rows: u32, len: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

var<workgroup> partial: array<f32, WG>;

fn reduce_max(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { partial[lid] = max(partial[lid], partial[lid + s]); }
    workgroupBarrier();
  }
  let r = partial[0];
  workgroupBarrier();
  return r;
}

fn reduce_sum(v: f32, lid: u32) -> f32 {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { partial[lid] = partial[lid] + partial[lid + s]; }
    workgroupBarrier();
  }
  let r = partial[0];
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var neg_inf_bits = 0xff800000u; // a var: constant -inf is rejected by constant evaluation
  var m = bitcast<f32>(neg_inf_bits);
  for (var k = lid.x; k < p.len; k += WG) { m = max(m, f32(x[base + k])); }
  m = reduce_max(m, lid.x);
  var total = 0.0;
  for (var k = lid.x; k < p.len; k += WG) { total += exp(f32(x[base + k]) - m); }
  total = reduce_sum(total, lid.x);
  let log_total = log(total);
  for (var k = lid.x; k < p.len; k += WG) {
    let z = f32(x[base + k]) - m;
    out[base + k] = {{T}}(select(exp(z) / total, z - log_total, LOG == 1u));
  }
}
