// gemv-rows.wgsl: C = α·X·Wᵀ (+ β·C) (+ bias) for operands both contiguous along K (K a
// multiple of 4), where X has few rows; f32, or f16 storage (T) with f32 arithmetic: W [NW, K] is streamed from memory exactly once in vec4
// loads while the ≤ MR rows of X come from cache. Each group of LANES threads owns R consecutive
// rows of W and walks them along K; the group's partial sums meet in workgroup memory, or with
// section SG in subgroup shuffles.
//   Decode (x·Wᵀ, M ≤ 16): X = x, W = the weight, C[m, n] (OUT_T = 0).
//   LoRA down-projections (x·Aᵀ, dy·B with B pre-transposed; N = r): X = the r rows of the
//     adapter (MR at a time, `x_row0` the chunk's first row), W = the activation, C[n, j] (OUT_T = 1).
//
// Bindings (group 0):
//   0  x     storage, read        [rows of X, K / 4] vec4<T>
//   1  w     storage, read        [NW, K / 4] vec4<T>
//   2  bias  storage, read        [columns of C] T (dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  C (TC = T), or the f32 split-K workspace [splits, mn] when SPLIT = 1
//   4  lt    storage, read        [rows of X, r] T: the LoRA intermediate T (dummy unless HAS_LORA)
//   5  lb    storage, read        [NW, r] T: the LoRA up-projection B (dummy unless HAS_LORA)
//   6  p     uniform { rows: X rows in this chunk, NW, K4: K / 4, k4_chunk, x_row0, ldc, mn: C's
//            element count, r, alpha, beta, lora_scale, nw2: W2's rows under CONCAT (else 0) }
// Fused LoRA term (HAS_LORA = 1, decode only: OUT_T = 0): each output gets
//   lora_scale·Σ_k T[row, k]·B[n, k] added before α, so y = x·Wᵀ + bias + s·T·Bᵀ is one pass
//   over W with no second product over y. In split 0, each lane starts its accumulators at its
//   share of the r products (k ≡ lane mod LANES), loaded before the stream over W; the lane
//   reduction adds them up. (Computed after the stream instead, one thread per output, it was a
//   latency-bound tail on the M = 1 pass; RESULTS.md, "The decode LoRA term in gemv-rows".)
// Dispatch: (ceil(NW / (R·WG / LANES)), splits, 1) workgroups of WG threads.
// Text types: T, TC (f32 or f16; ENABLE is `enable f16;` for f16).
// Section CONCAT (no LoRA term): a second streamed matrix W2 [nw2, K] (binding 4)
//   continues W's rows, its results going to C2 [rows of X, nw2] (binding 5, T), or with SPLIT to
//   columns NW..NW + nw2 of the workspace (ldc = NW + nw2; the split-K reduction's CONCAT_C then
//   writes them out): the decode LoRA forward's T = x·Aᵀ rides along the pass over W. R divides
//   NW, so each lane group reads one of the two; uniform field nw2 (0 otherwise).
// Text constants: WG (threads: 64, 128 or 256), LANES (8..WG, a power of two), R (1..8), MR (1..32), UNROLL (1..8); SETUP, ACC,
//   STREAM (the walk along K, from k_begin or the stage's kb) and FLUSH are the statements gemv.ts
//   writes for them: one scalar per accumulator. Accumulators kept in a WGSL array indexed in loops
//   were several times slower (the array lands in local memory), so this kernel is unrolled in the text itself.
// Section XS (text constant XS4): the MR rows of X are staged in workgroup memory, XS4 vec4
//   (f32) of each row at a time, and read from there instead of from global memory: with many
//   rows of X each W vec4 meets MR vec4s of x, and those reads, not W's, were the limit (decode
//   M = 16). The lanes of a warp read XS4-strided rows at up to LANES distinct k, so the load
//   is a broadcast across lane groups. A K chunk longer than XS4 is staged in turns. With
//   section XP (text constant XPT = ⌈MR·XS4 / WG⌉) the next stage is loaded into registers while
//   the current one streams, instead of after it.
// Section XSK (with XS): x staged by k, xs[k - kb][row] (see xs_put), so the MR reads of a step
//   share one index; each k's rows are padded to MR + 1 vec4 to keep a group's lanes on distinct banks.
// Section SG (`enable subgroups; requires subgroup_id;`): each lane group's partials are summed by subgroup shuffles
//   (the butterfly gemv.ts writes as FLUSH) instead of through workgroup memory; the threads are
//   numbered by subgroup so that a lane group lies in one subgroup (LANES divides its size).
// Overrides: OUT_T, HAS_BIAS, ACCUMULATE, SPLIT, HAS_LORA (0/1).

{{ENABLE}}

override OUT_T: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
override SPLIT: u32 = 0u;
override HAS_LORA: u32 = 0u;

const LANES: u32 = {{LANES}}u;
const R: u32 = {{R}}u;
const MR: u32 = {{MR}}u;
const UNROLL: u32 = {{UNROLL}}u;
const WG: u32 = {{WG}}u;
const GROUPS: u32 = WG / LANES;
// One spare slot per lane group keeps the reduction's strided reads on distinct banks.
const PITCH: u32 = WG + GROUPS;
const BATCH: u32 = 8u;

struct Params { rows: u32, NW: u32, K4: u32, k4_chunk: u32, x_row0: u32, ldc: u32, mn: u32, r: u32, alpha: f32, beta: f32, lora_scale: f32, nw2: u32 }

@group(0) @binding(0) var<storage, read> x: array<vec4<{{T}}>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<{{T}}>>;
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{TC}}>;
{{^CONCAT}}
@group(0) @binding(4) var<storage, read> lt: array<{{T}}>;
@group(0) @binding(5) var<storage, read> lb: array<{{T}}>;
{{/CONCAT}}
{{#CONCAT}}
@group(0) @binding(4) var<storage, read> w2: array<vec4<{{T}}>>;
@group(0) @binding(5) var<storage, read_write> c2: array<{{T}}>;
{{/CONCAT}}
@group(0) @binding(6) var<uniform> p: Params;

{{^SG}}
var<workgroup> red: array<f32, BATCH * (WG + 32u)>;
{{/SG}}
{{#XS}}
const XS4: u32 = {{XS4}}u;
{{^XSK}}
var<workgroup> xs: array<vec4<f32>, MR * XS4>;
fn xs_put(i: u32, v: vec4<f32>) { xs[i] = v; }
{{/XSK}}
{{#XSK}}
// Section XSK: staged by k, xs[k - kb][row], each k's rows padded to MR + 1 vec4 so that the
// lanes of a group (at different k) read different banks.
var<workgroup> xs: array<array<vec4<f32>, MR + 1u>, XS4>;
fn xs_put(i: u32, v: vec4<f32>) { xs[i % XS4][i / XS4] = v; }
{{/XSK}}

// Staged value number i (row i / XS4 of X, k = kb + i % XS4) of the stage [kb, ke): zero past ke
// or past the MR rows, its address clamped into X either way.
fn x_stage(i: u32, kb: u32, ke: u32) -> vec4<f32> {
  let kk = kb + i % XS4;
  return select(vec4<f32>(0.0), vec4<f32>(x[(p.x_row0 + min(i / XS4, p.rows - 1u)) * p.K4 + min(kk, p.K4 - 1u)]), kk < ke && i < MR * XS4);
}
{{/XS}}

{{>gemm-epilogue}}

// Writes one output: the sum over K (this split's share with SPLIT) of row j of X with row n of W.
fn emit(n: u32, j: u32, total: f32, split: u32) {
  // With CONCAT and SPLIT, W2's rows are columns NW.. of the workspace (ldc = NW + nw2).
  if (j < p.rows && (n < p.NW || (SPLIT == 1u && n < p.NW + p.nw2))) {
    let row = p.x_row0 + j;
    var idx = row * p.ldc + n;
    var col = n;
    if (OUT_T == 1u) {
      idx = n * p.ldc + row;
      col = row;
    }
    if (SPLIT == 1u) {
      c[split * p.mn + idx] = {{TC}}(total);
    } else {
      c[idx] = {{TC}}(epilogue(idx, col, total));
    }
  }
{{#CONCAT}}
  if (SPLIT == 0u && n >= p.NW && n < p.NW + p.nw2 && j < p.rows) { c2[(p.x_row0 + j) * p.nw2 + n - p.NW] = {{T}}(total); }
{{/CONCAT}}
}

{{^SG}}
fn slot(v: u32, t: u32) -> u32 { return v * PITCH + t + t / LANES; }

// Sums the LANES partials of `count` accumulators (numbers first..first+count-1, staged in `red`
// by every thread) and writes them out.
fn flush(first: u32, count: u32, group_x: u32, split: u32, t: u32) {
  workgroupBarrier();
  for (var o = t; o < GROUPS * count; o += WG) {
    let g = o % GROUPS;
    let i = o / GROUPS;
    var s0 = 0.0;
    var s1 = 0.0;
    for (var l = 0u; l < LANES; l += 2u) {
      s0 += red[slot(i, g * LANES + l)];
      s1 += red[slot(i, g * LANES + l + 1u)];
    }
    let v = first + i;
    emit((group_x * GROUPS + g) * R + v / MR, v % MR, s0 + s1, split);
  }
  workgroupBarrier();
}
{{/SG}}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u{{#SG}}, @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_size) sg_size: u32, @builtin(subgroup_invocation_id) sg_lane: u32{{/SG}}) {
  let t = lid.x;
  // The thread's place among the lane groups: with SG, numbered by subgroup so that each lane
  // group lies in one subgroup (LANES divides the subgroup size) and the lanes are its neighbours.
{{^SG}}
  let tr = t;
{{/SG}}
{{#SG}}
  let tr = sg_id * sg_size + sg_lane;
{{/SG}}
  let lane = tr % LANES;
  let block = wid.x;
  let split = wid.y;
  let n0 = (block * GROUPS + tr / LANES) * R;
  let k_begin = split * p.k4_chunk;
  let k_end = min(p.K4, k_begin + p.k4_chunk);
  let last = p.K4 - 1u;
{{SETUP}}
{{ACC}}
{{^XS}}
{{STREAM}}
{{/XS}}
{{#XS}}
  // The stage loop's bounds are uniform across the workgroup, so its barriers are too.
{{^XP}}
  for (var kb = k_begin; kb < k_end; kb += XS4) {
    let ke = min(k_end, kb + XS4);
    workgroupBarrier();
    for (var i = t; i < MR * XS4; i += WG) { xs_put(i, x_stage(i, kb, ke)); }
    workgroupBarrier();
{{STREAM}}
  }
{{/XP}}
{{#XP}}
  // Section XP: each thread's share of the next stage (XLOAD, XNEXT: XPT vec4s, number t + WG·j)
  // is loaded into registers while this stage streams W, then stored (XSTORE) between barriers.
{{XLOAD}}
  for (var kb = k_begin; kb < k_end; kb += XS4) {
    workgroupBarrier();
{{XSTORE}}
    workgroupBarrier();
    let ke = min(k_end, kb + XS4);
    let nb = kb + XS4;
{{XNEXT}}
{{STREAM}}
  }
{{/XP}}
{{/XS}}
{{FLUSH}}
}
