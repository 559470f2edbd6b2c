// counter-hash.wgsl, a shared WGSL piece: the counter-based hash of
// @metal-lora/tensor's random.ts (mix32, randomBits), so the CPU reference and every GPU kernel
// draw the same bits for (key, counter): the LoRA dropout mask (dropout.wgsl, gemm-vec4.wgsl's
// LORA_MASK prologue) is regenerated from (seed, element index), never stored.

// One 32-bit avalanche round; the same constants as mix32 in packages/tensor/src/random.ts.
fn mix32(v: u32) -> u32 {
  var x = v;
  x = x ^ (x >> 16u);
  x = x * 0x7feb352du;
  x = x ^ (x >> 15u);
  x = x * 0x846ca68bu;
  return x ^ (x >> 16u);
}

// randomBits(key, counter) of random.ts (u32 arithmetic wraps as its `>>> 0` does).
fn random_bits(key: u32, counter: u32) -> u32 {
  let k = mix32(key ^ 0x9e3779b9u);
  return mix32(mix32(counter + k) ^ k);
}
