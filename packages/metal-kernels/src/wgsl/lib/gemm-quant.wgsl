// gemm-quant.wgsl, a shared WGSL piece: the QUANT section of gemm-tiled and gemm-vec4, where op(B)
// is an MLX affine-quantized matrix W (batch 1): its packed u32 words at binding 1, a scale and a
// bias per group of GROUP columns at bindings 4 and 5, and W's elements dequantized one at a time.
// W's rows hold K values when TRANS_B (W [N, K]), else N (W [K, N]); reads the includer's `p`
// (gemm-uniform's N and K) and TRANS_B.
const BITS: u32 = {{BITS}}u;
const GROUP: u32 = {{GROUP}}u;
@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(4) var<storage, read> scales: array<{{T}}>;
@group(0) @binding(5) var<storage, read> biases: array<{{T}}>;

{{>quant-unpack}}

/** W[r, col] dequantized. */
fn weight_at(r: u32, col: u32) -> f32 {
  var cols = p.N;
  if (TRANS_B == 1u) { cols = p.K; }
  let g = r * (cols / GROUP) + col / GROUP;
  return f32(scales[g]) * f32(unpack_q(r * (cols * BITS / 32u), col)) + f32(biases[g]);
}
