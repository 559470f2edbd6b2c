// decode-attention.wgsl: out[row] = Σ_j p_j·v[j] with p = softmax(scale·q[row]·kᵀ + mask[t]) over
// the S keys of the row's batch entry and KV head: q [B, H, R, D], k and v [B, H, S, D], the
// mask [T, S] (shared) or [B, T, S] (PER_SEQ), t = r mod T. One workgroup per query row (a decode
// step has B·H·R of them): a first pass finds the largest score, a second one turns a chunk of
// CHUNK scores at a time into probabilities in workgroup memory and accumulates them into the
// output, with LANES = ⌊256 / D⌋ threads per output feature. The scores are never stored.
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  out   storage, read_write  [B·H·R·D] {{T}}
//   5  p     uniform { rows, S, D, R, T, HR (H·R), grid_x, scale }
// Dispatch: one workgroup of 256 per query row, folded into (x, y). 1 ≤ D ≤ 256.
// Overrides: PER_SEQ (0/1).
{{ENABLE}}

const WG: u32 = 256u;
const CHUNK: u32 = 1024u;
override PER_SEQ: u32 = 0u;

struct Params { rows: u32, S: u32, D: u32, R: u32, T: u32, HR: u32, grid_x: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> q: array<{{T}}>;
@group(0) @binding(1) var<storage, read> k: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v: array<{{T}}>;
@group(0) @binding(3) var<storage, read> mask: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> out: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

var<workgroup> qs: array<f32, WG>;
var<workgroup> probs: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;

fn score(keys: u32, m: u32, j: u32) -> f32 {
  var dot = 0.0;
  for (var d = 0u; d < p.D; d++) { dot = fma(qs[d], f32(k[keys + j * p.D + d]), dot); }
  return dot * p.scale + f32(mask[m + j]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.x + wid.y * p.grid_x;
  // Uniform control flow: a row past the end still takes part in every barrier.
  let live = row < p.rows;
  let r = row % p.R;
  let b = row / p.HR;
  let keys = (row / p.R) * p.S * p.D;
  let m = (select(0u, b * p.T, PER_SEQ == 1u) + r % p.T) * p.S;
  let i = lid.x;
  if (live && i < p.D) { qs[i] = f32(q[row * p.D + i]); }
  workgroupBarrier();

  // Pass 1: the largest score.
  var mx = -3.0e38;
  if (live) { for (var j = i; j < p.S; j += WG) { mx = max(mx, score(keys, m, j)); } }
  red[i] = mx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (i < s) { red[i] = max(red[i], red[i + s]); }
    workgroupBarrier();
  }
  mx = red[0];
  workgroupBarrier();

  // Pass 2: probabilities a chunk at a time, summed, and accumulated into the output features.
  let lanes = WG / p.D;
  let lane = i / p.D;
  let d = i % p.D;
  var total = 0.0;
  var acc = 0.0;
  for (var c0 = 0u; c0 < p.S; c0 += CHUNK) {
    let n = min(CHUNK, p.S - c0);
    for (var j = i; j < n; j += WG) {
      var e = 0.0;
      if (live) { e = exp(score(keys, m, c0 + j) - mx); }
      probs[j] = e;
      total += e;
    }
    workgroupBarrier();
    if (live && lane < lanes) {
      for (var j = lane; j < n; j += lanes) { acc = fma(probs[j], f32(v[keys + (c0 + j) * p.D + d]), acc); }
    }
    workgroupBarrier();
  }
  red[i] = total;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (i < s) { red[i] += red[i + s]; }
    workgroupBarrier();
  }
  total = red[0];
  workgroupBarrier();
  // The lanes of each feature: lane 0 sums them.
  red[i] = select(0.0, acc, lane < lanes);
  workgroupBarrier();
  if (live && lane == 0u && d < p.D) {
    var sum = 0.0;
    for (var l = 0u; l < lanes; l++) { sum += red[l * p.D + d]; }
    out[row * p.D + d] = {{T}}(sum / total);
  }
}
