// gemm-epilogue.wgsl, a shared WGSL piece: the last step of the GEMM kernels that
// write C (gemm-tiled, gemm-sgmat, gemm-vec4 without VEC_OUT, gemm-splitk-reduce, gemv-rows,
// gemv-cols). The including kernel declares overrides ACCUMULATE and HAS_BIAS, the scalar
// bindings c and bias, and p.alpha, p.beta in its uniform; it stores the result as C's type.

// α·total (+ β·C[o] when ACCUMULATE) (+ bias[col] when HAS_BIAS), in f32.
fn epilogue(o: u32, col: u32, total: f32) -> f32 {
  var v = p.alpha * total;
  if (ACCUMULATE == 1u) { v += p.beta * f32(c[o]); }
  if (HAS_BIAS == 1u) { v += f32(bias[col]); }
  return v;
}
