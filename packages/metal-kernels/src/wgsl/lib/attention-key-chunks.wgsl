// Shared by attention-forward.wgsl and attention-dq.wgsl, spliced into their entry points (the
// accumulators stay the entry point's own): acc[a·ON + n] (row group + 8·a, vec4 lane + 16·n)
// += Σ_c blk[row, c]·x[j0 + c] over the block's 32 keys, x's rows staged VK at a time from the
// registers `ahead` (from fetch_keys, generated with the loads: the first VK rows loaded before,
// each next chunk while the current one is used). Names it takes from the entry point: i, group,
// lane, keys, j0, acc, blk, ahead, stage.
for (var c0 = 0u; c0 < BLOCK; c0 += VK) {
  for (var u = 0u; u < VPT; u++) {
    if (i + 128u * u < VK * DV4) { stage[i + 128u * u] = ahead[u]; }
  }
  workgroupBarrier();
  if (c0 + VK < BLOCK) { ahead = fetch_keys(keys, j0 + c0 + VK, i); }
  for (var c = 0u; c < VK; c += 4u) {
    var wa: array<vec4<f32>, 4>;
    for (var a = 0u; a < 4u; a++) { wa[a] = blk[(group + 8u * a) * 8u + (c0 + c) / 4u]; }
    for (var n = 0u; n < ON; n++) {
      let f = lane + 16u * n;
      if (f < DV4) {
        let x0 = stage[c * DV4 + f];
        let x1 = stage[(c + 1u) * DV4 + f];
        let x2 = stage[(c + 2u) * DV4 + f];
        let x3 = stage[(c + 3u) * DV4 + f];
        for (var a = 0u; a < 4u; a++) {
          acc[a * ON + n] += wa[a].x * x0 + wa[a].y * x1 + wa[a].z * x2 + wa[a].w * x3;
        }
      }
    }
  }
  workgroupBarrier();
}
