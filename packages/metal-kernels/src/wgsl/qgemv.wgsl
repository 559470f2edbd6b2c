// qgemv.wgsl: C [M, N] = A [M, K]·Wᵀ for the few rows of decode (M = MR ≤ 16), W [N, K] MLX
// affine-quantized with BITS in {2, 4, 8} (a word holds 32 / BITS whole values, all of one group;
// 3, 5 and 6 with GEN only, whose chunks of BITS words hold 32 values, some across two words):
//   C[m, n] = Σ_chunks s·Σ_j q_j·A[m, k_j] + b·Σ_j A[m, k_j]   (s, b: the chunk's group scale and bias)
// W is read once, as packed words. A team of LANES threads walks ROWS rows of W together, chunk by
// chunk: a chunk is VW consecutive words of a row (VALS values, all of one group; VW = 4 reads a
// vec4<u32>), consecutive lanes take consecutive chunks. For each chunk a lane loads the ROWS rows'
// words, scales and biases once, then for each row m of A loads its VALS values once (as vec4),
// and uses them for all ROWS rows: Σ A (the bias term) and A scaled for the unpacking below.
// Unpacking without int→float conversions (a quarter-rate instruction on some GPUs): value j's bits
// are masked in place into the mantissa of 2^23 (values reaching past bit 23 are first shifted down
// 16) and 2^23 subtracted, which gives q·2^e exactly; A's value was multiplied by 2^-e (exact, a
// power of two) when it was loaded. f32 accumulation; the lanes' sums meet in workgroup memory,
// eight outputs per round.
//
// Bindings (group 0):
//   0  a       storage, read        [MR, K] vec4<{{T}}> (K % 4 = 0: every group size is)
//   1  wq      storage, read        [N, words] u32, as vec4<u32> with VEC (words % VW = 0)
//   2  scales  storage, read        [N, K / GROUP] {{T}}
//   3  biases  storage, read        [N, K / GROUP] {{T}}
//   4  c       storage, read_write  [MR, N] {{T}}
//   5  p       uniform { N, K, words, groups_x: u32 }
// Dispatch: ceil(N / (TEAMS·ROWS)) workgroups of 256 threads, folded into (groups_x, y) above 65535.
// Text constants: BITS (2, 4, 8; 3, 5, 6 with GEN), GROUP (32, 64, 128), MR (1..16), ROWS (1, 2,
// 4, 8), LANES (8, 16, 32), VW (1, or 4 when words % 4 = 0 and 4 words fit in a group; VW = BITS
// at 3, 5 and 6), CT (with
// STAGE: chunks a tile, a multiple of LANES). Flags (sections, '0' or '1'; any combination but
// ONCE with GEN, STAGE without GEN):
//   VEC       VW = 4: wq bound as vec4<u32>, a chunk's words read as one vec4 per row of W.
//   ONCE      each value unpacked once for all MR rows of A: w = s·q + b in f32 (q: the value
//             shifted down and masked into the mantissa of 2^23, minus 2^23), four values of a word
//             at a time (PER % 4 = 0; ROWS vec4 live), then one fma per value and row of A, whose
//             values are read as vec4, neither scaled nor summed (the bias is in w). Without it (the
//             form described above) each row of A repeats the unpacking, with the bias term from
//             Σ A per chunk.
//   GEN       the form without ONCE, its chunk written out by the host as the text constant BODY
//             (kernels/qgemv-body.ts): every mask and power of two a literal, no array indexed in
//             a loop.
//   STAGE     (GEN only) A read in tiles of CT chunks a row into workgroup memory, each value
//             once per workgroup, instead of by each team from the storage buffer.
{{ENABLE}}

const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
const MR: u32 = {{MR}}u;
const ROWS: u32 = {{ROWS}}u;
const LANES: u32 = {{LANES}}u;
const VW: u32 = {{VW}}u;
const PER: u32 = 32u / BITS;
const VALS: u32 = VW * 32u / BITS;
const TEAMS: u32 = 256u / LANES;
const MASK: u32 = (1u << BITS) - 1u;
const OUTS: u32 = MR * ROWS;
// 2^23 as f32 bits, and as a value.
const MAGIC: u32 = 0x4B000000u;
const TWO23: f32 = 8388608.0;

struct Params { N: u32, K: u32, words: u32, groups_x: u32 }

@group(0) @binding(0) var<storage, read> a: array<vec4<{{T}}>>;
{{#VEC}}
@group(0) @binding(1) var<storage, read> wq: array<vec4<u32>>;
{{/VEC}}
{{^VEC}}
@group(0) @binding(1) var<storage, read> wq: array<u32>;
{{/VEC}}
@group(0) @binding(2) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(3) var<storage, read> biases: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> c: array<{{T}}>;
@group(0) @binding(5) var<uniform> p: Params;

// The lanes' partial sums of eight outputs per team, a row of LANES + 1 (no bank conflicts) each.
var<workgroup> red: array<f32, TEAMS * 8u * (LANES + 1u)>;
{{#STAGE}}

// A tile of CT chunks of each row of A, its vec4 transposed ([m][i][chunk], rows of CT + 1) so
// that a team's lanes, on consecutive chunks, read consecutive vec4 (the teams of a subgroup read
// the same ones).
const CT: u32 = {{CT}}u;
const XV: u32 = VALS / 4u;
var<workgroup> xw: array<vec4<{{T}}>, MR * XV * (CT + 1u)>;
{{/STAGE}}

{{^ONCE}}
/** Whether value j of a word is read from the word shifted down 16 (its bits reach past bit 23). */
fn high(j: u32) -> bool { return j * BITS + BITS > 23u; }

/** q·2^e for value j of word w, exactly (e: j·BITS, or j·BITS - 16 when `high(j)`). */
fn scaled_q(w: u32, j: u32) -> f32 {
  if (high(j)) { return bitcast<f32>(((w >> 16u) & (MASK << (j * BITS - 16u))) | MAGIC) - TWO23; }
  return bitcast<f32>((w & (MASK << (j * BITS))) | MAGIC) - TWO23;
}

/** 2^-e for value j (see `scaled_q`), built from its exponent bits. */
fn unscale(j: u32) -> f32 {
  var e = j * BITS;
  if (high(j)) { e -= 16u; }
  return bitcast<f32>((127u - e) << 23u);
}
{{/ONCE}}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) tid: u32) {
  let lane = tid % LANES;
  let team = tid / LANES;
  let n0 = ((wid.y * p.groups_x + wid.x) * TEAMS + team) * ROWS;
  let groups = p.K / GROUP;
  let chunks = p.words / VW;
  // Rows past N read the last row (their sums are not stored).
  var rows: array<u32, ROWS>;
  for (var r = 0u; r < ROWS; r++) { rows[r] = min(n0 + r, p.N - 1u); }
  var acc: array<f32, OUTS>;
  for (var o = 0u; o < OUTS; o++) { acc[o] = 0.0; }
{{#STAGE}}
  for (var c0 = 0u; c0 < chunks; c0 += CT) {
    workgroupBarrier();
    for (var e = tid; e < MR * CT * XV; e += 256u) {
      let m = e / (CT * XV);
      let c = (e / XV) % CT;
      var v = vec4<{{T}}>();
      if (c0 + c < chunks) { v = a[(m * p.K + (c0 + c) * VALS) / 4u + e % XV]; }
      xw[(m * XV + e % XV) * (CT + 1u) + c] = v;
    }
    workgroupBarrier();
  for (var ch = c0 + lane; ch < min(c0 + CT, chunks); ch += LANES) {
    let cl = ch - c0;
{{/STAGE}}
{{^STAGE}}
  for (var ch = lane; ch < chunks; ch += LANES) {
{{/STAGE}}
    let g = ch * VALS / GROUP;
{{#GEN}}
{{BODY}}
{{/GEN}}
{{^GEN}}
    var words: array<u32, ROWS * VW>;
    var s: array<f32, ROWS>;
    var b: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
{{#VEC}}
      let w4 = wq[rows[r] * (p.words / 4u) + ch];
      words[r * 4u] = w4.x;
      words[r * 4u + 1u] = w4.y;
      words[r * 4u + 2u] = w4.z;
      words[r * 4u + 3u] = w4.w;
{{/VEC}}
{{^VEC}}
      words[r] = wq[rows[r] * p.words + ch];
{{/VEC}}
      s[r] = f32(scales[rows[r] * groups + g]);
      b[r] = f32(biases[rows[r] * groups + g]);
    }
{{^ONCE}}
    for (var m = 0u; m < MR; m++) {
      var xs: array<f32, VALS>;
      var xsum = 0.0;
      for (var i = 0u; i < VALS / 4u; i++) {
        let x4 = vec4<f32>(a[(m * p.K + ch * VALS) / 4u + i]);
        xsum += (x4.x + x4.y) + (x4.z + x4.w);
        for (var e = 0u; e < 4u; e++) { xs[i * 4u + e] = x4[e] * unscale((i * 4u + e) % PER); }
      }
      for (var r = 0u; r < ROWS; r++) {
        var dot = 0.0;
        for (var wi = 0u; wi < VW; wi++) {
          let w = words[r * VW + wi];
          for (var j = 0u; j < PER; j++) { dot = fma(scaled_q(w, j), xs[wi * PER + j], dot); }
        }
        acc[m * ROWS + r] = fma(s[r], dot, fma(b[r], xsum, acc[m * ROWS + r]));
      }
    }
{{/ONCE}}
{{#ONCE}}
    // Four values of word wi per step (PER % 4 = 0), dequantized for the ROWS rows, then one vec4
    // of each row of A against them.
    for (var wi = 0u; wi < VW; wi++) {
      for (var i = 0u; i < PER / 4u; i++) {
        let shift = (vec4<u32>(0u, 1u, 2u, 3u) + 4u * i) * BITS;
        var wv: array<vec4<f32>, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
          let q = bitcast<vec4<f32>>(((vec4<u32>(words[r * VW + wi]) >> shift) & vec4<u32>(MASK)) | vec4<u32>(MAGIC)) - TWO23;
          wv[r] = fma(q, vec4<f32>(s[r]), vec4<f32>(b[r]));
        }
        for (var m = 0u; m < MR; m++) {
          let x4 = vec4<f32>(a[(m * p.K + ch * VALS + wi * PER) / 4u + i]);
          for (var r = 0u; r < ROWS; r++) {
            let o = m * ROWS + r;
            acc[o] = fma(wv[r].w, x4.w, fma(wv[r].z, x4.z, fma(wv[r].y, x4.y, fma(wv[r].x, x4.x, acc[o]))));
          }
        }
      }
    }
{{/ONCE}}
{{/GEN}}
  }
{{#STAGE}}
  }
{{/STAGE}}
  // Eight outputs per round: every lane stores its partial sums, then lane e of the team adds up output e.
  for (var base = 0u; base < OUTS; base += 8u) {
    for (var e = 0u; e < 8u; e++) {
      if (base + e < OUTS) { red[(team * 8u + e) * (LANES + 1u) + lane] = acc[base + e]; }
    }
    workgroupBarrier();
    let o = base + lane;
    if (lane < 8u && o < OUTS) {
      var total = 0.0;
      for (var l = 0u; l < LANES; l++) { total += red[(team * 8u + lane) * (LANES + 1u) + l]; }
      let n = n0 + o % ROWS;
      if (n < p.N) { c[(o / ROWS) * p.N + n] = {{T}}(total); }
    }
    workgroupBarrier();
  }
}
