/**
 * GEMM benchmark of the WebGPU backend: the big product, decode shapes and the skinny LoRA
 * products, each with the selector's variant and forced alternatives, timed with GPU timestamps.
 * Inputs are random (never zeros), rotated among several copies when they could sit in cache,
 * every variant's output is checked against a float64 CPU reference on a sample of elements
 * first, and each time is the median of repeats.
 *
 *   node gemm-bench.mjs [--quick] [--no-big] [--explore] [--explore-gemv] [--explore-lanes] [--explore-narrow] [--explore-raster] [--explore-xs] [--explore-dyb] [--explore-inflight [--prefetch-only]] [--explore-chunk] [--explore-fma] [--ab-decode] [--hot] [--no-warm] [--json out.json]
 *   --explore adds the vec4 tile alternatives for the rank products, --explore-gemv the gemv
 *   lane/row/unroll/split settings for decode and rank ≤ 16, --explore-lanes the gemv settings
 *   for 8..16 rows alone, --explore-narrow (with --explore) the rank-sized vec4 tiles, --hot keeps
 *   the inputs in L2, --explore-raster the big products' tile raster orders, --explore-xs decode M = 8, 16 on gemv-rows
 *   with x staged in workgroup memory, --explore-dyb the decode backward's U = dy·B on the
 *   portable gemv over lanes per column and K splits, --explore-inflight decode M = 16 over loads
 *   in flight and accumulators per thread, with the loads written first or not, and with the next
 *   stage of x prefetched into registers (M = 8 with and without it; M = 1, 4: the selector's
 *   choice both ways; --prefetch-only: M = 8 and the prefetch rows alone), --explore-chunk
 *   decode M = 8, 16 with each split's whole chunk of x staged at once, --explore-fma decode with
 *   the products as fma chains and x staged by k (from the form before these were chosen),
 *   --ab-decode the selector's staged decode against that form, alternating.
 */
import { writeFileSync } from 'node:fs';
import { createWebGPUBackend, type GemmDevice, type GemmShape, gemmDevice, selectGemm, type WebGPUBackend } from '@metal-lora/metal-kernels';
import {
  type GemmConfig,
  type GemvRowsConfig,
  recordGemm,
  withSplits,
  TILED_VARIANTS,
  VEC4_64x128,
  VEC4_128,
  VEC4_128x64,
  type Vec4Config,
} from '@metal-lora/metal-kernels/internal';
import { randomValues } from '@metal-lora/tensor/testing';
import { clockWarmerLine, median, settleAfterUploads, timeKernel } from './timing';
import copySource from './wgsl/copy-vec4.wgsl';

interface Case {
  group: 'big' | 'decode' | 'skinny';
  label: string;
  shape: GemmShape;
  configs: (GemmConfig | 'auto')[];
}

export interface GemmResult {
  group: string;
  label: string;
  config: string;
  M: number;
  N: number;
  K: number;
  ms: number;
  spreadMs: number;
  /** Fastest of the trials. */
  minMs: number;
  /** Host time per run spent recording it (when ≥ ms, the GPU waited on the host). */
  hostMs: number;
  tflops: number;
  gbps: number;
  maxRelError: number;
}

/** A staged gemv-rows config for 16 rows of x, named `xs l… r… u… s… k…` and the suffix (the explore runs' names). */
function stagedDecode16(
  lanes: number,
  rows: number,
  unroll: number,
  stage: number,
  splits: number,
  suffix: string,
  forms: Partial<GemvRowsConfig>,
): GemvRowsConfig {
  return {
    kind: 'gemv-rows',
    name: `xs l${lanes} r${rows} u${unroll} s${stage} k${splits}${suffix ? ` ${suffix}` : ''}`,
    lanes,
    rows,
    mr: 16,
    unroll,
    splits,
    stage,
    ...forms,
  };
}

function cases(quick: boolean, device: GemmDevice): Case[] {
  const s = (M: number, N: number, K: number, transA: boolean, transB: boolean): GemmShape => ({ M, N, K, batch: 1, transA, transB });
  if (quick) {
    return [
      { group: 'big', label: 'x·Wᵀ 256x512x512', shape: s(256, 512, 512, false, true), configs: ['auto', TILED_VARIANTS.tile64x64] },
      { group: 'decode', label: 'decode M=1 512', shape: s(1, 512, 512, false, true), configs: ['auto'] },
      { group: 'skinny', label: 'x·Aᵀ r=8', shape: s(256, 8, 512, false, true), configs: ['auto'] },
    ];
  }
  const list: Case[] = [
    {
      group: 'big',
      label: 'x·Wᵀ 2048x4096x4096',
      shape: s(2048, 4096, 4096, false, true),
      configs: ['auto', TILED_VARIANTS.tile128x128, TILED_VARIANTS.tile128x64],
    },
    { group: 'big', label: 'x·W 2048x4096x4096 (B not transposed)', shape: s(2048, 4096, 4096, false, false), configs: ['auto', TILED_VARIANTS.tile128x64] },
    { group: 'big', label: 'dyᵀ·x 4096x4096x2048 (A transposed)', shape: s(4096, 4096, 2048, true, false), configs: ['auto'] },
  ];
  const explore = process.argv.includes('--explore');
  // Alternatives to the selector's gemv choice: same kernel, other lane/row/unroll/split settings.
  const variants = (shape: GemmShape, changes: Record<string, number>[]): GemmConfig[] => {
    const auto = selectGemm(shape, device);
    if (!(process.argv.includes('--explore-gemv') || process.argv.includes('--explore-lanes')) || (auto.kind !== 'gemv-rows' && auto.kind !== 'gemv-cols'))
      return [];
    return changes.map(
      (c) =>
        ({
          ...auto,
          ...c,
          name: `${auto.kind} ${Object.entries({ ...auto, ...c })
            .filter(([k]) => !['kind', 'name'].includes(k))
            .map(([k, v]) => `${k[0]}${v}`)
            .join(' ')}`,
        }) as GemmConfig,
    );
  };
  // Fewer lanes per row, more rows per lane group, one load in flight (--explore-lanes alone).
  const fewLanes: Record<string, number>[] = [
    ...[2, 4, 8].map((splits) => ({ lanes: 16, rows: 2, unroll: 1, splits })),
    { lanes: 16, rows: 4, unroll: 1, splits: 4 },
    { lanes: 8, rows: 2, unroll: 1, splits: 4 },
    { lanes: 8, rows: 2, unroll: 1, splits: 8 },
  ];
  const rowsAlternatives: Record<string, number>[] = [
    { lanes: 64 },
    { rows: 1 },
    { rows: 2 },
    { rows: 4 },
    { unroll: 1 },
    { unroll: 4 },
    { lanes: 16, rows: 2 },
  ];
  const colsAlternatives: Record<string, number>[] = [{ colLanes: 32 }, { colLanes: 128 }, { unroll: 2 }, { unroll: 8 }];
  for (const M of [1, 4, 16]) {
    const shape = s(M, 4096, 4096, false, true);
    const decodeSplits: Record<string, number>[] = [
      { splits: 2 },
      { splits: 4 },
      { splits: 8 },
      { lanes: 8 },
      { lanes: 8, splits: 4 },
      { lanes: 16, splits: 4 },
      { rows: 2, splits: 4 },
      { rows: 4, splits: 4 },
      { lanes: 8, rows: 4, splits: 4 },
    ];
    list.push({ group: 'decode', label: `decode x·Wᵀ M=${M}`, shape, configs: ['auto', ...variants(shape, [...rowsAlternatives, ...decodeSplits])] });
  }
  // The decode LoRA down-projection T = x·Aᵀ (N = r = 16): few rows on both sides.
  for (const M of process.argv.includes('--explore-gemv') ? [1, 16] : []) {
    const shape = s(M, 16, 4096, false, true);
    const rows = (lanes: number, splits: number): GemmConfig => ({
      kind: 'gemv-rows',
      name: `gemv-rows l${lanes} m${M} s${splits}`,
      lanes,
      rows: 1,
      mr: M,
      unroll: 2,
      splits,
    });
    list.push({
      group: 'decode',
      label: `decode x·Aᵀ M=${M} r=16`,
      shape,
      configs: ['auto', rows(256, 1), rows(128, 1), rows(64, 1), rows(256, 2), rows(256, 4)],
    });
  }
  const halfSplits = (shape: GemmShape): Record<string, number>[] => [
    { splits: Math.max(1, Math.floor((selectGemm(shape, device) as { splits: number }).splits / 2)) },
    { splits: 2 * (selectGemm(shape, device) as { splits: number }).splits },
  ];
  // The vec4 tiles with one half-size dimension, at several K splits (--explore).
  // 64×64: the rank side in one tile up to r = 64 with twice the row (or column) tiles to split over.
  const VEC4_64x64: Vec4Config = { kind: 'vec4', name: 'vec4-64x64', splits: 1, bm: 64, bn: 64 };
  const tiles = (base: Vec4Config, splits: number[]): GemmConfig[] =>
    explore ? splits.map((n) => ({ ...base, name: `${base.name}+splitK${n}`, splits: n })) : [];
  for (const r of [8, 16, 32, 64]) {
    const xa = s(2048, r, 4096, false, true);
    const dyb = s(2048, r, 4096, false, false);
    const ux = s(r, 4096, 2048, true, false);
    const dyt = s(4096, r, 2048, true, false);
    list.push({
      group: 'skinny',
      label: `x·Aᵀ r=${r} (N=r)`,
      shape: xa,
      configs: [
        'auto',
        ...variants(xa, [...rowsAlternatives, ...halfSplits(xa)]),
        ...tiles(VEC4_128x64, [8, 16, 32]),
        ...tiles(VEC4_128, [16]),
        ...tiles(VEC4_64x64, [8, 16]),
      ],
    });
    if (explore)
      list.push({
        group: 'skinny',
        label: `dy·B r=${r} (B [out, r] as stored)`,
        shape: dyb,
        configs: ['auto', ...tiles(VEC4_128x64, [16, 32]), ...tiles(VEC4_64x64, [8, 16])],
      });
    list.push({
      group: 'skinny',
      label: `Uᵀ·x r=${r} (M=r)`,
      shape: ux,
      configs: ['auto', ...variants(ux, [...colsAlternatives, ...halfSplits(ux)]), ...tiles(VEC4_64x128, [4, 8, 16]), ...tiles(VEC4_64x64, [4, 8])],
    });
    list.push({
      group: 'skinny',
      label: `dyᵀ·T r=${r} (N=r)`,
      shape: dyt,
      configs: ['auto', ...variants(dyt, colsAlternatives), ...tiles(VEC4_128x64, [4, 8, 16]), ...tiles(VEC4_64x64, [4, 8])],
    });
    list.push({ group: 'skinny', label: `T·Bᵀ r=${r} (K=r)`, shape: s(2048, 4096, r, false, true), configs: ['auto'] });
  }
  for (const r of explore ? [128, 256] : []) {
    const xa = s(2048, r, 4096, false, true);
    const ux = s(r, 4096, 2048, true, false);
    list.push({ group: 'skinny', label: `x·Aᵀ r=${r} (N=r)`, shape: xa, configs: ['auto', ...tiles(VEC4_128, [4, 8, 16])] });
    list.push({ group: 'skinny', label: `Uᵀ·x r=${r} (M=r)`, shape: ux, configs: ['auto', ...tiles(VEC4_128, [2, 4, 8])] });
  }
  if (process.argv.includes('--explore-narrow')) {
    // 128-thread vec4 tiles sized to the rank: 128×32 / 32×128 and 128×64 / 64×128 with 8×8 per
    // thread, at the selector's split and its neighbours, for the rank products at r = 16..64.
    const tile = (bm: 32 | 64 | 128, bn: 32 | 64 | 128, splits: number): GemmConfig => {
      const wide = bn >= bm;
      return {
        kind: 'vec4',
        name: `vec4-${bm}x${bn} ${wide ? '16x8' : '8x16'}${splits > 1 ? `+splitK${splits}` : ''}`,
        splits,
        bm,
        bn,
        ...(wide ? { wgy: 8 as const } : { wgx: 8 as const }),
      };
    };
    const picked = list.filter((c) => c.group === 'big' || /^(x·Aᵀ|dy·B|Uᵀ·x|dyᵀ·T) r=(16|32|64) /.test(c.label));
    return picked
      .filter((c) => c.group !== 'big' || !process.argv.includes('--no-big'))
      .map((c) => {
        if (c.group === 'big') return { ...c, configs: ['auto'] };
        const rankRows = c.shape.M < c.shape.N;
        const r = rankRows ? c.shape.M : c.shape.N;
        const auto = selectGemm(c.shape, device) as { splits: number };
        const n = Math.max(2, auto.splits);
        const splits = [Math.max(1, n / 2), n, n * 2];
        const shapes: [32 | 64 | 128, 32 | 64 | 128][] = rankRows
          ? r <= 32
            ? [
                [32, 128],
                [64, 128],
              ]
            : [[64, 128]]
          : r <= 32
            ? [
                [128, 32],
                [128, 64],
              ]
            : [[128, 64]];
        return { ...c, configs: ['auto', ...shapes.flatMap(([bm, bn]) => splits.map((k) => tile(bm, bn, k)))] };
      });
  }
  if (process.argv.includes('--explore-lanes')) {
    // The selector's gemv-rows choice against the few-lane settings only, at decode M = 4, 16 and x·Aᵀ r = 8, 16.
    const picked = list.filter((c) => /^(decode x·Wᵀ M=(4|16)|x·Aᵀ r=(8|16|32|64) )/.test(c.label));
    // Ranks 32 and 64 on gemv-rows too: 32 rows of A per dispatch (32 or 64 accumulators per thread).
    const wideRanks = (r: number): GemmConfig[] =>
      [
        [16, 1, 8],
        [16, 1, 4],
        [16, 2, 8],
        [32, 1, 8],
      ].map(([lanes, rows, splits]) => ({
        kind: 'gemv-rows',
        name: `gemv-rows l${lanes} r${rows} m32 u1 s${splits}`,
        lanes,
        rows,
        mr: Math.min(32, r),
        unroll: 1,
        splits,
      }));
    return picked.map((c) => ({ ...c, configs: ['auto', ...(c.shape.N >= 32 ? wideRanks(c.shape.N) : variants(c.shape, fewLanes))] }));
  }
  if (process.argv.includes('--explore-raster')) {
    // The big products with the 128×128 tiles walked G tile rows down before one column across.
    const raster = (g: number): GemmConfig => ({ ...VEC4_128, name: `vec4-128x128/g${g}`, groupM: g });
    const rowMajor: GemmConfig = { ...VEC4_128, name: 'vec4-128x128 row-major', groupM: undefined };
    return list.filter((c) => c.group === 'big').map((c) => ({ ...c, configs: ['auto', rowMajor, ...[2, 4, 8, 16].map(raster), rowMajor] }));
  }
  if (process.argv.includes('--explore-inflight')) {
    // Loads of W in flight per thread (rows per lane group × loads in flight) against
    // accumulators (rows × rows of x) for decode M = 16 (x staged); the selector's first and last.
    // Staged 16-row configs, named `xs l… r… u… s… k…` and ` prefetch`.
    const forms = { plain: {}, prefetch: { prefetchX: true } };
    const xs = (lanes: number, rows: number, unroll: number, stage: number, splits: number, form: keyof typeof forms = 'plain'): GemmConfig =>
      stagedDecode16(lanes, rows, unroll, stage, splits, form === 'plain' ? '' : form, forms[form]);
    const grid: GemmConfig[] = [];
    grid.push(
      xs(8, 4, 1, 32, 8),
      xs(8, 4, 2, 32, 8),
      xs(8, 2, 2, 32, 4),
      xs(8, 2, 4, 32, 4),
      xs(8, 2, 4, 32, 8),
      xs(8, 1, 4, 32, 2),
      xs(8, 1, 8, 32, 2),
      xs(8, 1, 8, 32, 4),
    );
    // The next stage of x loaded into registers while the current one streams (prefetchX), at the
    // chosen setting and its neighbours in stage length and K splits, each twice.
    const pre = (unroll: number, stage: number, splits: number) => xs(8, 4, unroll, stage, splits, 'prefetch');
    const prefetched = [pre(1, 32, 8), pre(1, 16, 8), pre(1, 24, 8), pre(1, 40, 8), pre(1, 48, 8), pre(1, 64, 8), pre(2, 32, 8), pre(1, 32, 6), pre(1, 32, 16)];
    const m16 = {
      group: 'decode' as const,
      label: 'decode x·Wᵀ M=16',
      shape: s(16, 4096, 4096, false, true),
      configs: ['auto', ...grid, 'auto', ...prefetched, 'auto', ...prefetched, 'auto'] as (GemmConfig | 'auto')[],
    };
    // Eight rows: the selector's staged pass with and without the prefetch, twice.
    const shape8 = s(8, 4096, 4096, false, true);
    const auto8 = selectGemm(shape8, { maxWorkgroupStorage: 49152, maxInvocations: 1024 }) as GemvRowsConfig;
    const withPrefetch8: GemmConfig = { ...auto8, name: `${auto8.name} prefetch`, prefetchX: true };
    const m8 = {
      group: 'decode' as const,
      label: 'decode x·Wᵀ M=8',
      shape: shape8,
      configs: ['auto', withPrefetch8, 'auto', withPrefetch8, 'auto'] as (GemmConfig | 'auto')[],
    };
    return process.argv.includes('--prefetch-only') ? [m8, { ...m16, configs: ['auto', ...prefetched, 'auto', ...prefetched, 'auto'] }] : [m8, m16];
  }
  if (process.argv.includes('--explore-flush')) {
    // Decode on gemv-rows with W loaded a step ahead across the stage barriers (prefetchW) and the
    // lane groups' partials summed by subgroup shuffles instead of workgroup memory
    // (subgroupFlush), alone and together, against the selector's choice; M = 16 also at other
    // K splits, loads in flight, stage lengths and lanes. Each list twice, the selector's first,
    // between and last (first timings run slow).
    const forms = { pw: { prefetchW: true }, sg: { subgroupFlush: true }, 'pw sg': { prefetchW: true, subgroupFlush: true } };
    const formsOf = (base: GemvRowsConfig) =>
      (Object.keys(forms) as (keyof typeof forms)[]).map((f): GemmConfig => ({ ...base, name: `${base.name} ${f}`, ...forms[f] }));
    const xs16 = (lanes: number, unroll: number, stage: number, splits: number, form: keyof typeof forms): GemmConfig =>
      stagedDecode16(lanes, 4, unroll, stage, splits, `p ${form}`, { prefetchX: true, ...forms[form] });
    return [1, 4, 8, 16].map((M) => {
      const shape = s(M, 4096, 4096, false, true);
      const auto = selectGemm(shape, { maxWorkgroupStorage: 49152, maxInvocations: 1024 }) as GemvRowsConfig;
      const list = formsOf(auto);
      if (M === 16)
        list.push(
          xs16(8, 2, 32, 8, 'pw sg'),
          xs16(8, 1, 32, 6, 'pw sg'),
          xs16(8, 1, 32, 12, 'pw sg'),
          xs16(8, 1, 32, 16, 'pw sg'),
          xs16(8, 1, 16, 8, 'pw sg'),
          xs16(8, 1, 64, 8, 'pw sg'),
          xs16(16, 1, 32, 8, 'pw sg'),
          xs16(16, 1, 32, 8, 'sg'),
        );
      return { group: 'decode' as const, label: `decode x·Wᵀ M=${M}`, shape, configs: ['auto', ...list, 'auto', ...list, 'auto'] as (GemmConfig | 'auto')[] };
    });
  }
  if (process.argv.includes('--explore-sg')) {
    // Decode M = 8, 16 with the partials summed by subgroup shuffles: the selector's choice against
    // the same config with the workgroup-memory reduction, and the shuffles at other K splits,
    // stage lengths, loads in flight, rows of W per lane group, lanes and the splits' dispatch
    // order (l8, r3 and split-fast added after the first two runs, when 8 rows took 16 lanes). Twice each.
    return [8, 16].map((M) => {
      const shape = s(M, 4096, 4096, false, true);
      const auto = selectGemm(shape, { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 }) as GemvRowsConfig;
      const base = withSplits(auto, 1);
      const at = (name: string, change: Partial<GemvRowsConfig>, splits = auto.splits): GemmConfig =>
        withSplits({ ...base, name: `${base.name} ${name}`, ...change }, splits);
      const list: GemmConfig[] = [
        at('smem', { subgroupFlush: false }),
        ...[4, 6, 12, 16].map((k) => at(`k${k}`, {}, k)),
        ...[16, 24, 48, 64].map((stage) => at(`s${stage}`, { stage })),
        at('u2', { unroll: 2 }),
        at('r2', { rows: 2 }),
        at('r2 k4', { rows: 2 }, 4),
        at('l8', { lanes: 8 }, M === 8 ? 8 : auto.splits),
        at('l16', { lanes: 16 }),
        at('l32', { lanes: 32 }),
        at('r3', { rows: 3 }),
      ];
      if (M === 8) list.push(at('x prefetch', { prefetchX: true }));
      return { group: 'decode' as const, label: `decode x·Wᵀ M=${M}`, shape, configs: ['auto', ...list, 'auto', ...list, 'auto'] as (GemmConfig | 'auto')[] };
    });
  }
  if (process.argv.includes('--explore-fma') || process.argv.includes('--ab-decode')) {
    // The selector's staged decode (M = 8, 16) in its form before x was staged by k with fma
    // chains (2026-11-26, before b2b1e51), named `…/xs…` as it was then.
    const before = (auto: GemvRowsConfig): GemvRowsConfig => ({ ...auto, name: auto.name.replace('/xk', '/xs'), stageByK: false, fmaChains: false });
    const decode = (M: number) => {
      const shape = s(M, 4096, 4096, false, true);
      return { shape, auto: selectGemm(shape, { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 }) as GemvRowsConfig };
    };
    if (process.argv.includes('--ab-decode')) {
      // The selector's choice against its form before, alternating four times each.
      return [8, 16].map((M) => {
        const { shape, auto } = decode(M);
        return {
          group: 'decode' as const,
          label: `decode x·Wᵀ M=${M}`,
          shape,
          configs: ['auto', before(auto), 'auto', before(auto), 'auto', before(auto), 'auto', before(auto)] as (GemmConfig | 'auto')[],
        };
      });
    }
    // Decode M = 1, 4, 8, 16 from the form before: the products written as fma chains (fma), x
    // staged by k (byk), and both (the selector's choice now); M = 8 and 16 also at other stage
    // lengths, prefetches, lanes, workgroup sizes and K splits with both (the first run of this
    // grid had stages of 16, two loads in flight and 16 or 6 splits in place of the M = 16 rows
    // after 'fma byk s64'). Twice each, the form before first, between and last.
    return [1, 4, 8, 16].map((M) => {
      const { shape, auto } = decode(M);
      const staged = (auto.stage ?? 0) > 0;
      const base = staged ? before(auto) : auto;
      const at = (name: string, change: Partial<GemvRowsConfig>, splits = base.splits): GemmConfig =>
        withSplits({ ...withSplits(base, 1), name: `${base.name} ${name}`, ...change }, splits);
      const both = { fmaChains: true, stageByK: true };
      const list: GemmConfig[] = [at('fma', { fmaChains: true }), ...(staged ? [at('byk', { stageByK: true }), at('fma byk', both)] : [])];
      if (M === 16)
        list.push(
          at('fma byk s64', { ...both, stage: 64 }),
          at('fma byk no-xp', { ...both, prefetchX: false }),
          at('fma byk l16 k16', { ...both, lanes: 16 }, 16),
          at('fma byk s64 k6', { ...both, stage: 64 }, 6),
          at('fma byk t128', { ...both, threads: 128 }),
          at('fma byk t128 k4', { ...both, threads: 128 }, 4),
          at('fma byk t64 k4', { ...both, threads: 64 }, 4),
          at('fma byk t64 k2', { ...both, threads: 64 }, 2),
        );
      if (M === 8)
        list.push(
          at('fma byk k16', both, 16),
          at('fma byk xp', { ...both, prefetchX: true }),
          at('fma byk t128 k4', { ...both, threads: 128 }, 4),
          at('fma byk t128 k8', { ...both, threads: 128 }, 8),
        );
      return { group: 'decode' as const, label: `decode x·Wᵀ M=${M}`, shape, configs: [base, ...list, base, ...list, base] };
    });
  }
  if (process.argv.includes('--explore-chunk')) {
    // Decode M = 8, 16 with a split's whole K chunk of x staged at once (one barrier pair, then
    // no barriers while W streams, so the warps run free of each other; no registers holding the
    // next stage), alone or with two loads in flight (u2), against the
    // selector's choice. Twice each, the selector's first, between and last.
    return [8, 16].map((M) => {
      const shape = s(M, 4096, 4096, false, true);
      const auto = selectGemm(shape, { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 }) as GemvRowsConfig;
      const at = (name: string, change: Partial<GemvRowsConfig>): GemmConfig => ({ ...auto, name: `${auto.name} ${name}`, prefetchX: false, ...change });
      // Whole chunks: K4 / splits vec4 of each row of x.
      const whole = (lanes: number, splits: number, extra: Partial<GemvRowsConfig>, tag: string) =>
        at(`l${lanes} k${splits} s${1024 / splits}${tag}`, { lanes, splits, stage: 1024 / splits, ...extra });
      const list: GemmConfig[] =
        M === 16
          ? [whole(8, 8, {}, ''), whole(8, 8, { unroll: 2 }, ' u2'), whole(8, 16, {}, ''), whole(16, 16, {}, '')]
          : [whole(16, 16, {}, ''), whole(8, 8, {}, ''), whole(16, 8, {}, '')];
      return { group: 'decode' as const, label: `decode x·Wᵀ M=${M}`, shape, configs: ['auto', ...list, 'auto', ...list, 'auto'] as (GemmConfig | 'auto')[] };
    });
  }
  if (process.argv.includes('--explore-settle')) {
    // Decode M = 16 timed over and over on one set of buffers: the selector's choice twelve times,
    // then after another config with a larger split-K workspace, four more (does the pair of
    // dispatches run faster only after other configs, as in the explore runs?).
    const shape = s(16, 4096, 4096, false, true);
    const auto = selectGemm(shape, { maxWorkgroupStorage: 49152, maxInvocations: 1024, subgroupSize: 32 }) as GemvRowsConfig;
    const wide = withSplits(auto, 16);
    return [
      { group: 'decode' as const, label: 'decode x·Wᵀ M=16', shape, configs: [...Array<'auto'>(12).fill('auto'), wide, ...Array<'auto'>(4).fill('auto')] },
    ];
  }
  if (process.argv.includes('--explore-dyb')) {
    // The decode LoRA backward's U = dy·B (B [out, r] as stored, N = r) on the portable gemv:
    // one lane per column (the form before lanes along K), then lanes along K at several K
    // splits; the selector's choice first and again last (first timings run slow).
    return [1, 16].flatMap((M) =>
      [16, 64].map((r) => {
        const gemv = (lanes: number, splits: number): GemmConfig => ({ kind: 'gemv', name: `gemv${M} l${lanes} k${splits}`, mr: M, lanes, splits });
        const wide = 256 / r;
        const grid = [gemv(1, 32), ...[16, 32, 64].map((k) => gemv(wide, k)), gemv(wide / 2, 32), gemv(wide / 2, 64), gemv(1, 32)];
        return { group: 'decode' as const, label: `decode dy·B M=${M} r=${r}`, shape: s(M, r, 4096, false, false), configs: ['auto', ...grid, 'auto'] };
      }),
    );
  }
  if (process.argv.includes('--explore-xs')) {
    // Decode (M = 8, 16) on gemv-rows with the rows of x staged in workgroup memory (section
    // XS), over lanes, W rows per lane group, loads in flight, stage length, K splits and the
    // dispatch order of the splits; the selector's choice and the plain gemv-rows first, and
    // again last (first timings run slow).
    const picked = [8, 16].map((M) => ({ group: 'decode' as const, label: `decode x·Wᵀ M=${M}`, shape: s(M, 4096, 4096, false, true) }));
    return picked.map((c) => {
      const mr = c.shape.M;
      const staged: GemmConfig[] = [];
      const grid: [number, number, number, number, number][] = []; // lanes, rows, unroll, stage, splits
      for (const rows of [2, 3, 4, 6, 8]) for (const stage of [16, 32, 64]) for (const splits of [4, 6, 8, 12, 16]) grid.push([8, rows, 1, stage, splits]);
      for (const splits of [4, 6, 8]) grid.push([8, 4, 2, 32, splits], [16, 4, 1, 16, splits], [16, 4, 1, 32, splits], [16, 8, 1, 32, splits]);
      for (const [lanes, rows, unroll, stage, splits] of grid)
        staged.push({ kind: 'gemv-rows', name: `xs l${lanes} r${rows} u${unroll} s${stage} k${splits}`, lanes, rows, mr, unroll, splits, stage });
      // The choices before x was staged: gemv-rows reading x from cache (16 lanes, 2 rows, K split
      // 4) and, for 9..16 rows, the 16-row vec4 tile with K split 16.
      const before: GemmConfig[] = [{ kind: 'gemv-rows', name: `gemv-rows${mr} (x from cache)+splitK4`, lanes: 16, rows: 2, mr, unroll: 1, splits: 4 }];
      return { ...c, configs: ['auto', ...before, ...staged, 'auto', ...before] };
    });
  }
  return process.argv.includes('--no-big') ? list.filter((c) => c.group !== 'big') : list;
}

function upload(backend: WebGPUBackend, values: Float64Array): GPUBuffer {
  return (backend.upload(Float32Array.from(values), 'float32') as { buffer: GPUBuffer }).buffer;
}

async function readBuffer(backend: WebGPUBackend, buffer: GPUBuffer, n: number): Promise<Float32Array> {
  return (await backend.read({ buffer, bytes: n * 4 }, 'float32', n)) as Float32Array;
}

/** Checks sampled outputs against a float64 dot product on the host, and that every output was written (finite). */
function sampleError(out: Float32Array, a: Float64Array, b: Float64Array, s: GemmShape): number {
  // The output was poisoned with NaN before the run: any element left unwritten (or not finite) fails the check outright.
  if (!out.every(Number.isFinite)) return Number.POSITIVE_INFINITY;
  let worst = 0;
  const samples = 64;
  for (let t = 0; t < samples; t++) {
    const m = (t * 7919) % s.M;
    const n = (t * 104729) % s.N;
    let ref = 0;
    let mag = 0;
    for (let k = 0; k < s.K; k++) {
      const av = s.transA ? a[k * s.M + m] : a[m * s.K + k];
      const bv = s.transB ? b[n * s.K + k] : b[k * s.N + n];
      ref += av * bv;
      mag += Math.abs(av * bv);
    }
    worst = Math.max(worst, Math.abs(out[m * s.N + n] - ref) / Math.max(mag, 1e-30));
  }
  return worst;
}

export async function runGemmBench(backend: WebGPUBackend, quick: boolean, log: (line: string) => void): Promise<GemmResult[]> {
  const results: GemmResult[] = [];
  for (const c of cases(quick, gemmDevice(backend))) {
    const { M, N, K } = c.shape;
    const aValues = randomValues(M * K, 11);
    const bValues = randomValues(K * N, 12);
    // Rotate inputs so repeats do not run from the 50 MB L2: enough copies to exceed ~150 MB.
    const bytesPerSet = (M * K + K * N + M * N) * 4;
    // --hot: one copy, so inputs that fit stay in L2 (tells a DRAM-bound kernel from one bound inside the SM).
    const copies = process.argv.includes('--hot') ? 1 : Math.max(1, Math.min(4, Math.ceil(150e6 / bytesPerSet)));
    const sets = Array.from({ length: copies }, (_, i) => ({
      a: upload(backend, i === 0 ? aValues : randomValues(M * K, 20 + i)),
      b: upload(backend, i === 0 ? bValues : randomValues(K * N, 40 + i)),
      c: backend.acquire(M * N * 4, 'bench c'),
    }));
    // The first config is timed and discarded until the GPU has settled after the uploads (see
    // settleAfterUploads); the big x·W, always first in its case, had trials from 1.66 to 13 ms
    // before any such warm-up.
    const uploaded = performance.now();
    const record = (config: GemmConfig, set: (typeof sets)[number]) =>
      recordGemm(backend, c.shape, { a: set.a, b: set.b, c: set.c, aBatchStride: 0, bBatchStride: 0, alpha: 1, beta: 0, dtype: 'float32' }, config);
    // 'auto' is the selector's choice for this device (its workgroup memory decides, e.g., how much of x decode stages).
    const configOf = (requested: GemmConfig | 'auto') => (requested === 'auto' ? selectGemm(c.shape, gemmDevice(backend)) : requested);
    await settleAfterUploads(backend, (i) => record(configOf(c.configs[0]), sets[i % copies]), uploaded);
    for (const requested of c.configs) {
      const config = configOf(requested);
      const run = (set: (typeof sets)[number]) => record(config, set);
      // Correctness first, on poisoned output.
      backend.device.queue.writeBuffer(sets[0].c, 0, new Uint32Array(M * N).fill(0x7fc00000));
      run(sets[0]);
      const out = await readBuffer(backend, sets[0].c, M * N);
      const err = sampleError(out, aValues, bValues, c.shape);
      const flops = 2 * M * N * K;
      const { ms, spread, minMs, hostMs } = await timeKernel(backend, (i) => run(sets[i % copies]));
      const bytes = (M * K + K * N + M * N) * 4;
      const r: GemmResult = {
        group: c.group,
        label: c.label,
        config: config.name,
        M,
        N,
        K,
        ms,
        spreadMs: spread,
        minMs,
        hostMs,
        tflops: flops / (ms * 1e-3) / 1e12,
        gbps: bytes / (ms * 1e-3) / 1e9,
        maxRelError: err,
      };
      results.push(r);
      log(
        `${r.label.padEnd(40)} ${r.config.padEnd(22)} ${ms.toFixed(4).padStart(9)} ms ±${r.spreadMs.toFixed(4)} min ${minMs.toFixed(4)} host ${hostMs.toFixed(4)}  ${r.tflops.toFixed(2).padStart(6)} TFLOP/s ${r.gbps.toFixed(0).padStart(6)} GB/s  err ${err.toExponential(1)}`,
      );
    }
    for (const set of sets) {
      backend.release(set.a);
      backend.release(set.b);
      backend.release(set.c);
    }
  }
  return results;
}

/**
 * Copy bandwidth of a vec4 compute kernel through WebGPU (bytes read + written), the decode
 * ceiling: the best of 1, 2, 4 and 8 vec4s per thread (each figure in `forms`).
 */
export async function copyBandwidth(backend: WebGPUBackend): Promise<{ best: number; forms: Record<number, number> }> {
  const bytes = 256 * 1024 * 1024;
  const n = bytes / 16;
  const src = backend.acquire(bytes, 'copy src');
  const dst = backend.acquire(bytes, 'copy dst');
  const forms: Record<number, number> = {};
  for (const per of [1, 2, 4, 8]) {
    const groups = Math.ceil(n / (256 * per));
    const x = Math.min(groups, 65535);
    const run = () =>
      backend.dispatch({
        key: 'copy-vec4',
        source: copySource,
        buffers: [src, dst],
        constants: { PER: per },
        uniform: new Uint32Array([n, x, 0, 0]).buffer,
        workgroups: [x, Math.ceil(groups / x), 1],
        label: `copy ×${per}`,
      });
    await backend.timeRegion(run);
    const times: number[] = [];
    for (let i = 0; i < 7; i++) times.push((await backend.timeRegion(() => Array.from({ length: 10 }, run))) / 10);
    forms[per] = (2 * bytes) / (median(times) * 1e-3) / 1e9;
  }
  backend.release(src);
  backend.release(dst);
  return { best: Math.max(...Object.values(forms)), forms };
}

/** GPU time per dispatch of a trivial kernel (one workgroup copying 4 KiB): the launch floor. */
export async function dispatchOverhead(backend: WebGPUBackend): Promise<number> {
  const bytes = 4096;
  const src = backend.acquire(bytes, 'overhead src');
  const dst = backend.acquire(bytes, 'overhead dst');
  const run = () =>
    backend.dispatch({
      key: 'copy-vec4',
      source: copySource,
      buffers: [src, dst],
      constants: { PER: 1 },
      uniform: new Uint32Array([bytes / 16, 1, 0, 0]).buffer,
      workgroups: [1, 1, 1],
      label: 'tiny',
    });
  const { ms } = await timeKernel(backend, run);
  backend.release(src);
  backend.release(dst);
  return ms;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const jsonIndex = process.argv.indexOf('--json');
  const backend = await createWebGPUBackend({ preciseTimestamps: true });
  backend.sharePasses = process.argv.includes('--shared-passes');
  const { report } = backend.context;
  console.log(
    `device: ${report.vendor} ${report.architecture} ${report.description} (${report.runtime}), timestamp-query=${report.timestampQuery}, one pass per kernel: ${!backend.sharePasses}, workgroup memory ${backend.device.limits.maxComputeWorkgroupStorageSize} B`,
  );
  console.log(await clockWarmerLine(backend, process.argv.includes('--no-warm')));
  const copyForms = quick ? null : await copyBandwidth(backend);
  const copy = copyForms?.best ?? Number.NaN;
  if (copyForms)
    console.log(
      `WebGPU copy bandwidth (read + write): ${copy.toFixed(0)} GB/s (best of ${Object.entries(copyForms.forms)
        .map(([per, g]) => `${per} vec4/thread ${g.toFixed(0)}`)
        .join(', ')})`,
    );
  const overhead = quick ? Number.NaN : await dispatchOverhead(backend);
  if (!quick) console.log(`GPU time per dispatch of a trivial kernel: ${(overhead * 1000).toFixed(1)} µs`);
  if (process.argv.includes('--overhead-only')) return;
  const results = await runGemmBench(backend, quick, console.log);
  if (jsonIndex > 0) writeFileSync(process.argv[jsonIndex + 1], JSON.stringify({ device: report, copyGBps: copy, results }, null, 2));
  await backend.sync();
  backend.context.device.destroy();
}

if (process.argv[1]?.includes('gemm-bench')) await main();
