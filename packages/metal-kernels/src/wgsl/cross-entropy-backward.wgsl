// cross-entropy-backward.wgsl: dx[row, j] = c·(exp(x[row, j] − lse[row]) − [j == t]) with
// c = dloss[row]·weights[row] (0 where c = 0), t = targets[row]; f32 arithmetic.
//
// Bindings (group 0):
//   0  x        storage, read        [rows·len] {{T}}
//   1  targets  storage, read        [rows] i32
//   2  weights  storage, read        [rows] {{T}}
//   3  lse      storage, read        [rows] {{T}}
//   4  dloss    storage, read        [rows] {{T}}
//   5  dx       storage, read_write  [rows·len] {{T}}
//   6  p        uniform { n: u32, len: u32, grid_x: u32 }  (n = rows·len; grid_x = workgroups along x · 256)
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
{{ENABLE}}

struct Params { n: u32, len: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read> weights: array<{{T}}>;
@group(0) @binding(3) var<storage, read> lse: array<{{T}}>;
@group(0) @binding(4) var<storage, read> dloss: array<{{T}}>;
@group(0) @binding(5) var<storage, read_write> dx: array<{{T}}>;
@group(0) @binding(6) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let row = i / p.len;
  let j = i - row * p.len;
  let c = f32(dloss[row]) * f32(weights[row]);
  let hit = select(0.0, 1.0, i32(j) == targets[row]);
  dx[i] = {{T}}(select(c * (exp(f32(x[i]) - f32(lse[row])) - hit), 0.0, c == 0.0));
}
