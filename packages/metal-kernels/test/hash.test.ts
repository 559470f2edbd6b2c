import { randomBits } from '@metal-lora/tensor';
import { describe, expect } from 'vitest';
import { specialize } from '../src/internal';
import { gpuIt } from '../../../test-support/gpu';
import { runRawShader } from './raw-shader';

// The dropout kernels (dropout.wgsl, gemm-vec4.wgsl's LORA_MASK prologue) include one WGSL copy
// of the counter hash, lib/counter-hash.wgsl; this checks its bits against random.ts's randomBits.
const source = `{{>counter-hash}}

@group(0) @binding(0) var<storage, read> keys: array<u32>;
@group(0) @binding(1) var<storage, read> counters: array<u32>;
@group(0) @binding(2) var<storage, read_write> bits: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3u) {
  if (id.x < arrayLength(&bits)) { bits[id.x] = random_bits(keys[id.x], counters[id.x]); }
}`;

describe('counter hash', () => {
  gpuIt("lib/counter-hash.wgsl's random_bits gives randomBits' values, wrapping as it does", async ({ device }) => {
    // Seeds at the edges of u32 (and 0x9e3779b9, whose mixed key is mix32(0)), counters that wrap when the key is added.
    const seeds = [0, 1, 4242, 0x9e3779b9, 0x7fffffff, 0xffffffff];
    const counterList = [0, 1, 2, 3, 255, 256, 65_537, 1_000_003, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
    const keys = Uint32Array.from(seeds.flatMap((s) => counterList.map(() => s)));
    const counters = Uint32Array.from(seeds.flatMap(() => counterList));
    const n = keys.length;
    const code = specialize('counter-hash test', source, {});
    const got = Array.from(new Uint32Array(await runRawShader(device, 'counter-hash test', code, [keys, counters], n)));
    expect(got).toEqual(Array.from(keys, (key, i) => randomBits(key, counters[i])));
  });
});
