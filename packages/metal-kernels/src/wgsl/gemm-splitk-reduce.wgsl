// gemm-splitk-reduce.wgsl: c[b, m, n] = α·Σ_s ws[b, s, m, n] (+ β·c) (+ bias[n]), the second
// step of a split-K GEMM (gemm-tiled.wgsl with SPLIT = 1, or gemv.wgsl with splits).
//
// Bindings (group 0):
//   0  ws    storage, read        [batch, splits, M, N] f32
//   1  bias  storage, read        [N] {{T}} (dummy when HAS_BIAS = 0)
//   2  c     storage, read_write  [batch, M, N] {{T}}
//   3  p     uniform { n: batch·M·N, MN: M·N, N, splits, grid_x, _, alpha, beta, alpha2, n1 }
// Section TWO_OUT binds a second output c2 at 3 (the uniform then at 4), for one of:
//   PAIR_T (the two products of gemm-vec4.wgsl's PAIR, batch 2): batch entry 1 goes to c2,
//     transposed ([N, M]) and scaled by alpha2; no β or bias;
//   CONCAT_C (gemm-vec4.wgsl's CONCAT_N, batch 1): columns n < n1 go to c [M, n1] (α, bias),
//     columns n1..N to c2 [M, N - n1] as they are; no β.
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y). Sums in a fixed order.
// Overrides: HAS_BIAS, ACCUMULATE (0/1).
{{ENABLE}}

override HAS_BIAS: u32 = 0u;
override ACCUMULATE: u32 = 0u;

struct Params { n: u32, MN: u32, N: u32, splits: u32, grid_x: u32, pad0: u32, alpha: f32, beta: f32, alpha2: f32, n1: u32 }

@group(0) @binding(0) var<storage, read> ws: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> c: array<{{T}}>;
{{#TWO_OUT}}
@group(0) @binding(3) var<storage, read_write> c2: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;
{{/TWO_OUT}}
{{^TWO_OUT}}
@group(0) @binding(3) var<uniform> p: Params;
{{/TWO_OUT}}

{{>gemm-epilogue}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let batch = i / p.MN;
  let rest = i % p.MN;
  // Four splits per step with independent sums: with few outputs (a decode-sized product split
  // 32 ways) this loop is latency-bound, and one load per iteration left it waiting on each load.
  let base = batch * p.splits * p.MN + rest;
  var acc = vec4<f32>(0.0);
  let whole = p.splits / 4u * 4u;
  for (var s = 0u; s < whole; s += 4u) {
    acc += vec4<f32>(ws[base + s * p.MN], ws[base + (s + 1u) * p.MN], ws[base + (s + 2u) * p.MN], ws[base + (s + 3u) * p.MN]);
  }
  for (var s = whole; s < p.splits; s++) { acc.x += ws[base + s * p.MN]; }
  let total = (acc.x + acc.y) + (acc.z + acc.w);
{{#PAIR_T}}
  if (batch == 1u) {
    c2[(rest % p.N) * (p.MN / p.N) + rest / p.N] = {{T}}(p.alpha2 * total);
    return;
  }
{{/PAIR_T}}
{{#CONCAT_C}}
  let col = rest % p.N;
  let row = rest / p.N;
  if (col >= p.n1) {
    c2[row * (p.N - p.n1) + col - p.n1] = {{T}}(total);
  } else {
    var y = p.alpha * total;
    if (HAS_BIAS == 1u) { y += f32(bias[col]); }
    c[row * p.n1 + col] = {{T}}(y);
  }
{{/CONCAT_C}}
{{^CONCAT_C}}
  c[i] = {{T}}(epilogue(i, rest % p.N, total));
{{/CONCAT_C}}
}
