import * as T from '@metal-lora/tensor';
import { describe, expect } from 'vitest';
import { random } from './gemm-check';
import { gpuIt } from '../../../test-support/gpu';
import { runRawShader } from './raw-shader';

describe('WebGPU smoke test', () => {
  gpuIt('finds an adapter and reports its features', async ({ context: { report } }) => {
    expect(report.features.length).toBeGreaterThan(0);
    expect(report.limits.maxComputeWorkgroupSizeX).toBeGreaterThanOrEqual(64);
    console.info(
      `[metal-kernels] adapter: ${report.vendor || '?'} ${report.architecture || ''} ${report.description || ''} (${report.runtime}); f16=${report.shaderF16} subgroups=${report.subgroups} timestamps=${report.timestampQuery}`,
    );
  });

  gpuIt("reads a shader's bindings in either attribute order, past comments, for its explicit layout", async (backend) => {
    // The layout comes from the declarations (the uniform at a dynamic offset); a commented-out one must not count.
    const source = `
      // @group(0) @binding(0) var<uniform> y: vec4u;
      /* @group(0) @binding(1) var<storage, read_write> p: P; */
      @binding(0) @group(0) var<storage, read_write> y: array<u32>;
      struct P { add: u32, n: u32, pad0: u32, pad1: u32 }
      @group(0) @binding(1) var<uniform> p: P;
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
        if (id.x < p.n) { y[id.x] = id.x + p.add; }
      }`;
    const n = 100;
    const y = backend.allocate('int32', n, 'bindings test');
    for (const add of [5, 7]) {
      backend.dispatch({ key: 'bindings test', source, buffers: [y.buffer], uniform: new Uint32Array([add, n, 0, 0]).buffer, workgroups: [2, 1, 1] });
      const got = await backend.read(y, 'int32', n);
      expect(Array.from(got)).toEqual(Array.from({ length: n }, (_, i) => i + add));
    }
    backend.free(y);
  });

  gpuIt('runs a compute shader and reads back its result', async ({ device }) => {
    const n = 1000; // not a multiple of the workgroup size
    const a = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 3);
    const b = Float32Array.from({ length: n }, (_, i) => Math.cos(i) + 0.5);
    const code = `
      @group(0) @binding(0) var<storage, read> a: array<f32>;
      @group(0) @binding(1) var<storage, read> b: array<f32>;
      @group(0) @binding(2) var<storage, read_write> y: array<f32>;
      @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3u) {
        if (id.x < arrayLength(&y)) { y[id.x] = a[id.x] * b[id.x] + 1.0; }
      }`;
    const got = new Float32Array(await runRawShader(device, 'smoke fma', code, [a, b], n));
    for (let i = 0; i < n; i++) expect(got[i]).toBeCloseTo(Math.fround(a[i] * b[i]) + 1, 5);
  });
  gpuIt('timeRegion times the passes fn records, and submits the prelude before them, untimed', async (backend) => {
    if (!backend.context.report.timestampQuery) return;
    const a = random([192, 160], 1, backend, 'float32');
    const b = random([160, 176], 2, backend, 'float32');
    const x = random([64], 3, backend, 'float32');
    const big = () => T.matmul(a, b);
    // Warm the pipelines, then: eight products alone, and a small op with eight products as its
    // prelude (timed there, they would make the region as long as the eight alone; under a loaded
    // CPU lavapipe's small op took 12 ms against 190 for the eight, so half leaves a wide margin).
    big().dispose();
    await backend.sync();
    let products: T.Tensor[] = [];
    const bigMs = await backend.timeRegion(() => {
      products = Array.from({ length: 8 }, big);
    });
    for (const p of products) p.dispose();
    let inPrelude: T.Tensor[] = [];
    let small: T.Tensor | undefined;
    const smallMs = await backend.timeRegion(
      () => {
        small = T.add(x, x);
      },
      () => {
        inPrelude = Array.from({ length: 8 }, big);
      },
    );
    expect(bigMs).toBeGreaterThan(0);
    expect(smallMs).toBeGreaterThanOrEqual(0);
    // The prelude ran (its products are there) but its time is not in the region's.
    expect(smallMs).toBeLessThan(bigMs / 2);
    const ref = T.matmul(T.tensor(await a.data(), [192, 160], { dtype: 'float64' }), T.tensor(await b.data(), [160, 176], { dtype: 'float64' }));
    expect(inPrelude).toHaveLength(8);
    const got = await inPrelude[7].data();
    const want = await ref.data();
    expect(Math.max(...Array.from(got, (v, i) => Math.abs(v - want[i])))).toBeLessThan(1e-3);
    expect(Array.from(await small!.data())).toEqual(Array.from(await x.data(), (v) => Math.fround(2 * v)));
  });
});
