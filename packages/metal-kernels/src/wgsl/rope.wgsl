// rope.wgsl: rotary position embedding ("rotate half") of x [B, H, T, Dh] ([B, T, H, Dh] when
// IN_BTHD = 1) into y [B, H, T, Dh] ([B, T, H, Dh] when OUT_BTHD = 1), with tables cos, sin
// [T, R] (PER_SEQ = 0) or [B, 1, T, R] (PER_SEQ = 1). For feature j < R, partner o = j ± R/2:
//   forward (INVERSE = 0): y[j] = x[j]·cos[j] + s_j·x[o]·sin[j]      (s_j = −1 for j < R/2, else +1)
//   inverse (INVERSE = 1): y[j] = x[j]·cos[j] − s_j·x[o]·sin[o]      (the transposed rotation: backward)
// Features j ≥ R pass through. f32 arithmetic.
//
// Bindings (group 0):
//   0  x    storage, read        [B·H·T·Dh] {{T}}  (either layout)
//   1  cos  storage, read        [(B or 1)·T·R] {{T}}
//   2  sin  storage, read        [(B or 1)·T·R] {{T}}
//   3  y    storage, read_write  [B·H·T·Dh] {{T}}  (either layout)
//   4  p    uniform { n, dh, r, t, h, grid_x: u32 }  (n = B·H·T·Dh; grid_x = workgroups along x · 256)
// Dispatch: ceil(n / 256) workgroups of 256 threads, folded into (x, y) when above 65535.
// Overrides: INVERSE, PER_SEQ, IN_BTHD, OUT_BTHD: each 0 or 1.
{{ENABLE}}

override INVERSE: u32 = 0u;
override PER_SEQ: u32 = 0u;
override IN_BTHD: u32 = 0u;
override OUT_BTHD: u32 = 0u;

struct Params { n: u32, dh: u32, r: u32, t: u32, h: u32, grid_x: u32 }

@group(0) @binding(0) var<storage, read> x: array<{{T}}>;
@group(0) @binding(1) var<storage, read> cos_t: array<{{T}}>;
@group(0) @binding(2) var<storage, read> sin_t: array<{{T}}>;
@group(0) @binding(3) var<storage, read_write> y: array<{{T}}>;
@group(0) @binding(4) var<uniform> p: Params;

{{>rope-pair}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.y * p.grid_x + gid.x;
  if (i >= p.n) { return; }
  let j = i % p.dh;
  let position = i / p.dh; // (b·H + h)·T + t, or (b·T + t)·H + h with OUT_BTHD
  var b: u32;
  var h: u32;
  var t: u32;
  if (OUT_BTHD == 1u) {
    h = position % p.h;
    t = (position / p.h) % p.t;
    b = position / (p.h * p.t);
  } else {
    t = position % p.t;
    h = (position / p.t) % p.h;
    b = position / (p.t * p.h);
  }
  let src = select((b * p.h + h) * p.t + t, (b * p.t + t) * p.h + h, IN_BTHD == 1u) * p.dh;
  if (j >= p.r) {
    y[i] = x[src + j];
    return;
  }
  let table = (select(0u, b, PER_SEQ == 1u) * p.t + t) * p.r;
  let o = rope_partner(j, p.r);
  let s = rope_sign(j, p.r);
  let xo = f32(x[src + o]);
  var rot: f32;
  if (INVERSE == 1u) {
    rot = -s * xo * f32(sin_t[table + o]);
  } else {
    rot = s * xo * f32(sin_t[table + j]);
  }
  y[i] = {{T}}(f32(x[src + j]) * f32(cos_t[table + j]) + rot);
}
