// attention-forward.wgsl: y[row] = Σ_j p_j·v[j], p = softmax(scale·q[row]·kᵀ + mask[t]) over the
// keys the row sees, and lse[row] = log Σ_j exp(scale·q·k_j + mask) (for backward), with q and y
// [B, H, R, D], k and v [B, H, S, D], the mask [T, S] or [B, T, S] (PER_SEQ), row r at position
// t = r mod T; with `causal`, keys past t + S - T are left out whatever the mask says. Flash
// style: a workgroup takes 32 rows of one batch entry and KV head and walks the keys 32 at a time
// with an online softmax, so the scores are never stored. Per block of keys: the scores as a
// register-tiled product (thread: rows group + 8·a, keys lane + 16·c) over chunks of 16 features of
// q and k; each row's block maximum through workgroup memory; the probabilities into workgroup
// memory; then y (thread: rows group + 8·a, vec4 lane + 16·n) += P·v over chunks of VK values.
// Global loads run a step ahead: the next chunk of q and k (or the next block's first) while a
// chunk's products run, and the block's first values while its softmax runs, the next ones while
// a chunk of values is used. Each thread keeps a partial sum of its rows' probabilities, added up
// at the end. A row that
// sees no key gives zeros (and lse = 3e38, so backward gives it no gradient).
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  y     storage, read_write  [B·H·R·D] {{T}}
//   5  lse   storage, read_write  [B·H·R] f32
//   6  p     uniform (lib/attention-scores.wgsl)
// Dispatch: (ceil(R / 32), B·H) workgroups of 128. Text constants: D (1..256), DV4, ON, VK (keys
// of v per chunk: a power of two from 4 to 32 with VK·DV4 ≤ 512), VPT = ceil(VK·DV4 / 128) (vec4
// of v per thread and chunk). Overrides: PER_SEQ (0/1).
{{ENABLE}}

const DK: u32 = 16u;
const STRIDE: u32 = 5u; // vec4 per staged row of a feature chunk (DK / 4, padded to odd)
const VK: u32 = {{VK}}u;
const VPT: u32 = {{VPT}}u;

@group(0) @binding(0) var<storage, read> q: array<{{T}}>;
@group(0) @binding(1) var<storage, read> k: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v: array<{{T}}>;
@group(0) @binding(3) var<storage, read> mask: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(5) var<storage, read_write> lse: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

{{>attention-scores}}

// Feature chunks of q (rows 0..31) then k (keys 0..31); later VK keys of v.
var<workgroup> stage: array<vec4<f32>, 512>;
// Per row, 16 partials (a block maximum per lane, or a partial sum at the end).
var<workgroup> red: array<vec4<f32>, 128>;
// Probabilities of the block: 32 rows of 32 keys.
var<workgroup> blk: array<vec4<f32>, 256>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let group = i / 16u;
  let lane = i % 16u;
  let bh = wid.y;
  let b = bh / p.H;
  let r0 = wid.x * BLOCK;
  let rows = bh * p.R;
  let keys = bh * p.S;
  let end = block_key_end(wid);
  // Staging: thread i loads vec4 i % 4 of the chunk for row (and key) i / 4.
  let se = i / 4u;
  let sv = i % 4u;
  let own = array<Row, 4>(row_of(b, r0 + group), row_of(b, r0 + group + 8u), row_of(b, r0 + group + 16u), row_of(b, r0 + group + 24u));

  var m = array<f32, 4>(EXCLUDED, EXCLUDED, EXCLUDED, EXCLUDED);
  var l = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
  var acc: array<vec4<f32>, 4 * ON>;
  for (var n = 0u; n < 4u * ON; n++) { acc[n] = vec4<f32>(0.0); }

  // The chunk in flight: q and k of features nd.. of block nj.
  var qn = vec4<f32>(0.0);
  var kn = vec4<f32>(0.0);
  if (r0 + se < p.R) { qn = load_q(rows + r0 + se, 4u * sv); }
  if (se < p.S) { kn = load_k(keys + se, 4u * sv); }
  var ahead: array<vec4<f32>, VPT>;
  for (var j0 = 0u; j0 < end; j0 += BLOCK) {
    var s: array<f32, 8>;
    for (var e = 0u; e < 8u; e++) { s[e] = 0.0; }
    for (var d0 = 0u; d0 < D; d0 += DK) {
      stage[se * STRIDE + sv] = qn;
      stage[(BLOCK + se) * STRIDE + sv] = kn;
      workgroupBarrier();
      var nd = d0 + DK;
      var nj = j0;
      if (nd >= D) {
        nd = 0u;
        nj = j0 + BLOCK;
      }
      qn = vec4<f32>(0.0);
      kn = vec4<f32>(0.0);
      if (nj < end) {
        if (r0 + se < p.R) { qn = load_q(rows + r0 + se, nd + 4u * sv); }
        if (nj + se < p.S) { kn = load_k(keys + nj + se, nd + 4u * sv); }
      }
      for (var c = 0u; c < DK / 4u; c++) {
        let k0 = stage[(BLOCK + lane) * STRIDE + c];
        let k1 = stage[(BLOCK + lane + 16u) * STRIDE + c];
        for (var a = 0u; a < 4u; a++) {
          let qa = stage[(group + 8u * a) * STRIDE + c];
          s[2u * a] += dot(qa, k0);
          s[2u * a + 1u] += dot(qa, k1);
        }
      }
      workgroupBarrier();
    }
    ahead = fetch_keys(keys, j0, i);
    for (var a = 0u; a < 4u; a++) {
      s[2u * a] = score(s[2u * a], own[a], j0 + lane);
      s[2u * a + 1u] = score(s[2u * a + 1u], own[a], j0 + lane + 16u);
      red[(group + 8u * a) * 4u + lane / 4u][lane % 4u] = max(s[2u * a], s[2u * a + 1u]);
    }
    workgroupBarrier();
    for (var a = 0u; a < 4u; a++) {
      let row = group + 8u * a;
      let x = max(max(red[row * 4u], red[row * 4u + 1u]), max(red[row * 4u + 2u], red[row * 4u + 3u]));
      let next = max(m[a], max(max(x.x, x.y), max(x.z, x.w)));
      let alpha = exp(m[a] - next);
      m[a] = next;
      let p0 = select(0.0, exp(s[2u * a] - next), s[2u * a] > EXCLUDED);
      let p1 = select(0.0, exp(s[2u * a + 1u] - next), s[2u * a + 1u] > EXCLUDED);
      l[a] = l[a] * alpha + p0 + p1;
      for (var n = 0u; n < ON; n++) { acc[a * ON + n] *= alpha; }
      blk[row * 8u + lane / 4u][lane % 4u] = p0;
      blk[row * 8u + (lane + 16u) / 4u][lane % 4u] = p1;
    }
    {{>attention-key-chunks}}
  }
  for (var a = 0u; a < 4u; a++) { red[(group + 8u * a) * 4u + lane / 4u][lane % 4u] = l[a]; }
  workgroupBarrier();
  for (var a = 0u; a < 4u; a++) {
    let row = group + 8u * a;
    let r = r0 + row;
    if (r < p.R) {
      let x = red[row * 4u] + red[row * 4u + 1u] + red[row * 4u + 2u] + red[row * 4u + 3u];
      let sum = x.x + x.y + x.z + x.w;
      let inv = select(0.0, 1.0 / sum, sum > 0.0);
      for (var n = 0u; n < ON; n++) {
        let f = lane + 16u * n;
        for (var e = 0u; e < 4u; e++) {
          let d = 4u * f + e;
          if (f < DV4 && d < D) { y[(rows + r) * D + d] = {{T}}(acc[a * ON + n][e] * inv); }
        }
      }
      if (lane == 0u) { lse[rows + r] = select(3.0e38, m[a] + log(sum), sum > 0.0); }
    }
  }
}
