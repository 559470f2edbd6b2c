// The q value of column c of a packed row whose words start at `base`: an LSB-first bit stream of
// BITS-bit values over little-endian u32 words (MLX's affine packing; 3, 5 and 6 bits straddle
// words). Reads `wq: array<u32>`.
fn unpack_q(base: u32, c: u32) -> u32 {
  let bit = c * BITS;
  let word = base + (bit >> 5u);
  let shift = bit & 31u;
  var v = wq[word] >> shift;
  if (shift + BITS > 32u) { v = v | (wq[word + 1u] << (32u - shift)); }
  return v & ((1u << BITS) - 1u);
}
