/**
 * Exploration probe for decode bandwidth: pure streaming reads vs gemv layouts over one 64 MB
 * matrix, each timed with GPU timestamps. Not part of the published benchmark.
 *
 *   node probe-decode.mjs
 */
import { createWebGPUBackend, gemmDevice, selectGemm } from '@metal-lora/metal-kernels';
import { recordGemm } from '@metal-lora/metal-kernels/internal';
import { randomValues } from '@metal-lora/tensor/testing';
import { copyBandwidth } from './gemm-bench';
import { clockWarmerLine, timeKernel } from './timing';

const K = 4096;
const N = 4096;

function readSum(unroll: number): string {
  const loads = Array.from({ length: unroll }, (_, u) => `    let v${u} = w[min(i + ${u}u * stride, last)];`).join('\n');
  const sums = Array.from({ length: unroll }, (_, u) => `v${u}`).join(' + ');
  return `
@group(0) @binding(0) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct P { n: u32, threads: u32 }
@group(0) @binding(2) var<uniform> p: P;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let stride = p.threads;
  let last = p.n - 1u;
  var s = vec4<f32>(0.0);
  for (var i = gid.x; i < p.n; i += stride * ${unroll}u) {
${loads}
    s += ${sums};
  }
  let t = s.x + s.y + s.z + s.w;
  if (t == 1234.5678) { out[0] = t; }
}`;
}

/** ROWS rows of W per workgroup, 256/ROWS lanes per row, UNROLL straight-line loads, M = 1. */
function gemvRows(rows: number, unroll: number, subgroups: boolean): string {
  const lanes = 256 / rows;
  const loads = Array.from(
    { length: unroll },
    (_, u) => `    let k${u} = k + ${u * lanes}u; let w${u} = w[base + min(k${u}, last)]; let x${u} = x[min(k${u}, last)];`,
  ).join('\n');
  const fma = Array.from({ length: unroll }, (_, u) => `    acc += select(0.0, dot(w${u}, x${u}), k${u} < p.K4);`).join('\n');
  const reduce =
    subgroups && lanes === 32
      ? `  let total = subgroupAdd(acc);
  if (lane == 0u && n < p.N) { y[n] = total; }`
      : `  partial[lid.x] = acc;
  workgroupBarrier();
  for (var s = ${lanes / 2}u; s > 0u; s = s / 2u) {
    if (lane < s) { partial[lid.x] += partial[lid.x + s]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < p.N) { y[n] = partial[lid.x]; }`;
  return `${subgroups ? 'enable subgroups;' : ''}
@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
struct P { N: u32, K4: u32 }
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> partial: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let lane = lid.x % ${lanes}u;
  let n = min(wid.x * ${rows}u + lid.x / ${lanes}u, p.N - 1u);
  let base = n * p.K4;
  let last = p.K4 - 1u;
  var acc = 0.0;
  for (var k = lane; k < p.K4; k += ${lanes * unroll}u) {
${loads}
${fma}
  }
${reduce}
}`;
}

async function main(): Promise<void> {
  const backend = await createWebGPUBackend({ preciseTimestamps: true });
  const { report } = backend.context;
  console.log(`device: ${report.vendor} ${report.architecture} ${report.description}; features: ${report.features.join(',')}`);
  console.log(await clockWarmerLine(backend, process.argv.includes('--no-warm')));
  const copy = await copyBandwidth(backend).then(
    (c) => c.best,
    () => Number.NaN,
  );
  console.log(`copy (read+write) ${copy.toFixed(0)} GB/s`);
  const bytes = N * K * 4;
  const copies = 3;
  const ws = Array.from(
    { length: copies },
    (_, i) => (backend.upload(Float32Array.from(randomValues(N * K, 50 + i)), 'float32') as { buffer: GPUBuffer }).buffer,
  );
  const xv = Float32Array.from(randomValues(K, 7));
  const x = (backend.upload(xv, 'float32') as { buffer: GPUBuffer }).buffer;
  const y = backend.acquire(N * 4, 'y');
  const line = (name: string, ms: number, spread: number) =>
    console.log(
      `${name.padEnd(34)} ${ms.toFixed(4)} ms ±${spread.toFixed(4)}  ${(bytes / ms / 1e6).toFixed(0)} GB/s  (${((bytes / ms / 1e6 / copy) * 100).toFixed(0)}% of copy)`,
    );
  const n4 = (N * K) / 4;
  for (const unroll of [1, 4, 8]) {
    for (const groups of [528, 1056, 2112, 4224]) {
      const src = readSum(unroll);
      const threads = groups * 256;
      const { ms, spread } = await timeKernel(backend, (i) =>
        backend.dispatch({
          key: `probe-read-${unroll}`,
          source: src,
          buffers: [ws[i % copies], y],
          uniform: new Uint32Array([n4, threads, 0, 0]).buffer,
          workgroups: [groups, 1, 1],
          label: 'read',
        }),
      );
      line(`read u${unroll} wg${groups}`, ms, spread);
    }
  }
  const hasSub = report.features.includes('subgroups');
  const ref = new Float64Array(N);
  const w0 = await backend.read({ buffer: ws[0], bytes }, 'float32', N * K);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += w0[n * K + k] * xv[k];
    ref[n] = s;
  }
  const check = async (name: string) => {
    const out = (await backend.read({ buffer: y, bytes: N * 4 }, 'float32', N)) as Float32Array;
    let worst = 0;
    for (let n = 0; n < N; n++) worst = Math.max(worst, Math.abs(out[n] - ref[n]) / (1 + Math.abs(ref[n])));
    if (!(worst < 1e-3)) console.log(`${name}: WRONG ${worst}`);
  };
  for (const sub of hasSub ? [false, true] : [false]) {
    for (const rows of [1, 2, 8]) {
      for (const unroll of [1, 2, 4, 8]) {
        if (sub && rows !== 8) continue;
        const src = gemvRows(rows, unroll, sub);
        const key = `probe-gemv-${rows}-${unroll}-${sub}`;
        const run = (i: number) =>
          backend.dispatch({
            key,
            source: src,
            buffers: [x, ws[i % copies], y],
            uniform: new Uint32Array([N, K / 4, 0, 0]).buffer,
            workgroups: [N / rows, 1, 1],
            label: 'gemv',
          });
        backend.device.queue.writeBuffer(y, 0, new Float32Array(N).fill(Number.NaN));
        run(0);
        await check(key);
        const { ms, spread } = await timeKernel(backend, run);
        line(`gemv rows${rows} u${unroll}${sub ? ' subgroupAdd' : ''}`, ms, spread);
      }
    }
  }
  const shape = { M: 1, N, K, batch: 1, transA: false, transB: true };
  const cfg = selectGemm(shape, gemmDevice(backend));
  const { ms, spread } = await timeKernel(backend, (i) =>
    recordGemm(backend, shape, { a: x, b: ws[i % copies], c: y, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, dtype: 'float32' }, cfg),
  );
  line(`library ${cfg.name}`, ms, spread);
  await backend.sync();
  backend.context.device.destroy();
}

await main();
