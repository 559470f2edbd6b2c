// copy-strided.wgsl: for every index (i0..i7) of an index space `shape`,
//   dst[dst_offset + Σ i_d·dst_strides[d]] = src[src_offset + Σ i_d·src_strides[d]].
// One kernel serves transpose/permute (src strides permuted), slice (src offset), broadcastTo
// (src stride 0), concat (dst offset per input) and pad (dst interior after a fill).
//
// Bindings (group 0):
//   0  src  storage, read        {{T}}
//   1  dst  storage, read_write  {{T}}
//   2  p    uniform { n, rank, grid_x, src_offset, dst_offset, _, _, _, shape[8], src_strides[8], dst_strides[8] }
// Dispatch: ceil(n / 256) workgroups of 256, folded into (x, y); n = product of shape. Ranks ≤ 8.
{{ENABLE}}

struct Params {
  n: u32, rank: u32, grid_x: u32, src_offset: u32,
  dst_offset: u32, pad0: u32, pad1: u32, pad2: u32,
  shape: array<vec4u, 2>,
  src_strides: array<vec4u, 2>,
  dst_strides: array<vec4u, 2>,
}

@group(0) @binding(0) var<storage, read> src: array<{{T}}>;
@group(0) @binding(1) var<storage, read_write> dst: array<{{T}}>;
@group(0) @binding(2) var<uniform> p: Params;

// Offsets of src and dst (lib/strided-index.wgsl).
alias Offsets = vec2u;
fn strides_at(d: u32) -> Offsets { return vec2u(at(p.src_strides, d), at(p.dst_strides, d)); }
{{>strided-index}}

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let i = gid.x + gid.y * p.grid_x;
  if (i >= p.n) { return; }
  let o = strided_offsets(i, vec2u(p.src_offset, p.dst_offset));
  dst[o.y] = src[o.x];
}
