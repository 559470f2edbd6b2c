// attention-dkdv.wgsl: attention's backward for the keys and values: dv = Pᵀ·dy and
// dk = scale·dSᵀ·q, summed over every query row of the batch entry and KV head (the g query heads
// of a group included), P and dS recomputed as in attention-dq.wgsl from the forward's lse and
// that pass's Σ dy·y. A workgroup takes BK = 16 keys and walks the rows BQ = 8 at a time (their q
// and dy staged), skipping, with `causal`, blocks of rows that see none of its keys. Thread i works
// on key i / 8: row i % 8 of the block, features i % 8 + 8·n of dk and dv.
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  lse   storage, read        [B·H·R] f32
//   5  dsum  storage, read        [B·H·R] f32
//   6  dy    storage, read        [B·H·R·D] {{T}}
//   7  dk    storage, read_write  [B·H·S·D] {{T}}
//   8  dv    storage, read_write  [B·H·S·D] {{T}}
//   9  p     uniform (lib/attention-scores.wgsl)
// Dispatch: (ceil(S / 16), B·H) workgroups of 128. Text constants: D (1..256), DS = ceil(D / 8).
// Overrides: PER_SEQ (0/1).
{{ENABLE}}

const BK: u32 = 16u;
const BQ: u32 = 8u;

{{>attention-scores}}

@group(0) @binding(0) var<storage, read> q: array<{{T}}>;
@group(0) @binding(1) var<storage, read> k: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v: array<{{T}}>;
@group(0) @binding(3) var<storage, read> mask: array<{{T}}>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> dsum: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<{{T}}>;
@group(0) @binding(7) var<storage, read_write> dk: array<{{T}}>;
@group(0) @binding(8) var<storage, read_write> dv: array<{{T}}>;
@group(0) @binding(9) var<uniform> p: Params;

var<workgroup> qs: array<f32, BQ * DP>;
var<workgroup> dys: array<f32, BQ * DP>;
var<workgroup> ps: array<f32, BK * BQ>;
var<workgroup> dss: array<f32, BK * BQ>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let bh = wid.y;
  let b = bh / p.H;
  let j0 = wid.x * BK;
  let ci = i / 8u;
  let sub = i % 8u;
  let j = j0 + ci;
  let live = j < p.S;
  let keys = bh * p.S * D;
  let rows = bh * p.R;
  // The first position that sees key j0 (causal): earlier positions see none of this block.
  var first_t = 0u;
  if (p.causal == 1u && j0 + p.T > p.S) { first_t = j0 + p.T - p.S; }

  var gk: array<f32, DS>;
  var gv: array<f32, DS>;
  for (var n = 0u; n < DS; n++) {
    gk[n] = 0.0;
    gv[n] = 0.0;
  }
  for (var r0 = 0u; r0 < p.R; r0 += BQ) {
    // Skip (uniformly) a block of rows whose positions all come before first_t.
    let n_rows = min(BQ, p.R - r0);
    let t0 = r0 % p.T;
    let wraps = t0 + n_rows - 1u >= p.T;
    if (!wraps && t0 + n_rows - 1u < first_t) { continue; }
    for (var e = i; e < BQ * DP; e += 128u) {
      let c = e / DP;
      let d = e % DP;
      var qx = 0.0;
      var gx = 0.0;
      if (r0 + c < p.R && d < D) {
        qx = f32(q[(rows + r0 + c) * D + d]);
        gx = f32(dy[(rows + r0 + c) * D + d]);
      }
      qs[e] = qx;
      dys[e] = gx;
    }
    workgroupBarrier();
    let r = r0 + sub;
    var prob = 0.0;
    var dsc = 0.0;
    let t = r % p.T;
    if (live && r < p.R && visible(t, j)) {
      var dot = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < D; d++) {
        dot = fma(qs[sub * DP + d], f32(k[keys + j * D + d]), dot);
        dp = fma(dys[sub * DP + d], f32(v[keys + j * D + d]), dp);
      }
      let sc = max(dot * p.scale + f32(mask[mask_row(b, t) + j]), EXCLUDED);
      prob = select(0.0, exp(sc - lse[rows + r]), sc > EXCLUDED);
      dsc = prob * (dp - dsum[rows + r]);
    }
    ps[ci * BQ + sub] = prob;
    dss[ci * BQ + sub] = dsc;
    workgroupBarrier();
    for (var n = 0u; n < DS; n++) {
      var av = gv[n];
      var ak = gk[n];
      for (var c = 0u; c < BQ; c++) {
        av = fma(ps[ci * BQ + c], dys[c * DP + sub + 8u * n], av);
        ak = fma(dss[ci * BQ + c], qs[c * DP + sub + 8u * n], ak);
      }
      gv[n] = av;
      gk[n] = ak;
    }
    workgroupBarrier();
  }
  if (live) {
    for (var n = 0u; n < DS; n++) {
      let d = sub + 8u * n;
      if (d < D) {
        dk[keys + j * D + d] = {{T}}(gk[n] * p.scale);
        dv[keys + j * D + d] = {{T}}(gv[n]);
      }
    }
  }
}
