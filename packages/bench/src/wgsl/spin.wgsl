// spin.wgsl: busy arithmetic and nothing else, to keep a GPU's clocks up (the benchmarks' clock
// warmer: a driver lowers the clocks of a GPU that the host keeps waiting).
//
// Bindings (group 0):
//   0  out  storage, read_write  [workgroups · 256] f32 (written only if the sums meet a value they never reach)
//   1  p    uniform { iters: u32 }
// Each thread runs four independent chains of `iters` fma steps.

struct Params { iters: u32 }

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: Params;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  var a = f32(gid.x) * 1e-9;
  var b = a + 0.25;
  var c = a + 0.5;
  var d = a + 0.75;
  for (var i = 0u; i < p.iters; i++) {
    a = fma(a, 0.9999999, 1e-7);
    b = fma(b, 0.9999999, 1e-7);
    c = fma(c, 0.9999999, 1e-7);
    d = fma(d, 0.9999999, 1e-7);
  }
  // A result the compiler cannot drop, stored in practice never (the chains stay below 2).
  if (a + b + c + d < -1.0) { out[gid.x] = a; }
}
