// rope-pair.wgsl, a shared WGSL piece: the rotate-half pairing of rope.wgsl and write-kv.wgsl.

// Feature j < r's partner in the rotation: j + r/2 in the first half, j − r/2 in the second.
fn rope_partner(j: u32, r: u32) -> u32 {
  let half = r / 2u;
  return select(j - half, j + half, j < half);
}

// The sign of the partner's term in the forward rotation: −1 in the first half, +1 in the second.
fn rope_sign(j: u32, r: u32) -> f32 {
  return select(1.0, -1.0, j < r / 2u);
}
