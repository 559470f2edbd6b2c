// write-kv.wgsl: a step's keys and values into a KV cache, in place:
//   keys[b, h, start + t, j] = rope(k)[b, t, h, j]   (k itself when ROTARY is off)
//   values[b, h, start + t, j] = v[b, t, h, j]
// with k, v [B, T, H, D] (the projection's layout), keys, values [B, H, S, D], start read from a
// buffer (so a recorded dispatch serves every step), and rope as rope.wgsl's forward ("rotate
// half" over the first R features; tables [T, R], or [B, 1, T, R] when PER_SEQ = 1). Slots that
// would land outside the cache (start < 0 or start + t ≥ S) are not written. f32 arithmetic.
//
// Bindings (group 0):
//   0  k       storage, read        [B·T·H·D] {{T}}
//   1  v       storage, read        [B·T·H·D] {{T}}
//   2  start   storage, read        [1] i32
//   3  keys    storage, read_write  [B·H·S·D] {{T}}
//   4  values  storage, read_write  [B·H·S·D] {{T}}
//   5  cos     storage, read        [(B or 1)·T·R] {{T}}  (ROTARY only)
//   6  sin     storage, read        [(B or 1)·T·R] {{T}}  (ROTARY only)
//   7  p       uniform { n, d, h, t, s, r, grid_x: u32 }  (n = B·T·H·D; grid_x = workgroups along x · 256)
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
// Overrides: PER_SEQ 0 or 1.
{{ENABLE}}

override PER_SEQ: u32 = 0u;

struct Params { n: u32, d: u32, h: u32, t: u32, s: u32, r: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> k: array<{{T}}>;
@group(0) @binding(1) var<storage, read> v: array<{{T}}>;
@group(0) @binding(2) var<storage, read> start: array<i32>;
@group(0) @binding(3) var<storage, read_write> keys: array<{{T}}>;
@group(0) @binding(4) var<storage, read_write> values: array<{{T}}>;
{{#ROTARY}}
@group(0) @binding(5) var<storage, read> cos_t: array<{{T}}>;
@group(0) @binding(6) var<storage, read> sin_t: array<{{T}}>;
{{/ROTARY}}
@group(0) @binding(7) var<uniform> p: Params;

{{>rope-pair}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let j = i % p.d;
  let h = (i / p.d) % p.h;
  let t = (i / (p.d * p.h)) % p.t;
  let b = i / (p.d * p.h * p.t);
  let at = start[0];
  if (at < 0 || u32(at) + t >= p.s) { return; }
  let dst = ((b * p.h + h) * p.s + u32(at) + t) * p.d + j;
  values[dst] = v[i];
{{^ROTARY}}
  keys[dst] = k[i];
{{/ROTARY}}
{{#ROTARY}}
  if (j >= p.r) {
    keys[dst] = k[i];
    return;
  }
  let table = (select(0u, b, PER_SEQ == 1u) * p.t + t) * p.r + j;
  let rot = rope_sign(j, p.r) * f32(k[i - j + rope_partner(j, p.r)]) * f32(sin_t[table]);
  keys[dst] = {{T}}(f32(k[i]) * f32(cos_t[table]) + rot);
{{/ROTARY}}
}
