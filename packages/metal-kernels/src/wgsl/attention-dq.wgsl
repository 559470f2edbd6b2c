// attention-dq.wgsl: attention's backward for the queries, and each row's Σ dy·y for the key pass:
// with P = exp(scale·q·kᵀ + mask - lse) recomputed from the forward's lse, dP = dy·vᵀ and
// dS = P·(dP - Σ_d dy·y), dq = scale·dS·k. Rows, keys and the mask as attention-forward.wgsl; a
// workgroup takes BR = 16 rows and walks the keys BC = 8 at a time (keys and values of a block
// staged together). Thread i works on row i / 8: key i % 8 of the block, features i % 8 + 8·n of dq.
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  y     storage, read        [B·H·R·D] {{T}} (the forward's output)
//   5  lse   storage, read        [B·H·R] f32
//   6  dy    storage, read        [B·H·R·D] {{T}}
//   7  dq    storage, read_write  [B·H·R·D] {{T}}
//   8  dsum  storage, read_write  [B·H·R] f32 (Σ_d dy·y per row)
//   9  p     uniform (lib/attention-scores.wgsl)
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
@group(0) @binding(4) var<storage, read> y: array<{{T}}>;
@group(0) @binding(5) var<storage, read> lse: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<{{T}}>;
@group(0) @binding(7) var<storage, read_write> dq: array<{{T}}>;
@group(0) @binding(8) var<storage, read_write> dsum: array<f32>;
@group(0) @binding(9) var<uniform> p: Params;

var<workgroup> ks: array<f32, BC * DP>;
var<workgroup> vs: array<f32, BC * DP>;
var<workgroup> ds: array<f32, BR * BC>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let w = row_block(wid, i);
  let end = block_key_end(wid);

  var delta = 0.0;
  var row_lse = 3.0e38;
  if (w.live) {
    for (var d = 0u; d < D; d++) { delta = fma(f32(dy[w.row * D + d]), f32(y[w.row * D + d]), delta); }
    row_lse = lse[w.row];
    if (w.sub == 0u) { dsum[w.row] = delta; }
  }
  var g: array<f32, DS>;
  for (var n = 0u; n < DS; n++) { g[n] = 0.0; }
  for (var j0 = 0u; j0 < end; j0 += BC) {
    for (var e = i; e < BC * DP; e += 128u) {
      let c = e / DP;
      let d = e % DP;
      var kx = 0.0;
      var vx = 0.0;
      if (j0 + c < p.S && d < D) {
        kx = f32(k[w.keys + (j0 + c) * D + d]);
        vx = f32(v[w.keys + (j0 + c) * D + d]);
      }
      ks[e] = kx;
      vs[e] = vx;
    }
    workgroupBarrier();
    let j = j0 + w.sub;
    var dsc = 0.0;
    if (w.live && visible(w.t, j)) {
      var dot = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < D; d++) {
        dot = fma(f32(q[w.row * D + d]), ks[w.sub * DP + d], dot);
        dp = fma(f32(dy[w.row * D + d]), vs[w.sub * DP + d], dp);
      }
      let sc = max(dot * p.scale + f32(mask[w.m + j]), EXCLUDED);
      let prob = select(0.0, exp(sc - row_lse), sc > EXCLUDED);
      dsc = prob * (dp - delta);
    }
    ds[w.ri * BC + w.sub] = dsc;
    workgroupBarrier();
    for (var n = 0u; n < DS; n++) {
      var acc = g[n];
      for (var c = 0u; c < BC; c++) { acc = fma(ds[w.ri * BC + c], ks[c * DP + w.sub + 8u * n], acc); }
      g[n] = acc;
    }
    workgroupBarrier();
  }
  if (w.live) {
    for (var n = 0u; n < DS; n++) {
      let d = w.sub + 8u * n;
      if (d < D) { dq[w.row * D + d] = {{T}}(g[n] * p.scale); }
    }
  }
}
