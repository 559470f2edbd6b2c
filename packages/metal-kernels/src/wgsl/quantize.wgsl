// quantize.wgsl: MLX affine quantization of W [rows, cols] (`quantize`), one thread per group of
// GROUP consecutive values of a row, in f32 arithmetic as the CPU reference (tensor's
// `quantizeAffine`) does: the edge of larger magnitude (min or max) is kept exact,
//   scale = ±max((max - min) / levels, 1e-7), q0 = round(edge / scale);
//   q0 ≠ 0: scale = edge / q0, bias = edge; else bias = 0;
//   q = clamp(round((w - bias) / scale), 0, levels)   (round: half to even)
// packed LSB-first into the group's own words (GROUP·BITS is a multiple of 32 for every group size,
// so no word is shared between groups; 3, 5 and 6 bits straddle words within the group). A group
// holding a value that is not finite, or whose range overflows f32, gets a NaN scale (the host
// reports it). Text constant NAN: a run-time NaN of type T.
//
// Bindings (group 0):
//   0  w       storage, read        [rows, cols] {{T}}
//   1  packed  storage, read_write  [rows, cols·BITS/32] u32
//   2  scales  storage, read_write  [rows, cols / GROUP] {{T}}
//   3  biases  storage, read_write  [rows, cols / GROUP] {{T}}
//   4  p       uniform { groups (total), groups_per_row, cols, grid_x: u32 }
// Dispatch: ceil(groups / 64) workgroups of 64 threads, folded into (grid_x, y) above 65535.
// Text constants: BITS (2..8), GROUP (32, 64, 128).
{{ENABLE}}

const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
const LEVELS: u32 = (1u << BITS) - 1u;
const WORDS: u32 = GROUP * BITS / 32u;

struct Params { groups: u32, groups_per_row: u32, cols: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> w: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> packed: array<u32>;
@group(0) @binding(2) var<storage, read_write> scales: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> biases: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let g = gid.y * p.grid_x * 64u + gid.x;
  if (g >= p.groups) { return; }
  let row = g / p.groups_per_row;
  let start = row * p.cols + (g % p.groups_per_row) * GROUP;
  var lo = f32(w[start]);
  var hi = lo;
  var finite = true;
  for (var j = 0u; j < GROUP; j++) {
    let v = f32(w[start + j]);
    // Not finite: ±∞ or NaN, all exponent bits set (tested on the bits: no comparison with NaN).
    finite = finite && (bitcast<u32>(v) & 0x7f800000u) != 0x7f800000u;
    lo = min(lo, v);
    hi = max(hi, v);
  }
  let lower = abs(lo) > abs(hi);
  var scale = max((hi - lo) / f32(LEVELS), 1e-7);
  if (!lower) { scale = -scale; }
  let edge = select(hi, lo, lower);
  let q0 = round(edge / scale);
  var bias = 0.0;
  if (q0 != 0.0) {
    scale = edge / q0;
    bias = edge;
  }
  // No scale where a value is not finite or the range overflowed float32 (the scale's exponent
  // bits all set): a NaN marks the group, stored as T's own bits (a NaN converted between float
  // types is indeterminate in WGSL) and built at run time (a constant NaN does not compile).
  if (!finite || (bitcast<u32>(scale) & 0x7f800000u) == 0x7f800000u) {
    scales[g] = {{NAN}};
  } else {
    scales[g] = {{T}}(scale);
  }
  biases[g] = {{T}}(bias);
  // The group's words, filled value by value in a register and stored once each.
  let base = g * WORDS;
  var word = 0u;
  var bit = 0u;
  var at = 0u;
  for (var j = 0u; j < GROUP; j++) {
    let q = u32(clamp(round((f32(w[start + j]) - bias) / scale), 0.0, f32(LEVELS)));
    word = word | (q << bit);
    bit += BITS;
    if (bit >= 32u) {
      packed[base + at] = word;
      at++;
      bit -= 32u;
      // The value's bits that did not fit start the next word (none when it ended exactly).
      word = select(0u, q >> (BITS - bit), bit > 0u);
    }
  }
}
