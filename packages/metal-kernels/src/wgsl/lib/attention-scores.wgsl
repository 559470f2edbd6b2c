// Shared by the attention kernels: sizes, uniform, a score's exclusion and mask entry, the keys a
// block of rows sees, and the 4-feature loads of the bound tensors.
//
// Blocks of BLOCK = 32 rows and 32 keys, 128 threads: thread i is `group` i / 16 (0..7) and
// `lane` i % 16. Products over the features go by chunks of DK features staged in workgroup memory
// as vec4 rows padded to an odd count (DK / 4 + 1) of vec4, so lanes that read different rows
// of a chunk hit different banks. Outputs of D features are held as DV4 = ceil(D / 4) vec4 per
// row, lane l owning vec4 l + 16·n (n < ON = ceil(DV4 / 16)).
const D: u32 = {{D}}u;
const DV4: u32 = {{DV4}}u;
const ON: u32 = {{ON}}u;
const BLOCK: u32 = 32u;
override PER_SEQ: u32 = 0u;

struct Params {
  R: u32,      // query rows per batch entry and KV head (g·T)
  S: u32,      // keys
  T: u32,      // positions (row r sits at r mod T)
  H: u32,      // KV heads
  causal: u32, // 1: key j is excluded for position t when j > t + S - T
  part_rows: u32,   // attention-dkdv: rows per part of a split (a multiple of 32; ≥ R unsplit)
  part_stride: u32, // attention-dkdv: elements per part of the split's workspaces (0 unsplit)
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

// A row's (of batch entry b) position and mask offset, and whether it exists, for `score`.
struct Row {
  live: bool,
  t: u32,
  m: u32,
}

fn row_of(b: u32, r: u32) -> Row {
  let t = r % p.T;
  return Row(r < p.R, t, mask_row(b, t));
}

// The row's scaled and masked score for key j from its dot product, or EXCLUDED.
fn score(dot: f32, row: Row, j: u32) -> f32 {
  if (!row.live || !visible(row.t, j)) { return EXCLUDED; }
  return max(dot * p.scale + f32(mask[row.m + j]), EXCLUDED);
}

// One past the last key any of the rows r0..r0+n-1 sees.
fn key_end(r0: u32, n: u32) -> u32 {
  if (p.causal == 0u) { return p.S; }
  let first = r0 % p.T;
  var last = p.T - 1u;
  if (first + n - 1u < p.T) { last = first + n - 1u; }
  return min(p.S, last + p.S - p.T + 1u);
}

// One past the last key the rows of block wid.x see: from the workgroup id alone, so the loops
// over keys (which hold barriers) stay uniform.
fn block_key_end(wid: vec3u) -> u32 {
  let r0 = wid.x * BLOCK;
  return key_end(r0, min(BLOCK, p.R - r0));
}

{{LOADS}}
