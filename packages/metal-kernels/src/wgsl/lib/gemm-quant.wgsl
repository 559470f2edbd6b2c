// gemm-quant.wgsl, a shared WGSL piece: the QUANT section of gemm-tiled and gemm-vec4, where op(B)
// is an MLX affine-quantized matrix W (batch 1): its packed u32 words at binding 1, a scale and a
// bias per group of GROUP columns at bindings QS and QB (text constants: 4 and 5 in gemm-tiled,
// 6 and 7 in gemm-vec4, whose LoRA prologue holds 4 and 5); W's elements dequantized one at a time
// (`weight_at`) or four consecutive ones of a row at once (`weight_vec4`).
// W's rows hold K values when TRANS_B (W [N, K]), else N (W [K, N]); reads the includer's `p`
// (gemm-uniform's N and K) and TRANS_B.
const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding({{QS}}) var<storage, read> scales: array<{{T}}>;
@group(0) @binding({{QB}}) var<storage, read> biases: array<{{T}}>;

{{>quant-unpack}}

/** W[r, col] dequantized. */
fn weight_at(r: u32, col: u32) -> f32 {
  var cols = p.N;
  if (TRANS_B == 1u) { cols = p.K; }
  let g = r * (cols / GROUP) + col / GROUP;
  return f32(scales[g]) * f32(unpack_q(r * (cols * BITS / 32u), col)) + f32(biases[g]);
}

/**
 * W[r, col..col + 3] dequantized, col a multiple of 4: one group (GROUP is a multiple of 4), so one
 * scale and bias, and the four values from one word (2, 4, 8 bits) or two (3, 5, 6 bits).
 */
fn weight_vec4(r: u32, col: u32) -> vec4<f32> {
  var cols = p.N;
  if (TRANS_B == 1u) { cols = p.K; }
  let g = r * (cols / GROUP) + col / GROUP;
  let bit = col * BITS;
  let word = r * (cols * BITS / 32u) + (bit >> 5u);
  let shift = bit & 31u;
  let lo = wq[word];
  let mask = (1u << BITS) - 1u;
  var q: vec4<u32>;
  if (32u % BITS == 0u) {
    q = (vec4<u32>(lo) >> (vec4<u32>(shift) + vec4<u32>(0u, BITS, 2u * BITS, 3u * BITS))) & vec4<u32>(mask);
  } else {
    var hi = 0u;
    if (shift + 4u * BITS > 32u) { hi = wq[word + 1u]; }
    for (var j = 0u; j < 4u; j++) {
      let sh = shift + j * BITS;
      var v = 0u;
      if (sh >= 32u) { v = hi >> (sh - 32u); } else {
        v = lo >> sh;
        if (sh + BITS > 32u) { v = v | (hi << (32u - sh)); }
      }
      q[j] = v & mask;
    }
  }
  return fma(vec4<f32>(f32(scales[g])), vec4<f32>(q), vec4<f32>(f32(biases[g])));
}