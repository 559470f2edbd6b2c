// unary-int.wgsl: the unary ops defined on int32 (neg, abs, relu), in exact integer arithmetic.
//
// Bindings (group 0):
//   0  x  storage, read        [n] i32
//   1  y  storage, read_write  [n] i32
//   2  p  uniform              { n: u32, grid_x: u32 }
// Dispatch: as unary.wgsl. Overrides: OP 0 = neg, 7 = relu, 9 = abs (the float OP numbers).

override OP: u32;

struct Params { n: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<i32>;
@group(0) @binding(1) var<storage, read_write> y: array<i32>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let v = x[i];
  switch OP {
    case 0u: { y[i] = -v; }
    case 7u: { y[i] = max(v, 0); }
    default: { y[i] = abs(v); }
  }
}
