// gated-act.wgsl: y = act(gate)·up (ACT 0: SiLU, SwiGLU; ACT 1: tanh-approximated GELU, GeGLU),
// or, with BACKWARD = 1, from dy: dGate = dy·up·act'(gate) and dUp = dy·act(gate); f32 arithmetic.
//
// Bindings (group 0):
//   0  gate   storage, read        [n] {{T}}
//   1  up     storage, read        [n] {{T}}
//   2  out    storage, read_write  [n] {{T}}   y, or dGate when BACKWARD = 1
//   3  dy     storage, read        [n] {{T}}   (BACKWARD = 1 only)
//   4  d_up   storage, read_write  [n] {{T}}   (BACKWARD = 1 only)
//   5  p      uniform { n: u32, grid_x: u32 }  (grid_x = workgroups along x · 256)
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
// Overrides: ACT 0 or 1.
{{ENABLE}}

override ACT: u32 = 0u;

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> gate: array<{{T}}>;
@group(0) @binding(1) var<storage, read> up: array<{{T}}>;
@group(0) @binding(2) var<storage, read_write> out: array<{{T}}>;
{{#BACKWARD}}
@group(0) @binding(3) var<storage, read> dy: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> d_up: array<{{T}}>;
{{/BACKWARD}}
@group(0) @binding(5) var<uniform> p: Params;

{{>sigmoid}}

// (act(g), act'(g))
fn activation(g: f32) -> vec2<f32> {
  if (ACT == 0u) {
    let s = sigmoid(g);
    return vec2(g * s, s * (1.0 + g * (1.0 - s)));
  }
  let c = 0.7978845608028654; // sqrt(2 / pi)
  let t = tanh(clamp(c * (g + 0.044715 * g * g * g), -15.0, 15.0));
  return vec2(0.5 * g * (1.0 + t), 0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * g * g));
}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let a = activation(f32(gate[i]));
  let u = f32(up[i]);
{{^BACKWARD}}
  out[i] = {{T}}(a.x * u);
{{/BACKWARD}}
{{#BACKWARD}}
  let d = f32(dy[i]);
  out[i] = {{T}}(d * u * a.y);
  d_up[i] = {{T}}(d * a.x);
{{/BACKWARD}}
}
