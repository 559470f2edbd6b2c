// softmax.wgsl: softmax over each row of x [rows, S] (rows = the leading dims; the backend moves
// another axis to the end first), in f32:
//   MASK = 0: y = softmax(x), or log-softmax when LOG = 1
//   MASK = 1: attention's y = softmax(x·scale + mask[mask_row]) with mask_row = (r / per_batch)·T + r % T
//             for a mask per sequence (PER_SEQ = 1, mask [B, T, S]) or r % T for a shared one ([T, S])
//   BACKWARD = 1 (with MASK = 1): from the saved y and dy, dx = scale·y·(dy − Σ_j dy·y)
//
// Bindings (group 0):
//   0  x     storage, read        [rows·S] {{T}}   (y when BACKWARD = 1)
//   1  mask  storage, read        [(B or 1)·T·S] {{T}}   (dy when BACKWARD = 1; MASK = 1 only)
//   2  out   storage, read_write  [rows·S] {{T}}
//   3  p     uniform { rows, s, t, per_batch, grid_x: u32, scale: f32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y) (grid_x = workgroups along x).
// Overrides: LOG 0 or 1 (MASK = 0), PER_SEQ 0 or 1 (MASK = 1, forward).
{{ENABLE}}

override LOG: u32 = 0u;
override PER_SEQ: u32 = 0u;
const WG: u32 = 256u;

struct Params { rows: u32, s: u32, t: u32, per_batch: u32, grid_x: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
{{#MASK}}
@group(0) @binding(1) var<storage, read> mask: array<{{T}}>;
{{/MASK}}
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(3) var<uniform> p: Params;

// Row maxima (op 1) and sums (op 0) by lib/row-reduce.wgsl's tree.
alias Reduced = f32;
fn combine(a: f32, b: f32, op: u32) -> f32 { return select(a + b, max(a, b), op == 1u); }
{{>row-reduce}}

// The forward pass reduces twice: every thread reads the first result before `partial` is reused.
fn reduce(v: f32, lid: u32, op: u32) -> f32 {
  let r = row_reduce(v, lid, op);
  workgroupBarrier();
  return r;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.s;
{{^BACKWARD}}
{{#MASK}}
  let m_base = (select(0u, (row / p.per_batch) * p.t, PER_SEQ == 1u) + row % p.t) * p.s;
{{/MASK}}
  var neg_inf_bits = 0xff800000u; // a var: constant -inf is rejected by constant evaluation
  var m = bitcast<f32>(neg_inf_bits);
  for (var k = lid.x; k < p.s; k += WG) { m = max(m, logit(base, {{#MASK}}m_base, {{/MASK}}k)); }
  m = reduce(m, lid.x, 1u);
  var total = 0.0;
  for (var k = lid.x; k < p.s; k += WG) { total += exp(logit(base, {{#MASK}}m_base, {{/MASK}}k) - m); }
  total = reduce(total, lid.x, 0u);
  let log_total = log(total);
  for (var k = lid.x; k < p.s; k += WG) {
    let z = logit(base, {{#MASK}}m_base, {{/MASK}}k) - m;
    out[base + k] = {{T}}(select(exp(z) / total, z - log_total, LOG == 1u));
  }
{{/BACKWARD}}
{{#BACKWARD}}
  var dot = 0.0;
  for (var k = lid.x; k < p.s; k += WG) { dot += f32(x[base + k]) * f32(mask[base + k]); }
  dot = reduce(dot, lid.x, 0u);
  for (var k = lid.x; k < p.s; k += WG) {
    out[base + k] = {{T}}(p.scale * f32(x[base + k]) * (f32(mask[base + k]) - dot));
  }
{{/BACKWARD}}
}

{{#MASK}}
fn logit(base: u32, m_base: u32, k: u32) -> f32 { return f32(x[base + k]) * p.scale + f32(mask[m_base + k]); }
{{/MASK}}
{{^MASK}}
fn logit(base: u32, k: u32) -> f32 { return f32(x[base + k]); }
{{/MASK}}
