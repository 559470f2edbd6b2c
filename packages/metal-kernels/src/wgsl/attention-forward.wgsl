// attention-forward.wgsl: y[row] = Σ_j p_j·v[j], p = softmax(scale·q[row]·kᵀ + mask[t]) over the
// keys the row sees, and lse[row] = log Σ_j exp(scale·q·k_j + mask) (for backward), with q and y
// [B, H, R, D], k and v [B, H, S, D], the mask [T, S] or [B, T, S] (PER_SEQ), row r at position
// t = r mod T; with `causal`, keys past t + S - T are left out whatever the mask says. Flash
// style: a workgroup takes BR = 16 rows of one batch entry and KV head and walks the keys BC = 8 at
// a time with an online softmax, so the scores are never stored. Thread i works on row i / 8: it
// scores key i % 8 of the block and accumulates features i % 8 + 8·n of y in registers (DS of
// them). A row that sees no key gives zeros (and lse = 3e38, so backward gives it no gradient).
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  y     storage, read_write  [B·H·R·D] {{T}}
//   5  lse   storage, read_write  [B·H·R] f32
//   6  p     uniform (lib/attention-scores.wgsl)
// Dispatch: (ceil(R / 16), B·H) workgroups of 128. Text constants: D (1..256), DS = ceil(D / 8).
// Overrides: PER_SEQ (0/1).
{{ENABLE}}

const BR: u32 = 16u;
const BC: u32 = 8u;

{{>attention-scores}}

@group(0) @binding(0) var<storage, read> q: array<{{T}}>;
@group(0) @binding(1) var<storage, read> k: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v: array<{{T}}>;
@group(0) @binding(3) var<storage, read> mask: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

// One block of keys, then of values, each row padded to DP features with zeros.
var<workgroup> kv: array<f32, BC * DP>;
var<workgroup> s: array<f32, BR * BC>;
var<workgroup> alpha: array<f32, BR>;
var<workgroup> total: array<f32, BR>;

fn stage(src_base: u32, j0: u32, use_v: bool, i: u32) {
  for (var e = i; e < BC * DP; e += 128u) {
    let c = e / DP;
    let d = e % DP;
    var x = 0.0;
    if (j0 + c < p.S && d < D) {
      if (use_v) { x = f32(v[src_base + (j0 + c) * D + d]); } else { x = f32(k[src_base + (j0 + c) * D + d]); }
    }
    kv[e] = x;
  }
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let w = row_block(wid, i);
  let end = block_key_end(wid);

  var o: array<f32, DS>;
  for (var n = 0u; n < DS; n++) { o[n] = 0.0; }
  var mx = EXCLUDED;
  var l = 0.0;
  for (var j0 = 0u; j0 < end; j0 += BC) {
    stage(w.keys, j0, false, i);
    workgroupBarrier();
    let j = j0 + w.sub;
    var sc = EXCLUDED;
    if (w.live && visible(w.t, j)) {
      var dot = 0.0;
      for (var d = 0u; d < D; d++) { dot = fma(f32(q[w.row * D + d]), kv[w.sub * DP + d], dot); }
      sc = max(dot * p.scale + f32(mask[w.m + j]), EXCLUDED);
    }
    s[w.ri * BC + w.sub] = sc;
    workgroupBarrier();
    if (w.sub == 0u) {
      var next = mx;
      for (var c = 0u; c < BC; c++) { next = max(next, s[w.ri * BC + c]); }
      let a = exp(mx - next);
      var sum = 0.0;
      for (var c = 0u; c < BC; c++) {
        let x = s[w.ri * BC + c];
        let e = select(0.0, exp(x - next), x > EXCLUDED);
        s[w.ri * BC + c] = e;
        sum += e;
      }
      l = l * a + sum;
      mx = next;
      alpha[w.ri] = a;
    }
    workgroupBarrier();
    stage(w.keys, j0, true, i);
    workgroupBarrier();
    let a = alpha[w.ri];
    for (var n = 0u; n < DS; n++) {
      var acc = o[n] * a;
      for (var c = 0u; c < BC; c++) { acc = fma(s[w.ri * BC + c], kv[c * DP + w.sub + 8u * n], acc); }
      o[n] = acc;
    }
    workgroupBarrier();
  }
  if (w.sub == 0u) { total[w.ri] = l; }
  workgroupBarrier();
  if (w.live) {
    let sum = total[w.ri];
    let inv = select(0.0, 1.0 / sum, sum > 0.0);
    for (var n = 0u; n < DS; n++) {
      let d = w.sub + 8u * n;
      if (d < D) { y[w.row * D + d] = {{T}}(o[n] * inv); }
    }
    if (w.sub == 0u) { lse[w.row] = select(3.0e38, mx + log(l), l > 0.0); }
  }
}
