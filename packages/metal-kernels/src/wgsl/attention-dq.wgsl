// attention-dq.wgsl: attention's backward for the queries, and each row's Σ dy·y for the key pass:
// with P = exp(scale·q·kᵀ + mask - lse) recomputed from the forward's lse, dP = dy·vᵀ and
// dS = P·(dP - Σ_d dy·y), dq = scale·dS·k. Rows, keys and the mask as attention-forward.wgsl; a
// workgroup takes 32 rows and walks the keys 32 at a time. Per block: the scores and dP as
// register-tiled products over chunks of 16 features of q, k, dy and v staged together (thread:
// rows group + 8·a, keys lane + 16·c); dS into workgroup memory; then dq (thread: rows group + 8·a,
// vec4 lane + 16·n) += dS·k over chunks of VK keys. Global loads run a step ahead, as in
// attention-forward.wgsl.
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
// Dispatch: (ceil(R / 32), B·H) workgroups of 128. Text constants: D (1..256), DV4, ON, VK (keys
// of k per chunk: a power of two from 4 to 32 with VK·DV4 ≤ 512), VPT = ceil(VK·DV4 / 128).
// Overrides: PER_SEQ (0/1).
{{ENABLE}}

const DK: u32 = 16u;
const STRIDE: u32 = 5u; // vec4 per staged row of a feature chunk (DK / 4, padded to odd)
const VK: u32 = {{VK}}u;
const VPT: u32 = {{VPT}}u;

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

{{>attention-scores}}

// Feature chunks of q, dy (rows 0..31), k and v (keys 0..31); later VK keys of k.
var<workgroup> stage: array<vec4<f32>, 640>;
// Per row, 16 partials of Σ dy·y.
var<workgroup> red: array<vec4<f32>, 128>;
// dS of the block: 32 rows of 32 keys.
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
  let se = i / 4u;
  let sv = i % 4u;
  let own = array<Row, 4>(row_of(b, r0 + group), row_of(b, r0 + group + 8u), row_of(b, r0 + group + 16u), row_of(b, r0 + group + 24u));

  // Σ dy·y of each row: lanes take vec4 lane + 16·n, then add up through workgroup memory.
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + group + 8u * a;
    var part = 0.0;
    if (r < p.R) {
      for (var n = 0u; n < ON; n++) {
        let f = lane + 16u * n;
        if (f < DV4) { part += dot(load_dy(rows + r, 4u * f), load_y(rows + r, 4u * f)); }
      }
    }
    red[(group + 8u * a) * 4u + lane / 4u][lane % 4u] = part;
  }
  workgroupBarrier();
  var delta: array<f32, 4>;
  var row_lse: array<f32, 4>;
  for (var a = 0u; a < 4u; a++) {
    let row = group + 8u * a;
    let x = red[row * 4u] + red[row * 4u + 1u] + red[row * 4u + 2u] + red[row * 4u + 3u];
    delta[a] = x.x + x.y + x.z + x.w;
    row_lse[a] = 3.0e38;
    if (r0 + row < p.R) {
      row_lse[a] = lse[rows + r0 + row];
      if (lane == 0u) { dsum[rows + r0 + row] = delta[a]; }
    }
  }

  var acc: array<vec4<f32>, 4 * ON>;
  for (var n = 0u; n < 4u * ON; n++) { acc[n] = vec4<f32>(0.0); }
  // The chunk in flight: q, dy, k and v of features nd.. of block nj.
  var qn = vec4<f32>(0.0);
  var gn = vec4<f32>(0.0);
  var kn = vec4<f32>(0.0);
  var vn = vec4<f32>(0.0);
  if (r0 + se < p.R) {
    qn = load_q(rows + r0 + se, 4u * sv);
    gn = load_dy(rows + r0 + se, 4u * sv);
  }
  if (se < p.S) {
    kn = load_k(keys + se, 4u * sv);
    vn = load_v(keys + se, 4u * sv);
  }
  var ahead: array<vec4<f32>, VPT>;
  for (var j0 = 0u; j0 < end; j0 += BLOCK) {
    var s: array<f32, 8>;
    var dp: array<f32, 8>;
    for (var e = 0u; e < 8u; e++) {
      s[e] = 0.0;
      dp[e] = 0.0;
    }
    for (var d0 = 0u; d0 < D; d0 += DK) {
      stage[se * STRIDE + sv] = qn;
      stage[(BLOCK + se) * STRIDE + sv] = gn;
      stage[(2u * BLOCK + se) * STRIDE + sv] = kn;
      stage[(3u * BLOCK + se) * STRIDE + sv] = vn;
      workgroupBarrier();
      var nd = d0 + DK;
      var nj = j0;
      if (nd >= D) {
        nd = 0u;
        nj = j0 + BLOCK;
      }
      qn = vec4<f32>(0.0);
      gn = vec4<f32>(0.0);
      kn = vec4<f32>(0.0);
      vn = vec4<f32>(0.0);
      if (nj < end) {
        if (r0 + se < p.R) {
          qn = load_q(rows + r0 + se, nd + 4u * sv);
          gn = load_dy(rows + r0 + se, nd + 4u * sv);
        }
        if (nj + se < p.S) {
          kn = load_k(keys + nj + se, nd + 4u * sv);
          vn = load_v(keys + nj + se, nd + 4u * sv);
        }
      }
      for (var c = 0u; c < DK / 4u; c++) {
        let k0 = stage[(2u * BLOCK + lane) * STRIDE + c];
        let k1 = stage[(2u * BLOCK + lane + 16u) * STRIDE + c];
        let v0 = stage[(3u * BLOCK + lane) * STRIDE + c];
        let v1 = stage[(3u * BLOCK + lane + 16u) * STRIDE + c];
        for (var a = 0u; a < 4u; a++) {
          let qa = stage[(group + 8u * a) * STRIDE + c];
          let ga = stage[(BLOCK + group + 8u * a) * STRIDE + c];
          s[2u * a] += dot(qa, k0);
          s[2u * a + 1u] += dot(qa, k1);
          dp[2u * a] += dot(ga, v0);
          dp[2u * a + 1u] += dot(ga, v1);
        }
      }
      workgroupBarrier();
    }
    ahead = fetch_keys(keys, j0, i);
    for (var a = 0u; a < 4u; a++) {
      let row = group + 8u * a;
      for (var c = 0u; c < 2u; c++) {
        let key = lane + 16u * c;
        let sc = score(s[2u * a + c], own[a], j0 + key);
        let prob = select(0.0, exp(sc - row_lse[a]), sc > EXCLUDED);
        blk[row * 8u + key / 4u][key % 4u] = prob * (dp[2u * a + c] - delta[a]);
      }
    }
    {{>attention-key-chunks}}
  }
  for (var a = 0u; a < 4u; a++) {
    let r = r0 + group + 8u * a;
    if (r < p.R) {
      for (var n = 0u; n < ON; n++) {
        let f = lane + 16u * n;
        for (var e = 0u; e < 4u; e++) {
          let d = 4u * f + e;
          if (f < DV4 && d < D) { dq[(rows + r) * D + d] = {{T}}(acc[a * ON + n][e] * p.scale); }
        }
      }
    }
  }
}
