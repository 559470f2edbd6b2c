// gemv-cols.wgsl: C[j, n] = α·Σ_m P[m, j]·Q[m, n] (+ β·C) (+ bias), the products that reduce over
// the rows of a tall matrix: Q [KR, N] (N a multiple of 4) is streamed from memory exactly once in
// vec4 loads along its rows, while the ≤ MR columns of the small P (any layout) come from cache.
//   Uᵀ·x (the LoRA A gradient): P = U [M, r], Q = x, C [r, in] (OUT_T = 0).
//   dyᵀ·T (the LoRA B gradient): P = T [M, r], Q = dy, C [out, r] (OUT_T = 1).
//   onesᵀ·dy (the bias gradient): P = ones, C [1, out].
// Each thread owns one vec4 of columns; the RL = 256 / CL threads of a workgroup that share it
// walk different rows, then meet in workgroup memory. K splits (wid.y) write partial sums to a
// workspace that gemm-splitk-reduce.wgsl adds up.
//
// Bindings (group 0):
//   0  pm    storage, read        P: element (m, j) at m·sk + j·sj, T
//   1  q     storage, read        Q [KR, N / 4] vec4<T>
//   2  bias  storage, read        [columns of C] T (dummy when HAS_BIAS = 0)
//   3  c     storage, read_write  C (TC = T), or the f32 split-K workspace [splits, mn] when SPLIT = 1
//   4  p     uniform { cols: P columns in this chunk, N4: N / 4, KR, kr_chunk, sk, sj: P's strides,
//            j0: the chunk's first column of P, ldc, mn: C's element count, _, alpha, beta }
// Dispatch: (ceil(N4 / CL), splits, 1) workgroups of 256 threads.
// Text types: T, TC (f32, or f16 storage with f32 arithmetic; ENABLE is `enable f16;` for f16).
// Text constants: CL (column lanes: 16..256, a power of two), MR (1..16), UNROLL (1..8); SETUP,
//   ACC, BODY and FLUSH are the straight-line statements gemm.ts writes (one vec4 per
//   accumulator, for the reason given in gemv-rows.wgsl).
// Overrides: OUT_T, HAS_BIAS, ACCUMULATE, SPLIT (0/1).

{{ENABLE}}

override OUT_T: u32 = 0u;
override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;
override SPLIT: u32 = 0u;

const CL: u32 = {{CL}}u;
const MR: u32 = {{MR}}u;
const UNROLL: u32 = {{UNROLL}}u;
const RL: u32 = 256u / CL;

struct Params { cols: u32, N4: u32, KR: u32, kr_chunk: u32, sk: u32, sj: u32, j0: u32, ldc: u32, mn: u32, pad0: u32, alpha: f32, beta: f32 }

@group(0) @binding(0) var<storage, read> pm: array<{{T}}>;
@group(0) @binding(1) var<storage, read> q: array<vec4<{{T}}>>;
@group(0) @binding(2) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{TC}}>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> red: array<vec4<f32>, 512>;

{{>gemm-epilogue}}

fn put(idx: u32, col: u32, total: f32, split: u32) {
  if (SPLIT == 1u) {
    c[split * p.mn + idx] = {{TC}}(total);
    return;
  }
  c[idx] = {{TC}}(epilogue(idx, col, total));
}

// Adds the RL row lanes' partials of accumulators j and j + 1 (staged in `red`) and writes them.
fn flush(j: u32, count: u32, c4: u32, split: u32, t: u32) {
  // c4: the workgroup's first vec4 column.
  workgroupBarrier();
  for (var o = t; o < CL * count; o += 256u) {
    let i = o / CL;
    let cl = o % CL;
    var s = vec4<f32>(0.0);
    for (var rl = 0u; rl < RL; rl++) { s += red[i * 256u + rl * CL + cl]; }
    let jj = j + i;
    let n4 = c4 + cl;
    if (jj < p.cols && n4 < p.N4) {
      let row = p.j0 + jj;
      for (var e = 0u; e < 4u; e++) {
        let n = n4 * 4u + e;
        if (OUT_T == 1u) { put(n * p.ldc + row, row, s[e], split); } else { put(row * p.ldc + n, n, s[e], split); }
      }
    }
  }
  workgroupBarrier();
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let t = lid.x;
  let rl = t / CL;
  let c4 = wid.x * CL;
  let col = min(c4 + t % CL, p.N4 - 1u);
  let split = wid.y;
  let m_begin = split * p.kr_chunk;
  let m_end = min(p.KR, m_begin + p.kr_chunk);
  let last = p.KR - 1u;
{{SETUP}}
{{ACC}}
  for (var m = m_begin + rl; m < m_end; m += RL * UNROLL) {
{{BODY}}
  }
{{FLUSH}}
}
