// Shared by the attention kernels: sizes, uniform, a score's exclusion and mask entry, and the
// rows a workgroup of the row-block kernels takes.
const D: u32 = {{D}}u;
const DS: u32 = {{DS}}u;
// Staged rows are padded to DP features (zeros), so a thread's features i % 8 + 8·n stay inside.
const DP: u32 = DS * 8u;
override PER_SEQ: u32 = 0u;

struct Params {
  R: u32,      // query rows per batch entry and KV head (g·T)
  S: u32,      // keys
  T: u32,      // positions (row r sits at r mod T)
  H: u32,      // KV heads
  causal: u32, // 1: key j is excluded for position t when j > t + S - T
  _a: u32,
  _b: u32,
  scale: f32,
}

// Below any score: what an excluded key scores (its probability is then exactly 0).
const EXCLUDED: f32 = -3.0e38;

// The mask's offset of position t's row in batch entry b.
fn mask_row(b: u32, t: u32) -> u32 {
  return (select(0u, b * p.T, PER_SEQ == 1u) + t) * p.S;
}

// Whether key j takes part for position t.
fn visible(t: u32, j: u32) -> bool {
  return j < p.S && (p.causal == 0u || j + p.T <= t + p.S);
}

// One past the last key any of the rows r0..r0+n-1 sees.
fn key_end(r0: u32, n: u32) -> u32 {
  if (p.causal == 0u) { return p.S; }
  let first = r0 % p.T;
  var last = p.T - 1u;
  if (first + n - 1u < p.T) { last = first + n - 1u; }
  return min(p.S, last + p.S - p.T + 1u);
}

// The rows of the row-block kernels (attention-forward, attention-dq): 16 rows of one batch
// entry and KV head per workgroup (wid.x, wid.y = b·H + h), thread i on row i / 8, key and
// features i % 8 (`sub`). Values of one thread: not for the bounds of loops that hold barriers.
struct RowBlock {
  b: u32,
  ri: u32,
  sub: u32,
  live: bool,
  row: u32,
  t: u32,
  m: u32,
  keys: u32,
}

fn row_block(wid: vec3u, i: u32) -> RowBlock {
  var w: RowBlock;
  let bh = wid.y;
  w.b = bh / p.H;
  w.ri = i / 8u;
  w.sub = i % 8u;
  let r = wid.x * 16u + w.ri;
  w.live = r < p.R;
  w.row = bh * p.R + r;
  w.t = r % p.T;
  w.m = mask_row(w.b, w.t);
  w.keys = bh * p.S * D;
  return w;
}

// One past the last key the workgroup's rows see: from the workgroup id alone, so the loops over
// keys (which hold barriers) stay uniform.
fn block_key_end(wid: vec3u) -> u32 {
  let r0 = wid.x * 16u;
  return key_end(r0, min(16u, p.R - r0));
}
