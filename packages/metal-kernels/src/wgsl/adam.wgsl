// adam.wgsl: one Adam/AdamW step of one parameter, in f32:
//   g = grad (+ wd·param when L2), m' = b1·m + (1 − b1)·g, v' = b2·v + (1 − b2)·g²,
//   param' = param·decay − lr·(m' / c1) / (sqrt(v' / c2) + eps)
// with decay = 1 − lr·wd for AdamW (1 otherwise) and c1, c2 the bias corrections 1 − β^step.
//
// Bindings (group 0), IN_PLACE = 0 (param', m', v' to new buffers):
//   0  param  storage, read        [n] {{T}}
//   1  grad   storage, read        [n] {{T}}
//   2  m      storage, read        [n] {{T}}
//   3  v      storage, read        [n] {{T}}
//   4  po     storage, read_write  [n] {{T}}  param'
//   5  mo     storage, read_write  [n] {{T}}  m'
//   6  vo     storage, read_write  [n] {{T}}  v'
//   7  h      uniform              { lr, decay, c1, c2: f32 }  (the step's values, shared by every parameter)
//   8  p      uniform              { n, grid_x: u32, b1, b2, eps, l2: f32 }
// IN_PLACE = 1 (written back into param, m and v; each element read and written by one thread):
//   0  param  storage, read_write, 1 grad storage, read, 2 m and 3 v storage, read_write,
//   4  h uniform, or with SCHEDULE = 1 storage, read (a tensor the step's values are written
//      into before each replay of a captured update), 5 p uniform; with COPY = 1:
//   5  copy   storage, read_write  [n] H  param' rounded (mixed precision: param, m, v are the
//      f32 master weights and moments, copy the half weights the model computes with), 6 p uniform
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535
// (grid_x = workgroups along x · 256). T (param, m, v) is f32 or f16, G (grad) T or H.
{{ENABLE}}

struct Step { lr: f32, decay: f32, c1: f32, c2: f32 }
struct Params { n: u32, grid_x: u32, b1: f32, b2: f32, eps: f32, l2: f32 }

{{^IN_PLACE}}
@group(0) @binding(0) var<storage, read> param: array<{{T}}>;
@group(0) @binding(1) var<storage, read> grad: array<{{T}}>;
@group(0) @binding(2) var<storage, read> m: array<{{T}}>;
@group(0) @binding(3) var<storage, read> v: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> po: array<{{T}}>;
@group(0) @binding(5) var<storage, read_write> mo: array<{{T}}>;
@group(0) @binding(6) var<storage, read_write> vo: array<{{T}}>;
@group(0) @binding(7) var<uniform> h: Step;
@group(0) @binding(8) var<uniform> p: Params;
{{/IN_PLACE}}
{{#IN_PLACE}}
@group(0) @binding(0) var<storage, read_write> param: array<{{T}}>;
@group(0) @binding(1) var<storage, read> grad: array<{{G}}>;
@group(0) @binding(2) var<storage, read_write> m: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> v: array<{{T}}>;
{{^SCHEDULE}}
@group(0) @binding(4) var<uniform> h: Step;
{{/SCHEDULE}}
{{#SCHEDULE}}
@group(0) @binding(4) var<storage, read> h: Step;
{{/SCHEDULE}}
{{^COPY}}
@group(0) @binding(5) var<uniform> p: Params;
{{/COPY}}
{{#COPY}}
@group(0) @binding(5) var<storage, read_write> copy: array<{{H}}>;
@group(0) @binding(6) var<uniform> p: Params;
{{/COPY}}
{{/IN_PLACE}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let w = f32(param[i]);
  let g = f32(grad[i]) + p.l2 * w;
  let m2 = p.b1 * f32(m[i]) + (1.0 - p.b1) * g;
  let v2 = p.b2 * f32(v[i]) + (1.0 - p.b2) * g * g;
  {{MO}}[i] = {{T}}(m2);
  {{VO}}[i] = {{T}}(v2);
  let w2 = w * h.decay - h.lr * (m2 / h.c1) / (sqrt(v2 / h.c2) + p.eps);
  {{PO}}[i] = {{T}}(w2);
{{#COPY}}
  copy[i] = {{H}}(w2);
{{/COPY}}
}
