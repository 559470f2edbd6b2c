// strided-index.wgsl, a shared WGSL piece: the index walk of the strided
// elementwise kernels (binary.wgsl, where.wgsl, copy-strided.wgsl). The including kernel declares
//   p.rank, p.shape: array<vec4u, 2>  the output (index space) shape, ranks up to 8, in its uniform p;
//   alias Offsets = vec2u or vec3u     one component per strided operand;
//   fn strides_at(d: u32) -> Offsets  the operands' element strides along output dim d.

fn at(v: array<vec4u, 2>, d: u32) -> u32 { return v[d / 4u][d % 4u]; }

// The operands' element offsets of flat (row-major) output index i: base + Σ_d i_d·strides_at(d).
fn strided_offsets(i: u32, base: Offsets) -> Offsets {
  var rest = i;
  var off = base;
  for (var d = i32(p.rank) - 1; d >= 0; d--) {
    let dim = at(p.shape, u32(d));
    let idx = rest % dim;
    rest = rest / dim;
    off += idx * strides_at(u32(d));
  }
  return off;
}
