  // gemm-uniform.wgsl, a shared WGSL piece: the first fields of the uniform of gemm-tiled,
  // gemm-vec4 and gemm-sgmat (included inside their struct; the host writes them in this order).
  // Batch strides in elements; k_chunk, splits: split-K's share of K per split and the number of
  // splits (0 for gemm-sgmat, which does not split K).
  M: u32, N: u32, K: u32, batch: u32,
  a_batch_stride: u32, b_batch_stride: u32, k_chunk: u32, splits: u32,
  alpha: f32, beta: f32,
