// row-reduce.wgsl, a shared WGSL piece: the workgroup tree reduction of the one-workgroup-per-row
// kernels (reduce-rows, rms-norm, softmax, cross-entropy). The including kernel declares
//   const WG: u32          its workgroup size, a power of two;
//   alias Reduced = ...    what each thread contributes (f32, or cross-entropy's (max, sum));
//   fn combine(a: Reduced, b: Reduced, op: u32) -> Reduced
//                          an associative merge; op picks one where a kernel has several.
// Every thread of the workgroup calls row_reduce (it has barriers) and gets the merge of all WG
// values. It ends without a barrier: a kernel that reduces again must place one after reading the
// result, before `partial` is written anew.

var<workgroup> partial: array<Reduced, WG>;

fn row_reduce(v: Reduced, lid: u32, op: u32) -> Reduced {
  partial[lid] = v;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s / 2u) {
    if (lid < s) { partial[lid] = combine(partial[lid], partial[lid + s], op); }
    workgroupBarrier();
  }
  return partial[0];
}
