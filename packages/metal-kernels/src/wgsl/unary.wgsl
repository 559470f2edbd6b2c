// unary.wgsl: y[i] = f(x[i]) for the float unary ops, computed in f32.
//
// Bindings (group 0):
//   0  x  storage, read        [n] {{T}}
//   1  y  storage, read_write  [n] {{T}}
//   2  p  uniform              { n: u32, grid_x: u32 }  (grid_x = workgroups along x · 256)
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
// Overrides: OP in 0..10 selects f (neg, exp, log, sqrt, tanh, sigmoid, silu, relu, erf, abs,
//   gelu) and GELU_TANH (0 = exact erf form, 1 = tanh approximation). T is f32 or f16.
{{ENABLE}}

override OP: u32;
override GELU_TANH: u32 = 0u;

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

// Abramowitz & Stegun 7.1.26 with its error below 1.5e-7, under f32 resolution near 1.
fn erf_approx(v: f32) -> f32 {
  let a = abs(v);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  let r = 1.0 - poly * exp(-a * a);
  return select(-r, r, v >= 0.0);
}

{{>sigmoid}}

fn tanh_safe(v: f32) -> f32 {
  // Some drivers compute tanh as a ratio of exponentials that overflows: saturate first.
  return tanh(clamp(v, -15.0, 15.0));
}

fn apply(v: f32) -> f32 {
  switch OP {
    case 0u: { return -v; }
    case 1u: { return exp(v); }
    case 2u: { return log(v); }
    case 3u: { return sqrt(v); }
    case 4u: { return tanh_safe(v); }
    case 5u: { return sigmoid(v); }
    case 6u: { return v * sigmoid(v); }
    case 7u: { return select(0.0, v, v > 0.0 || v != v); }
    case 8u: { return erf_approx(v); }
    case 9u: { return abs(v); }
    case 10u: {
      if (GELU_TANH == 1u) { return 0.5 * v * (1.0 + tanh_safe(0.7978845608028654 * (v + 0.044715 * v * v * v))); }
      return 0.5 * v * (1.0 + erf_approx(v * 0.7071067811865476));
    }
    default: { return v; }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  y[i] = {{T}}(apply(f32(x[i])));
}
