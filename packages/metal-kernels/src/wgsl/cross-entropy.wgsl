// cross-entropy.wgsl: per row of logits x [rows, len], with t = targets[row], w = weights[row]:
//   lse[row] = log Σ_j exp(x[row, j]),  loss[row] = w·(lse − x[row, t])
// (0 where w = 0; NaN where w ≠ 0 and t is outside [0, len)).
//
// Bindings (group 0):
//   0  x        storage, read        [rows·len] {{T}}
//   1  targets  storage, read        [rows] i32
//   2  weights  storage, read        [rows] {{T}}
//   3  loss     storage, read_write  [rows] {{T}}
//   4  lse      storage, read_write  [rows] {{T}}
//   5  p        uniform { rows: u32, len: u32, grid_x: u32 }
// Dispatch: one 256-thread workgroup per row, rows folded into (x, y). One pass over the row with
// a running (max, sum of exp) per thread (online softmax), merged in workgroup memory; f32.
{{ENABLE}}

const WG: u32 = 256u;

struct Params { rows: u32, len: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> weights: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> loss: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> lse: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

// A part of the row as (max, Σ exp(x − max)), merged by lib/row-reduce.wgsl's tree.
alias Reduced = vec2<f32>;
fn combine(a: vec2<f32>, b: vec2<f32>, op: u32) -> vec2<f32> {
  let mm = max(a.x, b.x);
  // A part that saw no finite element holds (-inf, 0) and contributes nothing; a NaN sum is
  // kept rather than dropped (though WGSL does not promise that NaN logits propagate).
  let s1 = select(0.0, a.y * exp(a.x - mm), a.y != 0.0);
  let s2 = select(0.0, b.y * exp(b.x - mm), b.y != 0.0);
  return vec2<f32>(mm, s1 + s2);
}
{{>row-reduce}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  if (row >= p.rows) { return; }
  let base = row * p.len;
  var neg_inf_bits = 0xff800000u; // a var: constant -inf is rejected by constant evaluation
  let neg_inf = bitcast<f32>(neg_inf_bits);
  var m = neg_inf;
  var s = 0.0;
  for (var k = lid.x; k < p.len; k += WG) {
    let v = f32(x[base + k]);
    if (v > m) {
      s = s * exp(m - v) + 1.0;
      m = v;
    } else if (!(v == neg_inf && m == neg_inf)) {
      s += exp(v - m); // (a -inf logit before any finite one adds nothing)
    }
  }
  let total = row_reduce(vec2<f32>(m, s), lid.x, 0u);
  if (lid.x == 0u) {
    let total_lse = total.x + log(total.y);
    let t = targets[row];
    let w = f32(weights[row]);
    let valid = t >= 0 && u32(t) < p.len;
    var nan_bits = 0x7fc00000u;
    let picked = select(0.0, f32(x[base + u32(max(t, 0))]), valid);
    let value = select(select(bitcast<f32>(nan_bits), w * (total_lse - picked), valid), 0.0, w == 0.0);
    loss[row] = {{T}}(value);
    lse[row] = {{T}}(total_lse);
  }
}
