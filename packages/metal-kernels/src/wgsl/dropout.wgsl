// dropout.wgsl: y[i] = keep(seed, i) ? x[i] · scale : 0, the LoRA branch's dropout mask.
// keep(seed, i) is the counter-based hash of @metal-lora/tensor's random.ts (lib/counter-hash.wgsl:
// mix32 rounds over the seed and the element index), so the CPU reference and every GPU drop the
// same elements and backward regenerates the mask instead of storing it: keep ⟺ (bits >> 8) ≥
// threshold, with threshold = ceil(p · 2²⁴) computed on the host (exact, no float rounding of p).
//
// Bindings (group 0):
//   0  x  storage, read        [n] {{T}}
//   1  y  storage, read_write  [n] {{T}}
//   2  p  uniform { n, grid_x, seed, threshold, scale: f32 }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y).
{{ENABLE}}

struct Params { n: u32, grid_x: u32, seed: u32, threshold: u32, scale: f32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

{{>counter-hash}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let keep = (random_bits(p.seed, i) >> 8u) >= p.threshold;
  y[i] = select({{T}}(0), {{T}}(f32(x[i]) * p.scale), keep);
}
