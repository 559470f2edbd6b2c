// binary.wgsl: out[i] = f(a[ia], b[ib]) with NumPy broadcasting, for ranks up to 8.
//
// Bindings (group 0):
//   0  a    storage, read        {{T}}
//   1  b    storage, read        {{T}}
//   2  out  storage, read_write  [n] {{O}}
//   3  p    uniform  { n, rank, grid_x, _, shape[8], a_strides[8], b_strides[8] } (u32, packed in vec4s)
// a_strides / b_strides are element strides of a and b read as the output's shape (0 on
// broadcast dims). Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).
// Overrides: OP 0..8 = add, sub, mul, div, pow, maximum, equal, greater, less. Comparisons write
//   O = u32 (bool); arithmetic writes O = T. Math runs in f32 for f32/f16 and in i32 for i32.
{{ENABLE}}

override OP: u32;

struct Params {
  n: u32, rank: u32, grid_x: u32, pad0: u32,
  shape: array<vec4u, 2>,
  a_strides: array<vec4u, 2>,
  b_strides: array<vec4u, 2>,
}

@group(0) @binding(0) var<storage, read> a: array<{{T}}>;
@group(0) @binding(1) var<storage, read> b: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{O}}>;
@group(0) @binding(3) var<uniform> p: Params;

// Offsets of a and b (lib/strided-index.wgsl).
alias Offsets = vec2u;
fn strides_at(d: u32) -> Offsets { return vec2u(at(p.a_strides, d), at(p.b_strides, d)); }
{{>strided-index}}

// WGSL's pow is undefined for x < 0 and pow(0, 0); match PyTorch: odd/even integer exponents of
// negative bases, NaN for fractional ones, and x^0 = 1.
fn pow_f(x: f32, y: f32) -> f32 {
  if (y == 0.0) { return 1.0; }
  if (x >= 0.0) { return pow(x, y); }
  if (fract(y) != 0.0) {
    var nan_bits = 0x7fc00000u; // a var: constant NaN is rejected by WGSL's constant evaluation
    return bitcast<f32>(nan_bits);
  }
  let r = pow(-x, y);
  return select(r, -r, (i32(y) & 1) == 1);
}

fn apply(x: {{C}}, y: {{C}}) -> {{O}} {
  switch OP {
    case 0u: { return {{O}}(x + y); }
    case 1u: { return {{O}}(x - y); }
    case 2u: { return {{O}}(x * y); }
    case 3u: { return {{O}}(x / y); }
    case 4u: { return {{O}}({{POW}}); }
    case 5u: { return {{O}}(select(y, x, x > y || x != x)); }
    case 6u: { return {{O}}(select(0u, 1u, x == y)); }
    case 7u: { return {{O}}(select(0u, 1u, x > y)); }
    default: { return {{O}}(select(0u, 1u, x < y)); }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let o = strided_offsets(i, vec2u(0u));
  out[i] = apply({{C}}(a[o.x]), {{C}}(b[o.y]));
}
