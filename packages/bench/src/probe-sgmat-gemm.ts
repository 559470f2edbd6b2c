/**
 * Main-loop forms of an f16 GEMM on subgroup matrices, interior tiles only (M, N, K whole tiles),
 * to choose the one gemm-sgmat.wgsl adopts: each form is checked against float64 on a small
 * product, then timed on a large one in the x·Wᵀ (NT) and dy·W (NN) layouts. Forms:
 *   direct   each subgroup loads its matrices from storage every K step (gemm-sgmat's old form)
 *   direct2  the same with two sets of operands, the next step's loaded before this step's products
 *   staged   the workgroup's tiles go storage → registers (16-byte loads, the next tile's issued
 *            before this tile's products) → workgroup memory (rows padded by PAD halves); s1: one
 *            buffer, two barriers a tile (gemm-sgmat's PREFETCH); s2: two buffers, one barrier a
 *            tile, the buffer a variable; s3: the same with the loop unrolled over the two;
 *            mcopy: the tiles copied as f16 result matrices instead (storage → registers →
 *            workgroup memory by subgroupMatrixLoad / subgroupMatrixStore)
 * Results are f32, stored straight from the result matrices. Run it twice, with and without
 * `METAL_LORA_DAWN_TOGGLES=disable_robustness`, to see what Dawn's bounds clamps cost. Not part of
 * the published benchmark.
 *
 *   node probe-sgmat-gemm.mjs [--shape 2048x4096x4096] [--only NAME,...]
 */
import { parseArgs } from 'node:util';
import { createWebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { randomValues } from '@metal-lora/tensor/testing';
import { timeKernel, useClockWarmer } from './timing';

type Layout = 'NT' | 'NN';
interface Form {
  mode: 'direct' | 'direct2' | 'staged';
  /** Subgroups down and across the workgroup. */
  wgm: number;
  wgn: number;
  /** Result tiles per subgroup down and across. */
  rm: number;
  rn: number;
  /** Staged only: K per workgroup tile, row padding (halves), buffers. */
  bk: number;
  pad: number;
  /** 1: one buffer, two barriers a tile; 2: two buffers chosen by a variable; 3: two buffers, the loop unrolled over them. */
  stages: 1 | 2 | 3;
  /** Staged only: tiles copied by 16-byte loads and scalar stores, or (`matrix`) as f16 result matrices loaded from storage and stored to workgroup memory. */
  copy?: 'vec' | 'matrix';
}

const name = (f: Form) =>
  `${f.mode} ${f.wgm}x${f.wgn}sg ${f.rm}x${f.rn}t${f.mode === 'staged' ? ` bk${f.bk} pad${f.pad} s${f.stages}${f.copy === 'matrix' ? ' mcopy' : ''}` : ''} (${f.wgm * f.rm * 16}x${f.wgn * f.rn * 16})`;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function shader(f: Form, layout: Layout, s: number, sg: number): string {
  const { wgm, wgn, rm, rn, bk, pad } = f;
  const threads = wgm * wgn * sg;
  const BM = wgm * rm * s;
  const BN = wgn * rn * s;
  const L = `subgroup_matrix_left<f16, ${s}, ${s}>`;
  const R = `subgroup_matrix_right<f16, ${s}, ${s}>`;
  const acc = range(rm * rn).map((e) => `acc_${Math.floor(e / rn)}_${e % rn}`);
  const mma = (l: string, r: string) =>
    range(rm * rn)
      .map((e) => `    ${acc[e]} = subgroupMatrixMultiplyAccumulate(${l}${Math.floor(e / rn)}, ${r}${e % rn}, ${acc[e]});`)
      .join('\n');
  const head = `enable f16;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
struct P { M: u32, N: u32, K: u32, _p: u32 }
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<storage, read> a8: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> b8: array<vec4<u32>>;
@group(0) @binding(5) var<uniform> p: P;
`;
  const store = range(rm * rn)
    .map((e) => {
      const [i, j] = [Math.floor(e / rn), e % rn];
      return `  subgroupMatrixStore(&c, (row0 + (tm0 + ${i}u) * ${s}u) * p.N + col0 + (tn0 + ${j}u) * ${s}u, ${acc[e]}, false, p.N);`;
    })
    .join('\n');
  const prologue = `@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sg: u32) {
  let row0 = wid.y * ${BM}u;
  let col0 = wid.x * ${BN}u;
  let tm0 = (sg / ${wgn}u) * ${rm}u;
  let tn0 = (sg % ${wgn}u) * ${rn}u;
${acc.map((v) => `  var ${v} = subgroup_matrix_result<f32, ${s}, ${s}>();`).join('\n')}
`;
  if (f.mode !== 'staged') {
    // Matrices straight from storage at K offset `k`, into operand set `set`.
    const load = (set: string, k: string) =>
      [
        ...range(rm).map((i) => `    l${set}${i} = subgroupMatrixLoad<${L}>(&a, (row0 + (tm0 + ${i}u) * ${s}u) * p.K + ${k}, false, p.K);`),
        ...range(rn).map((j) =>
          layout === 'NT'
            ? `    r${set}${j} = subgroupMatrixLoad<${R}>(&b, (col0 + (tn0 + ${j}u) * ${s}u) * p.K + ${k}, true, p.K);`
            : `    r${set}${j} = subgroupMatrixLoad<${R}>(&b, (${k}) * p.N + col0 + (tn0 + ${j}u) * ${s}u, false, p.N);`,
        ),
      ].join('\n');
    const decl = (set: string) => [...range(rm).map((i) => `  var l${set}${i}: ${L};`), ...range(rn).map((j) => `  var r${set}${j}: ${R};`)].join('\n');
    const body =
      f.mode === 'direct'
        ? `${decl('a')}
  for (var k = 0u; k < p.K; k += ${s}u) {
${load('a', 'k')}
${mma('la', 'ra')}
  }`
        : `${decl('a')}
${decl('b')}
${load('a', '0u')}
  for (var k = 0u; k < p.K; k += ${2 * s}u) {
${load('b', `k + ${s}u`)}
${mma('la', 'ra')}
    if (k + ${2 * s}u < p.K) {
${load('a', `k + ${2 * s}u`)}
    }
${mma('lb', 'rb')}
  }`;
    return `${head}${prologue}${body}\n${store}\n}\n`;
  }

  // Staged. A's tile [BM][BK + PAD]; B's [BN][BK + PAD] (NT) or [BK][BN + PAD] (NN), per buffer.
  const AP = bk + pad;
  const BP = layout === 'NT' ? bk + pad : BN + pad;
  const aTile = BM * AP;
  const bTile = layout === 'NT' ? BN * AP : bk * BP;
  const aLoads = (BM * bk) / 8 / threads;
  const bLoads = (BN * bk) / 8 / threads;
  if (!Number.isInteger(aLoads) || !Number.isInteger(bLoads)) throw new Error(`${name(f)}: tiles do not split into 16-byte loads per thread`);
  const halves = (v: string, dst: string, at: string) =>
    ['x', 'y', 'z', 'w']
      .map((w, q) => `    { let h = bitcast<vec2<f16>>(${v}.${w}); ${dst}[${at} + ${2 * q}u] = h.x; ${dst}[${at} + ${2 * q + 1}u] = h.y; }`)
      .join('\n');
  // Load i of A: 16 bytes of row `e / (BK/8)` at column (e % (BK/8))·8.
  const aRow = (i: number) => `(t + ${i * threads}u) / ${bk / 8}u`;
  const aCol = (i: number) => `((t + ${i * threads}u) % ${bk / 8}u)`;
  const bMajor = layout === 'NT' ? bk / 8 : BN / 8;
  const bRow = (i: number) => `(t + ${i * threads}u) / ${bMajor}u`;
  const bCol = (i: number) => `((t + ${i * threads}u) % ${bMajor}u)`;
  const nsg = wgm * wgn;
  const M16 = `subgroup_matrix_result<f16, ${s}, ${s}>`;
  const aMats = ((BM / s) * (bk / s)) / nsg;
  const bMats = ((BN / s) * (bk / s)) / nsg;
  if (f.copy === 'matrix' && (!Number.isInteger(aMats) || !Number.isInteger(bMats)))
    throw new Error(`${name(f)}: tiles do not split into matrices per subgroup`);
  const mi = (i: number) => `(sg + ${i * nsg}u)`;
  const kMats = bk / s;
  const nMats = BN / s;
  const matFetch = (k0: string) =>
    [
      ...range(aMats).map(
        (i) => `    ma${i} = subgroupMatrixLoad<${M16}>(&a, (row0 + ${mi(i)} / ${kMats}u * ${s}u) * p.K + ${k0} + ${mi(i)} % ${kMats}u * ${s}u, false, p.K);`,
      ),
      ...range(bMats).map((i) =>
        layout === 'NT'
          ? `    mb${i} = subgroupMatrixLoad<${M16}>(&b, (col0 + ${mi(i)} / ${kMats}u * ${s}u) * p.K + ${k0} + ${mi(i)} % ${kMats}u * ${s}u, false, p.K);`
          : `    mb${i} = subgroupMatrixLoad<${M16}>(&b, (${k0} + ${mi(i)} / ${nMats}u * ${s}u) * p.N + col0 + ${mi(i)} % ${nMats}u * ${s}u, false, p.N);`,
      ),
    ].join('\n');
  const matPut = (buf: string) =>
    [
      ...range(aMats).map(
        (i) => `    subgroupMatrixStore(&As, ${buf} * ${aTile}u + ${mi(i)} / ${kMats}u * ${s * AP}u + ${mi(i)} % ${kMats}u * ${s}u, ma${i}, false, ${AP}u);`,
      ),
      ...range(bMats).map((i) =>
        layout === 'NT'
          ? `    subgroupMatrixStore(&Bs, ${buf} * ${bTile}u + ${mi(i)} / ${kMats}u * ${s * BP}u + ${mi(i)} % ${kMats}u * ${s}u, mb${i}, false, ${BP}u);`
          : `    subgroupMatrixStore(&Bs, ${buf} * ${bTile}u + ${mi(i)} / ${nMats}u * ${s * BP}u + ${mi(i)} % ${nMats}u * ${s}u, mb${i}, false, ${BP}u);`,
      ),
    ].join('\n');
  const vecFetch = (k0: string) =>
    [
      ...range(aLoads).map((i) => `    ga${i} = a8[(row0 + ${aRow(i)}) * kv + ${k0} / 8u + ${aCol(i)}];`),
      ...range(bLoads).map((i) =>
        layout === 'NT'
          ? `    gb${i} = b8[(col0 + ${bRow(i)}) * kv + ${k0} / 8u + ${bCol(i)}];`
          : `    gb${i} = b8[(${k0} + ${bRow(i)}) * nv + col0 / 8u + ${bCol(i)}];`,
      ),
    ].join('\n');
  const vecPut = (buf: string) =>
    [
      ...range(aLoads).map((i) => halves(`ga${i}`, 'As', `${buf} * ${aTile}u + (${aRow(i)}) * ${AP}u + ${aCol(i)} * 8u`)),
      ...range(bLoads).map((i) => halves(`gb${i}`, 'Bs', `${buf} * ${bTile}u + (${bRow(i)}) * ${BP}u + ${bCol(i)} * 8u`)),
    ].join('\n');
  const fetch = f.copy === 'matrix' ? matFetch : vecFetch;
  const put = f.copy === 'matrix' ? matPut : vecPut;
  const compute = (buf: string) =>
    range(bk / s)
      .map((q) =>
        [
          ...range(rm).map((i) => `    l${i} = subgroupMatrixLoad<${L}>(&As, ${buf} * ${aTile}u + (tm0 + ${i}u) * ${s * AP}u + ${q * s}u, false, ${AP}u);`),
          ...range(rn).map((j) =>
            layout === 'NT'
              ? `    r${j} = subgroupMatrixLoad<${R}>(&Bs, ${buf} * ${bTile}u + (tn0 + ${j}u) * ${s * BP}u + ${q * s}u, true, ${BP}u);`
              : `    r${j} = subgroupMatrixLoad<${R}>(&Bs, ${buf} * ${bTile}u + ${q * s * BP}u + (tn0 + ${j}u) * ${s}u, false, ${BP}u);`,
          ),
          mma('l', 'r'),
        ].join('\n'),
      )
      .join('\n');
  const stages = f.stages;
  const loop =
    stages === 3
      ? `${fetch('0u')}
${put('0u')}
  workgroupBarrier();
  for (var k0 = 0u; k0 < p.K; k0 += ${2 * bk}u) {
    let more = k0 + ${bk}u < p.K;
    if (more) {
${fetch(`(k0 + ${bk}u)`)}
    }
${compute('0u')}
    if (more) {
${put('1u')}
    }
    workgroupBarrier();
    if (more) {
      if (k0 + ${2 * bk}u < p.K) {
${fetch(`(k0 + ${2 * bk}u)`)}
      }
${compute('1u')}
      if (k0 + ${2 * bk}u < p.K) {
${put('0u')}
      }
    }
    workgroupBarrier();
  }`
      : stages === 2
        ? `${fetch('0u')}
${put('0u')}
  workgroupBarrier();
  var buf = 0u;
  for (var k0 = 0u; k0 < p.K; k0 += ${bk}u) {
    let more = k0 + ${bk}u < p.K;
    if (more) {
${fetch(`(k0 + ${bk}u)`)}
    }
${compute('buf')}
    if (more) {
${put('(1u - buf)')}
    }
    workgroupBarrier();
    buf = 1u - buf;
  }`
        : `${fetch('0u')}
  for (var k0 = 0u; k0 < p.K; k0 += ${bk}u) {
${put('0u')}
    workgroupBarrier();
    if (k0 + ${bk}u < p.K) {
${fetch(`(k0 + ${bk}u)`)}
    }
${compute('0u')}
    workgroupBarrier();
  }`;
  return `${head}var<workgroup> As: array<f16, ${Math.min(stages, 2) * aTile}>;
var<workgroup> Bs: array<f16, ${Math.min(stages, 2) * bTile}>;
${prologue}  let kv = p.K / 8u;
  let nv = p.N / 8u;
${
  f.copy === 'matrix'
    ? [...range(aMats).map((i) => `  var ma${i}: ${M16};`), ...range(bMats).map((i) => `  var mb${i}: ${M16};`)].join('\n')
    : [...range(aLoads).map((i) => `  var ga${i}: vec4<u32>;`), ...range(bLoads).map((i) => `  var gb${i}: vec4<u32>;`)].join('\n')
}
${range(rm)
  .map((i) => `  var l${i}: ${L};`)
  .join('\n')}
${range(rn)
  .map((j) => `  var r${j}: ${R};`)
  .join('\n')}
${loop}
${store}
}
`;
}

function sharedBytes(f: Form, layout: Layout, s: number): number {
  if (f.mode !== 'staged') return 0;
  const BM = f.wgm * f.rm * s;
  const BN = f.wgn * f.rn * s;
  return 2 * Math.min(f.stages, 2) * (BM * (f.bk + f.pad) + (layout === 'NT' ? BN * (f.bk + f.pad) : f.bk * (BN + f.pad)));
}

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { shape: { type: 'string', default: '2048x4096x4096' }, only: { type: 'string' }, print: { type: 'string' } },
  strict: true,
});
const [M, N, K] = values.shape.split('x').map(Number);
if (values.print) {
  // The WGSL of one form in a layout, e.g. --print 'NT staged 2x2sg 4x4t bk32 pad8 s1 mcopy'.
  const [layout, ...rest] = values.print.split(' ');
  const [mode, grid, tiles, bk, pad, st, copy] = rest;
  const [wgm, wgn] = grid.split('x').map((v) => Number.parseInt(v, 10));
  const [rm, rn] = tiles.split('x').map((v) => Number.parseInt(v, 10));
  const form: Form = {
    mode: mode as Form['mode'],
    wgm,
    wgn,
    rm,
    rn,
    bk: Number(bk?.slice(2) ?? 32),
    pad: Number(pad?.slice(3) ?? 8),
    stages: st === 's1' ? 1 : st === 's3' ? 3 : 2,
    copy: copy === 'mcopy' ? 'matrix' : 'vec',
  };
  console.log(shader(form, layout as Layout, 16, 32));
  process.exit(0);
}
const backend = await createWebGPUBackend({ f16OnNvidia: true, preciseTimestamps: true });
const report = backend.context.report;
const sg = report.subgroupMinSize ?? 32;
const cfg = report.subgroupMatrixConfigs.find((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
console.log(
  `${report.vendor} ${report.description}; subgroups ${report.subgroupMinSize}..${report.subgroupMaxSize}; workgroup storage ${report.limits.maxComputeWorkgroupStorageSize}`,
);
console.log(`dawn toggles from METAL_LORA_DAWN_TOGGLES: ${process.env.METAL_LORA_DAWN_TOGGLES ?? '(none)'}`);
if (!cfg || report.subgroupMinSize !== report.subgroupMaxSize) {
  console.log('no f16->f32 16x16x16 configuration with a fixed subgroup size here: nothing to probe');
  process.exit(0);
}
const s = 16;
const forms: Form[] = [];
const f = (mode: Form['mode'], wgm: number, wgn: number, rm: number, rn: number, bk = 32, pad = 8, stages: 1 | 2 | 3 = 2, copy: Form['copy'] = 'vec') =>
  forms.push({ mode, wgm, wgn, rm, rn, bk, pad, stages, copy });
// Measured on the H200 (2026-12-04), 2048×4096×4096 x·Wᵀ with Dawn's bounds clamps: direct 56 TFLOP/s
// (direct2 the same), staged s1 pad8 4×4 tiles 156, s2 52 (its buffer index is a variable), pad0 46.
f('direct', 2, 2, 4, 4);
f('direct2', 2, 2, 4, 4);
f('staged', 2, 2, 4, 4, 32, 8, 1);
f('staged', 2, 2, 4, 4, 32, 8, 2);
f('staged', 2, 2, 4, 4, 32, 8, 3);
f('staged', 2, 2, 4, 4, 64, 8, 3);
f('staged', 2, 4, 4, 2, 32, 8, 1);
f('staged', 2, 4, 4, 2, 32, 8, 3);
f('staged', 4, 2, 4, 4, 32, 8, 1);
f('staged', 2, 2, 4, 4, 64, 8, 1);
f('staged', 2, 2, 2, 4, 32, 8, 3);
// Tiles copied as f16 result matrices (one bounds check a matrix instead of one a half).
f('staged', 2, 2, 4, 4, 32, 8, 1, 'matrix');
f('staged', 2, 2, 4, 4, 64, 8, 1, 'matrix');
f('staged', 2, 2, 4, 4, 32, 8, 3, 'matrix');
f('staged', 4, 2, 4, 4, 32, 8, 1, 'matrix');
f('staged', 2, 4, 4, 2, 32, 8, 1, 'matrix');
const only = values.only?.split(',');
const chosen = only ? forms.filter((g) => only.some((o) => name(g).startsWith(o))) : forms;

const halves = (n: number, seed: number) => Uint16Array.from(randomValues(n, seed), (v) => T.float32ToFloat16Bits(v));
const upload = (bits: Uint16Array) => (backend.upload(bits, 'float16') as { buffer: GPUBuffer }).buffer;

/** Runs form `g` once on [m, n, k] products of `a`, `b` into a fresh f32 buffer; returns the buffer. */
function dispatcher(g: Form, layout: Layout, m: number, n: number, k: number, a: GPUBuffer, b: GPUBuffer, c: GPUBuffer) {
  const source = shader(g, layout, s, sg);
  const BM = g.wgm * g.rm * s;
  const BN = g.wgn * g.rn * s;
  return () =>
    backend.dispatch({
      key: `probe-sgmat-gemm ${name(g)} ${layout}`,
      source,
      buffers: [a, b, c, a, b],
      uniform: new Uint32Array([m, n, k, 0]).buffer,
      workgroups: [n / BN, m / BM, 1],
      label: 'probe sgmat gemm',
    });
}

// The check: a product of 2 × 2 workgroup tiles, K = 3 tiles of the largest BK, against float64.
await useClockWarmer(backend);
const big = { a: upload(halves(M * K, 1)), b: upload(halves(N * K, 2)), c: backend.acquire(M * N * 4, 'probe c') };
for (const layout of ['NT', 'NN'] as Layout[]) {
  for (const g of chosen) {
    const label = `${layout} ${name(g).padEnd(44)}`;
    if (sharedBytes(g, layout, s) > (report.limits.maxComputeWorkgroupStorageSize ?? 16384)) {
      console.log(`${label} skipped: ${sharedBytes(g, layout, s)} bytes of workgroup memory`);
      continue;
    }
    const BM = g.wgm * g.rm * s;
    const BN = g.wgn * g.rn * s;
    const [m, n, k] = [2 * BM, 2 * BN, 192];
    const [av, bv] = [halves(m * k, 3), halves(n * k, 4)];
    const c = backend.acquire(m * n * 4, 'probe check');
    backend.device.queue.writeBuffer(c, 0, new Float32Array(m * n).fill(Number.NaN));
    try {
      backend.device.pushErrorScope('validation');
      dispatcher(g, layout, m, n, k, upload(av), upload(bv), c)();
      backend.flush();
      const err = await backend.device.popErrorScope();
      if (err) throw new Error(err.message.split('\n').slice(0, 4).join(' | '));
      const got = (await backend.read({ buffer: c, bytes: m * n * 4 }, 'float32', m * n)) as Float32Array;
      const h = (x: number) => T.float16BitsToFloat32(x);
      let worst = 0;
      let scale = 0;
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          let ref = 0;
          for (let q = 0; q < k; q++) ref += h(av[i * k + q]) * h(layout === 'NT' ? bv[j * k + q] : bv[q * n + j]);
          scale = Math.max(scale, Math.abs(ref));
          const e = Math.abs(got[i * n + j] - ref);
          worst = Number.isNaN(e) ? Number.POSITIVE_INFINITY : Math.max(worst, e);
        }
      const rel = worst / scale;
      if (!(rel < 1e-3)) throw new Error(`wrong: max |error| / max |expected| = ${rel.toExponential(2)}`);
      const run = dispatcher(g, layout, M, N, K, big.a, big.b, big.c);
      const { ms, spread } = await timeKernel(backend, run);
      const tflops = (2 * M * N * K) / (ms * 1e-3) / 1e12;
      console.log(`${label} ok (${rel.toExponential(1)})  ${ms.toFixed(3)} ms ±${spread.toFixed(3)}  ${tflops.toFixed(1)} TFLOP/s`);
    } catch (error) {
      console.log(`${label} FAILED ${(error as Error).message.split('\n').slice(0, 3).join(' | ')}`);
    } finally {
      backend.release(c);
    }
  }
}
process.exit(0);
