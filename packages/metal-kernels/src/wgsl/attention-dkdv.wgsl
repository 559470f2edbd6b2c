// attention-dkdv.wgsl: attention's backward for the keys and values: dv = Pᵀ·dy and
// dk = scale·dSᵀ·q, summed over every query row of the batch entry and KV head (the g query heads
// of a group included), P and dS recomputed as in attention-dq.wgsl from the forward's lse and
// that pass's Σ dy·y. A workgroup takes 32 keys and walks the rows 32 at a time, skipping, with
// `causal`, blocks of rows that see none of its keys. Per block: Sᵀ and dPᵀ as register-tiled
// products over chunks of 8 features of k, v (keys 0..31), q and dy (rows 0..31) staged together
// (thread: keys group + 8·a, rows lane + 16·c); Pᵀ and dSᵀ into workgroup memory; then dv and dk
// (thread: keys group + 8·a, vec4 lane + 16·n) += Pᵀ·dy and dSᵀ·q over chunks of VR rows. Global
// loads run a step ahead, as in attention-forward.wgsl.
// Section SPLIT: the rows are split into parts of part_rows (wid.z), so that few keys still fill
// the GPU; each part writes its unscaled sums to f32 workspaces [parts, B·H·S·D] at 7 and 8, which
// gemm-splitk-reduce.wgsl adds up (dk's scale applied there).
//
// Bindings (group 0):
//   0  q     storage, read        [B·H·R·D] {{T}}
//   1  k     storage, read        [B·H·S·D] {{T}}
//   2  v     storage, read        [B·H·S·D] {{T}}
//   3  mask  storage, read        [T·S] or [B·T·S] {{T}}
//   4  lse   storage, read        [B·H·R] f32
//   5  dsum  storage, read        [B·H·R] f32
//   6  dy    storage, read        [B·H·R·D] {{T}}
//   7  dk    storage, read_write  [B·H·S·D] {{T}} (SPLIT: [parts·B·H·S·D] f32)
//   8  dv    storage, read_write  [B·H·S·D] {{T}} (SPLIT: [parts·B·H·S·D] f32)
//   9  p     uniform (lib/attention-scores.wgsl)
// Dispatch: (ceil(S / 32), B·H, parts) workgroups of 128. Text constants: D (1..256), DV4, ON, VR (rows
// of q and dy per chunk: a power of two from 4 to 32 with VR·DV4 ≤ 256), RPT = ceil(VR·DV4 / 128).
// Overrides: PER_SEQ (0/1).
{{ENABLE}}

const DK: u32 = 8u;
const STRIDE: u32 = 3u; // vec4 per staged row of a feature chunk (DK / 4, padded to odd)
const VR: u32 = {{VR}}u;
const RPT: u32 = {{RPT}}u;

@group(0) @binding(0) var<storage, read> q: array<{{T}}>;
@group(0) @binding(1) var<storage, read> k: array<{{T}}>;
@group(0) @binding(2) var<storage, read> v: array<{{T}}>;
@group(0) @binding(3) var<storage, read> mask: array<{{T}}>;
@group(0) @binding(4) var<storage, read> lse: array<f32>;
@group(0) @binding(5) var<storage, read> dsum: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<{{T}}>;
{{#SPLIT}}
@group(0) @binding(7) var<storage, read_write> dk: array<f32>;
@group(0) @binding(8) var<storage, read_write> dv: array<f32>;

fn put(index: u32, gk: f32, gv: f32) {
  dk[index] = gk;
  dv[index] = gv;
}
{{/SPLIT}}
{{^SPLIT}}
@group(0) @binding(7) var<storage, read_write> dk: array<{{T}}>;
@group(0) @binding(8) var<storage, read_write> dv: array<{{T}}>;

fn put(index: u32, gk: f32, gv: f32) {
  dk[index] = {{T}}(gk * p.scale);
  dv[index] = {{T}}(gv);
}
{{/SPLIT}}
@group(0) @binding(9) var<uniform> p: Params;

{{>attention-scores}}

// Feature chunks of k, v (keys 0..31), q and dy (rows 0..31); later VR rows of dy, then of q.
var<workgroup> stage: array<vec4<f32>, 512>;
// Pᵀ, then dSᵀ, of the block: 32 keys of 32 rows each.
var<workgroup> pt: array<vec4<f32>, 512>;

// Thread i's share of VR rows of dy and q from row r: vec4 i + 128·u of each chunk ([VR, DV4]), zeros past R.
struct RowChunk {
  dy: array<vec4<f32>, RPT>,
  q: array<vec4<f32>, RPT>,
}

fn fetch_rows(rows: u32, r: u32, i: u32) -> RowChunk {
  var x: RowChunk;
  for (var u = 0u; u < RPT; u++) {
    let e = i + 128u * u;
    x.dy[u] = vec4<f32>(0.0);
    x.q[u] = vec4<f32>(0.0);
    if (e < VR * DV4 && r + e / DV4 < p.R) {
      x.dy[u] = load_dy(rows + r + e / DV4, 4u * (e % DV4));
      x.q[u] = load_q(rows + r + e / DV4, 4u * (e % DV4));
    }
  }
  return x;
}

// Whether the block of rows from r0 sees none of the keys from first_t's on (causal): skipped.
fn rows_before(r0: u32, first_t: u32) -> bool {
  let n_rows = min(BLOCK, p.R - r0);
  let t0 = r0 % p.T;
  return t0 + n_rows - 1u < p.T && t0 + n_rows - 1u < first_t;
}

// Thread i's vec4 of the feature chunk from d0 for the block of rows from r0: k and v of key
// j0 + se (threads 0..63), or q and dy of row r0 + se (64..127).
fn fetch_chunk(keys: u32, rows: u32, j0: u32, r0: u32, d0: u32, i: u32) -> array<vec4<f32>, 2> {
  let se = (i % 64u) / 2u;
  let d = d0 + 4u * (i % 2u);
  var x = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
  if (i < 64u && j0 + se < p.S) {
    x[0] = load_k(keys + j0 + se, d);
    x[1] = load_v(keys + j0 + se, d);
  }
  if (i >= 64u && r0 + se < p.R) {
    x[0] = load_q(rows + r0 + se, d);
    x[1] = load_dy(rows + r0 + se, d);
  }
  return x;
}

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) i: u32) {
  let group = i / 16u;
  let lane = i % 16u;
  let bh = wid.y;
  let b = bh / p.H;
  let j0 = wid.x * BLOCK;
  let rows = bh * p.R;
  let keys = bh * p.S;
  // Staging: threads 0..63 hold k and v, threads 64..127 q and dy: vec4 i % 2 of the chunk for
  // key (or row) (i % 64) / 2.
  let se = (i % 64u) / 2u;
  let sv = i % 2u;
  let base = select(2u * BLOCK, 0u, i < 64u);
  // The first position that sees key j0 (causal): earlier positions see none of this block.
  var first_t = 0u;
  if (p.causal == 1u && j0 + p.T > p.S) { first_t = j0 + p.T - p.S; }

  var gk: array<vec4<f32>, 4 * ON>;
  var gv: array<vec4<f32>, 4 * ON>;
  for (var n = 0u; n < 4u * ON; n++) {
    gk[n] = vec4<f32>(0.0);
    gv[n] = vec4<f32>(0.0);
  }
  let r_end = min(p.R, (wid.z + 1u) * p.part_rows);
  // The first block of rows that sees a key of this block, and its first chunk in flight.
  var r0 = wid.z * p.part_rows;
  while (r0 < r_end && rows_before(r0, first_t)) { r0 += BLOCK; }
  var xn = fetch_chunk(keys, rows, j0, r0, 0u, i);
  var rc: RowChunk;
  var r1 = r0;
  for (; r0 < r_end; r0 = r1) {
    // The next block that is not skipped (its first chunk is fetched during this one's last).
    r1 = r0 + BLOCK;
    while (r1 < r_end && rows_before(r1, first_t)) { r1 += BLOCK; }
    var st: array<f32, 8>;
    var dpt: array<f32, 8>;
    for (var e = 0u; e < 8u; e++) {
      st[e] = 0.0;
      dpt[e] = 0.0;
    }
    for (var d0 = 0u; d0 < D; d0 += DK) {
      stage[(base + se) * STRIDE + sv] = xn[0];
      stage[(base + BLOCK + se) * STRIDE + sv] = xn[1];
      workgroupBarrier();
      if (d0 + DK < D) {
        xn = fetch_chunk(keys, rows, j0, r0, d0 + DK, i);
      } else if (r1 < r_end) {
        xn = fetch_chunk(keys, rows, j0, r1, 0u, i);
      }
      for (var c = 0u; c < DK / 4u; c++) {
        let q0 = stage[(2u * BLOCK + lane) * STRIDE + c];
        let q1 = stage[(2u * BLOCK + lane + 16u) * STRIDE + c];
        let g0 = stage[(3u * BLOCK + lane) * STRIDE + c];
        let g1 = stage[(3u * BLOCK + lane + 16u) * STRIDE + c];
        for (var a = 0u; a < 4u; a++) {
          let ka = stage[(group + 8u * a) * STRIDE + c];
          let va = stage[(BLOCK + group + 8u * a) * STRIDE + c];
          st[2u * a] += dot(ka, q0);
          st[2u * a + 1u] += dot(ka, q1);
          dpt[2u * a] += dot(va, g0);
          dpt[2u * a + 1u] += dot(va, g1);
        }
      }
      workgroupBarrier();
    }
    rc = fetch_rows(rows, r0, i);
    for (var c = 0u; c < 2u; c++) {
      let row = lane + 16u * c;
      let r = r0 + row;
      var row_lse = 3.0e38;
      var delta = 0.0;
      if (r < p.R) {
        row_lse = lse[rows + r];
        delta = dsum[rows + r];
      }
      let at = row_of(b, r);
      for (var a = 0u; a < 4u; a++) {
        let key = group + 8u * a;
        let sc = score(st[2u * a + c], at, j0 + key);
        let prob = select(0.0, exp(sc - row_lse), sc > EXCLUDED);
        pt[key * 8u + row / 4u][row % 4u] = prob;
        pt[256u + key * 8u + row / 4u][row % 4u] = prob * (dpt[2u * a + c] - delta);
      }
    }
    for (var c0 = 0u; c0 < BLOCK; c0 += VR) {
      for (var u = 0u; u < RPT; u++) {
        let e = i + 128u * u;
        if (e < VR * DV4) {
          stage[e] = rc.dy[u];
          stage[256u + e] = rc.q[u];
        }
      }
      workgroupBarrier();
      if (c0 + VR < BLOCK) { rc = fetch_rows(rows, r0 + c0 + VR, i); }
      for (var c = 0u; c < VR; c += 4u) {
        var pa: array<vec4<f32>, 4>;
        var da: array<vec4<f32>, 4>;
        for (var a = 0u; a < 4u; a++) {
          pa[a] = pt[(group + 8u * a) * 8u + (c0 + c) / 4u];
          da[a] = pt[256u + (group + 8u * a) * 8u + (c0 + c) / 4u];
        }
        for (var n = 0u; n < ON; n++) {
          let f = lane + 16u * n;
          if (f < DV4) {
            let g0 = stage[c * DV4 + f];
            let g1 = stage[(c + 1u) * DV4 + f];
            let g2 = stage[(c + 2u) * DV4 + f];
            let g3 = stage[(c + 3u) * DV4 + f];
            let q0 = stage[256u + c * DV4 + f];
            let q1 = stage[256u + (c + 1u) * DV4 + f];
            let q2 = stage[256u + (c + 2u) * DV4 + f];
            let q3 = stage[256u + (c + 3u) * DV4 + f];
            for (var a = 0u; a < 4u; a++) {
              gv[a * ON + n] += pa[a].x * g0 + pa[a].y * g1 + pa[a].z * g2 + pa[a].w * g3;
              gk[a * ON + n] += da[a].x * q0 + da[a].y * q1 + da[a].z * q2 + da[a].w * q3;
            }
          }
        }
      }
      workgroupBarrier();
    }
  }
  for (var a = 0u; a < 4u; a++) {
    let j = j0 + group + 8u * a;
    if (j < p.S) {
      for (var n = 0u; n < ON; n++) {
        let f = lane + 16u * n;
        for (var e = 0u; e < 4u; e++) {
          let d = 4u * f + e;
          if (f < DV4 && d < D) { put(wid.z * p.part_stride + (keys + j) * D + d, gk[a * ON + n][e], gv[a * ON + n][e]); }
        }
      }
    }
  }
}
