// sigmoid.wgsl, a shared WGSL piece: the logistic function of unary.wgsl and gated-act.wgsl.

// Stable on both sides: never exponentiates a large positive number.
fn sigmoid(v: f32) -> f32 {
  let e = exp(-abs(v));
  return select(e / (1.0 + e), 1.0 / (1.0 + e), v >= 0.0);
}
