/** gemv-rows.wgsl: dot products along rows, both operands contiguous along K (x·Wᵀ at decode, the rank-shaped x·Aᵀ). */
import { ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { dummy, generatedShader, lines, uniform } from '../kernels/common';
import rowsSource from '../wgsl/gemv-rows.wgsl';
import { type GemvOperands, type GemvTypes, gemvEpilogueFlags, gemvTypeValues } from './gemv-common';
import {
  fixedSubgroupSize,
  type GemmShape,
  type GemvRowsConfig,
  gemvRowsStorage,
  gemvRowsStream,
  gemvRowsThreads,
  streamedRowsPerWorkgroup,
  subgroupFlushFits,
} from './types';

function rowsShader(c: GemvRowsConfig, types: GemvTypes, concat: boolean): { key: string; source: string } {
  const values = () => {
    const typed = gemvTypeValues(types);
    return {
      ...rowsValues(c, concat),
      ...typed,
      ENABLE: [typed.ENABLE, c.subgroupFlush ? 'enable subgroups;\nrequires subgroup_id;' : ''].filter(Boolean).join('\n'),
    };
  };
  return generatedShader(
    'gemv-rows',
    rowsSource,
    {
      lanes: c.lanes,
      rows: c.rows,
      mr: c.mr,
      unroll: c.unroll,
      concat: concat ? 1 : 0,
      stage: c.stage ?? 0,
      prefetchX: c.prefetchX ? 1 : 0,
      subgroupFlush: c.subgroupFlush ? 1 : 0,
      stageByK: c.stageByK ? 1 : 0,
      fmaChains: c.fmaChains ? 1 : 0,
      threads: gemvRowsThreads(c),
      ...types,
    },
    values,
  );
}

/**
 * The butterfly of section SG: the R·MR accumulators (padded with zeros to a multiple of LANES)
 * halve at each of log2(LANES) steps, each lane keeping the half its bit names and adding its
 * partner's copy of it, so lane l ends with outputs l·P/LANES … (l + 1)·P/LANES − 1 summed over
 * the group (P the padded count).
 */
function butterflyFlush(R: number, MR: number, lanes: number): string {
  const count = R * MR;
  const padded = Math.ceil(count / lanes) * lanes;
  let list = Array.from({ length: padded }, (_, v) => (v < count ? `a${Math.floor(v / MR)}_${v % MR}` : '0.0'));
  const out: string[] = [];
  for (let step = 0, mask = lanes / 2; mask >= 1; step++, mask /= 2) {
    const half = list.length / 2;
    out.push(`  let hi${step} = (lane & ${mask}u) != 0u;`);
    out.push(
      lines(
        half,
        (i) =>
          `  let q${step}_${i} = select(${list[i]}, ${list[half + i]}, hi${step}) + subgroupShuffleXor(select(${list[half + i]}, ${list[i]}, hi${step}), ${mask}u);`,
      ),
    );
    list = Array.from({ length: half }, (_, i) => `q${step}_${i}`);
  }
  const per = padded / lanes;
  out.push(lines(per, (i) => `  { let v = lane * ${per}u + ${i}u; if (v < ${count}u) { emit(n0 + v / MR, v % MR, ${list[i]}, split); } }`));
  return out.join('\n');
}

function rowsValues(c: GemvRowsConfig, concat: boolean): Record<string, string> {
  const { rows: R, mr: MR, unroll: U } = c;
  // With CONCAT a lane group's rows are all in W or all in W2 (R divides NW).
  const rowOf = (r: number) => (concat ? `select(min(n0 + ${r}u, p.NW - 1u), min(n0 + ${r}u - p.NW, p.nw2 - 1u), n0 >= p.NW)` : `min(n0 + ${r}u, p.NW - 1u)`);
  const staged = (c.stage ?? 0) > 0;
  const wOffsets = lines(R, (r) => `  let wo${r} = ${rowOf(r)} * p.K4;`);
  const setup = staged ? wOffsets : [wOffsets, lines(MR, (j) => `  let xo${j} = (p.x_row0 + min(${j}u, p.rows - 1u)) * p.K4;`)].join('\n');
  const acc = lines(R * MR, (v) => `  var a${Math.floor(v / MR)}_${v % MR} = 0.0;`);
  // The decode LoRA term s·T·Bᵀ: each lane starts its accumulators at its share of the r
  // products (k = lane, lane + LANES, …), issued before the stream over W so their latency hides
  // under it; the lane reduction in FLUSH then adds them up with the rest.
  const loraInit = [
    '  if (HAS_LORA == 1u && split == 0u) {',
    '    for (var k = lane; k < p.r; k += LANES) {',
    lines(R, (r) => `      let lb${r} = f32(lb[min(n0 + ${r}u, p.NW - 1u) * p.r + k]);`),
    lines(
      MR,
      (j) =>
        `      { let tv = p.lora_scale * f32(lt[(p.x_row0 + min(${j}u, p.rows - 1u)) * p.r + k]);${Array.from({ length: R }, (_, r) => ` a${r}_${j} += tv * lb${r};`).join('')} }`,
    ),
    '    }',
    '  }',
  ].join('\n');
  // With XS the x vec4s come from the staged rows (k relative to the stage's first, kb), the
  // indices clamped to the stage's end, ke.
  const [start, end, xAt] = staged
    ? ['kb', 'ke', (j: number, u: number) => (c.stageByK ? `xs[k${u} - kb][${j}]` : `xs[${j}u * XS4 + k${u} - kb]`)]
    : ['k_begin', 'k_end', (j: number, u: number) => `vec4<f32>(x[xo${j} + k${u}])`];
  // Step u's k, clamped into the stage (the index of its x) or into K.
  const kLine = (u: number) => `    let k${u} = min(k + ${u}u * LANES, ${staged ? 'ke - 1u' : 'last'});`;
  const loads = (w: string, u: number) =>
    [
      kLine(u),
      `    let ok${u} = k + ${u}u * LANES < ${end};`,
      lines(R, (r) => `    let wv${u}_${r} = select(vec4<f32>(0.0), vec4<f32>(${w}[wo${r} + k${u}]), ok${u});`),
    ].join('\n');
  const product = (acc: string, w: string) =>
    c.fmaChains ? ` ${acc} = fma(${w}.w, xv.w, fma(${w}.z, xv.z, fma(${w}.y, xv.y, fma(${w}.x, xv.x, ${acc}))));` : ` ${acc} += dot(${w}, xv);`;
  const fmas = (u: number) =>
    lines(MR, (j) => `    { let xv = ${xAt(j, u)};${Array.from({ length: R }, (_, r) => product(`a${r}_${j}`, `wv${u}_${r}`)).join('')} }`);
  const body = (w: string) => lines(U, (u) => [loads(w, u), fmas(u)].join('\n'));
  // The walk along K over the lane group's rows of W, or with CONCAT of W2 for the groups past W's rows.
  const loop = (w: string) => [`  for (var k = ${start} + lane; k < ${end}; k += LANES * UNROLL) {`, body(w), '  }'].join('\n');
  const stream = concat ? ['  if (n0 >= p.NW) {', loop('w2'), '  } else {', loop('w'), '  }'].join('\n') : loop('w');
  const flush: string[] = [];
  if (c.subgroupFlush) flush.push(butterflyFlush(R, MR, c.lanes));
  else {
    for (let first = 0; first < R * MR; first += 8) {
      const count = Math.min(8, R * MR - first);
      flush.push(lines(count, (i) => `  red[slot(${i}u, t)] = a${Math.floor((first + i) / MR)}_${(first + i) % MR};`));
      flush.push(`  flush(${first}u, ${count}u, block, split, t);`);
    }
  }
  const values: Record<string, string> = {
    WG: String(gemvRowsThreads(c)),
    LANES: String(c.lanes),
    R: String(R),
    MR: String(MR),
    UNROLL: String(U),
    SETUP: setup,
    ACC: [acc, concat ? '' : loraInit].filter(Boolean).join('\n'),
    STREAM: stream,
    FLUSH: flush.join('\n'),
    CONCAT: concat ? '1' : '0',
    XS: staged ? '1' : '0',
    SG: c.subgroupFlush ? '1' : '0',
  };
  if (staged) {
    values.XS4 = String(c.stage);
    values.XSK = c.stageByK ? '1' : '0';
    const prefetch = !!c.prefetchX;
    values.XP = prefetch ? '1' : '0';
    if (prefetch) {
      const wg = gemvRowsThreads(c);
      const XPT = Math.ceil((MR * c.stage!) / wg);
      values.XLOAD = lines(XPT, (j) => `  var xr${j} = x_stage(t + ${wg * j}u, k_begin, min(k_end, k_begin + XS4));`);
      values.XSTORE = lines(XPT, (j) => `    if (t + ${wg * j}u < MR * XS4) { xs_put(t + ${wg * j}u, xr${j}); }`);
      values.XNEXT = lines(XPT, (j) => `    xr${j} = x_stage(t + ${wg * j}u, nb, min(k_end, nb + XS4));`);
    }
  }
  return values;
}

/** Records gemv-rows for one shape (see {@link gemvRowsStream}); `kChunk` in elements, a multiple of 4. */
export function recordGemvRows(backend: WebGPUBackend, s: GemmShape, ops: GemvOperands, c: GemvRowsConfig, kChunk: number, splits: number): void {
  const streamB = gemvRowsStream(s) === 'b';
  // Streamed operand W (NW rows) and the small one X (its rows in chunks of MR).
  const [x, w, smallRows, NW] = streamB ? [ops.a, ops.b, s.M, s.N] : [ops.b, ops.a, s.N, s.M];
  const concat = ops.concat;
  if (concat && (!streamB || (splits > 1 && !ops.split) || ops.lora || NW % c.rows !== 0)) {
    throw new ValueError(
      'matmul',
      `${c.name}: a second streamed matrix needs W streamed whole`,
      'x·Wᵀ streaming W, a workspace if K is split, no LoRA term, rows per lane group dividing N',
      `${JSON.stringify(s)}, ${splits} split(s)`,
    );
  }
  const threads = gemvRowsThreads(c);
  if (![8, 16, 32, 64, 128, 256].includes(c.lanes) || !(c.rows >= 1 && c.rows <= 8) || !(c.mr >= 1 && c.mr <= 32)) {
    throw new ValueError(
      'matmul',
      `${c.name}: lanes, rows or mr out of range`,
      'lanes a power of two in 8..256, rows in 1..8, mr in 1..32',
      `lanes ${c.lanes}, rows ${c.rows}, mr ${c.mr}`,
    );
  }
  if (![64, 128, 256].includes(threads) || c.lanes > threads) {
    throw new ValueError('matmul', `${c.name}: threads out of range`, `64, 128 or 256 threads, at least lanes (${c.lanes})`, `${threads} threads`);
  }
  const storage = gemvRowsStorage(c);
  const limit = backend.device.limits.maxComputeWorkgroupStorageSize;
  if (c.stage !== undefined && c.stage !== 0 && (!Number.isInteger(c.stage) || c.stage < 1 || storage > limit)) {
    throw new ValueError(
      'matmul',
      `${c.name}: the staged rows of X do not fit`,
      `a whole number of vec4s per row, ${limit} bytes of workgroup memory at most`,
      `stage ${c.stage}, ${storage} bytes`,
    );
  }
  if (c.subgroupFlush) {
    const size = fixedSubgroupSize(backend.context.report);
    if (!subgroupFlushFits(size, c.lanes, threads)) {
      const { report } = backend.context;
      const got =
        size !== undefined
          ? `subgroups of ${size}`
          : !report.subgroups
            ? 'subgroups off'
            : report.wgslLanguageFeatures.includes('subgroup_id')
              ? `subgroups of ${report.subgroupMinSize}..${report.subgroupMaxSize} invocations`
              : 'subgroups without WGSL subgroup_id';
      throw new ValueError(
        'matmul',
        `${c.name}: the subgroup flush needs lane groups inside subgroups of one size`,
        `the subgroups feature with one subgroup size that ${c.lanes} lanes divide and that divides ${threads} threads, and WGSL subgroup_id`,
        got,
      );
    }
  }
  const { key, source } = rowsShader(c, { t: ops.t, tc: ops.split ? 'f32' : ops.t }, !!concat);
  const flags = { ...gemvEpilogueFlags(ops, streamB), HAS_LORA: ops.lora ? 1 : 0 };
  const rowsOut = NW + (concat?.rows ?? 0);
  // C's row length: the split workspace holds W2's columns after W's.
  const ldc = concat && ops.split ? rowsOut : s.N;
  const blocks = Math.ceil(rowsOut / streamedRowsPerWorkgroup(c));
  for (let row0 = 0; row0 < smallRows; row0 += c.mr) {
    backend.dispatch({
      key,
      source,
      constants: flags,
      buffers: [x, w, ops.bias ?? dummy(backend), ops.c, concat?.w ?? ops.lora?.t ?? dummy(backend), concat?.c ?? ops.lora?.b ?? dummy(backend)],
      uniform: uniform([
        Math.min(c.mr, smallRows - row0),
        NW,
        s.K / 4,
        kChunk / 4,
        row0,
        ldc,
        s.M * ldc,
        ops.lora?.r ?? 0,
        { f32: ops.alpha },
        { f32: ops.beta },
        { f32: ops.lora?.scale ?? 0 },
        concat?.rows ?? 0,
      ]),
      workgroups: [blocks, splits, 1],
      label: concat ? `${c.name}+concat` : c.name,
    });
  }
}
