/**
 * The subgroup-matrix GEMM (gemm-sgmat.wgsl): Apple's simdgroup matrices as Dawn and browsers
 * expose them (`chromium-experimental-subgroup-matrix`; f32 and f16 8×8×8 on Apple, f16 16×16×16
 * and others on NVIDIA). Its config comes from the adapter's report (`subgroupMatrixChoice` in
 * select.ts), and the selector takes it only where the backend opts in (`WebGPUBackend.subgroupMatrix`).
 */
import { type QuantSpec, ValueError } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import { type AdapterReport, subgroupMatrixConfigsText } from '../device';
import { dummy, enableFor, generatedShader, lines, uniform } from '../kernels/common';
import sgmatSource from '../wgsl/gemm-sgmat.wgsl';
import { sgmatQuantApplies, sgmatTile, subgroupMatrixChoice } from './select';
import type { GemmOperands, GemmShape, SgmatConfig } from './types';
import { gemmConstants, gemmUniformHead } from './uniform';

/** The form of `subgroupMatrixLoad` / `Store` the device's compiler takes. */
type Majorness = AdapterReport['subgroupMatrixMajorness'];

/** Where a subgroup matrix is loaded from or stored to: pointer, offset, column-major, stride. */
type MatrixAt = [pointer: string, offset: string, colMajor: boolean, stride: string];

/** A `subgroupMatrixLoad` of a matrix of `type` in the compiler's form (`majorness`). */
function matrixLoad(type: string, [pointer, offset, colMajor, stride]: MatrixAt, majorness: Majorness): string {
  return majorness === 'template'
    ? `subgroupMatrixLoad<${type}, ${colMajor ? 'col_major' : 'row_major'}>(${pointer}, ${offset}, ${stride})`
    : `subgroupMatrixLoad<${type}>(${pointer}, ${offset}, ${colMajor}, ${stride})`;
}

/** A `subgroupMatrixStore` of `value` in the compiler's form (`majorness`). */
function matrixStore([pointer, offset, colMajor, stride]: MatrixAt, value: string, majorness: Majorness): string {
  return majorness === 'template'
    ? `subgroupMatrixStore<${colMajor ? 'col_major' : 'row_major'}>(${pointer}, ${offset}, ${value}, ${stride});`
    : `subgroupMatrixStore(${pointer}, ${offset}, ${value}, ${colMajor}, ${stride});`;
}

/**
 * The statements of one K step of `cfg`: the RM left tiles loaded, then each right tile loaded
 * and multiplied into its RM results (or, with `allRights`, the RN right tiles loaded into r0…
 * before any product). `left(i, trans)` and `right(j, trans)` say where each load reads, for
 * each layout.
 */
function step(
  cfg: SgmatConfig,
  majorness: Majorness,
  left: (i: number, trans: boolean) => MatrixAt,
  right: (j: number, trans: boolean) => MatrixAt,
  indent: string,
  allRights = false,
): string {
  const L = `subgroup_matrix_left<${cfg.component}, ${cfg.sk}, ${cfg.sm}>`;
  const R = `subgroup_matrix_right<${cfg.component}, ${cfg.sn}, ${cfg.sk}>`;
  const loads = (trans: boolean) => lines(cfg.rm, (i) => `${indent}  l${i} = ${matrixLoad(L, left(i, trans), majorness)};`);
  const out = [`${indent}if (TRANS_A == 1u) {`, loads(true), `${indent}} else {`, loads(false), `${indent}}`];
  const loadRight = (v: string, j: number) =>
    `${indent}if (TRANS_B == 1u) { ${v} = ${matrixLoad(R, right(j, true), majorness)}; } else { ${v} = ${matrixLoad(R, right(j, false), majorness)}; }`;
  const products = (v: string, j: number) => lines(cfg.rm, (i) => `${indent}acc_${i}_${j} = subgroupMatrixMultiplyAccumulate(l${i}, ${v}, acc_${i}_${j});`);
  if (allRights)
    out.push(
      lines(cfg.rn, (j) => loadRight(`r${j}`, j)),
      lines(cfg.rn, (j) => products(`r${j}`, j)),
    );
  else for (let j = 0; j < cfg.rn; j++) out.push(loadRight('right', j), products('right', j));
  return out.join('\n');
}

/**
 * The statements of one thread's share of `total` units spread over `threads` threads: share i is
 * unit `(t + i·threads)`, guarded where the units do not split evenly.
 */
function perThread(total: number, threads: number, indent: string, f: (i: number, unit: string) => string): string {
  return lines(Math.ceil(total / threads), (i) => {
    const unit = `(t + ${i * threads}u)`;
    const body = f(i, unit);
    return indent + (total % threads === 0 ? body : `if (${unit} < ${total}u) { ${body} }`);
  });
}

/**
 * PREFETCH's K loop (gemm-sgmat.wgsl): each thread holds its share of the next tiles in registers
 * (ga*, gb*: 16 bytes each) while the subgroups multiply the current ones out of workgroup memory.
 */
function prefetchLoop(cfg: SgmatConfig, t: 'f32' | 'f16', quant: QuantSpec | null, majorness: Majorness): { decl: string; loop: string } {
  const g = sgmatTile(cfg, true);
  const { BM, BN, BK } = g;
  const threads = 4 * cfg.subgroupSize;
  const ind = '    ';
  const [perT, perN] = [BK / g.e, BN / g.e];
  // A thread's loads of a tile of `rows` × BK (16-byte groups over the threads): load i covers
  // group t + i·threads, at row (group / perRow) and group (group % perRow) of it; guarded where
  // the tile does not split evenly.
  const loadsOf = (rows: number) => Math.ceil((rows * BK) / g.e / threads);
  const [aLoads, bLoads] = [loadsOf(BM), loadsOf(BN)];
  const each = (rows: number, perRow: number, indent: string, f: (i: number, r: string, c: string) => string) =>
    perThread((rows * BK) / g.e, threads, indent, (i, group) => f(i, `${group} / ${perRow}u`, `${group} % ${perRow}u`));
  type Load = (i: number, r: string, c: string) => string;
  // A's loads, then B's for either layout (TRANS_B is a pipeline constant).
  const both = (a: Load, bT: Load, bN: Load) =>
    [each(BM, perT, ind, a), `${ind}if (TRANS_B == 1u) {`, each(BN, perT, `${ind}  `, bT), `${ind}} else {`, each(BN, perN, `${ind}  `, bN), `${ind}}`].join(
      '\n',
    );
  const unpack = (v: string, dst: string, base: string) =>
    t === 'f16'
      ? ['x', 'y', 'z', 'w']
          .map((w, q) => `{ let h = bitcast<vec2<f16>>(${v}.${w}); ${dst}[${base} + ${2 * q}u] = h.x; ${dst}[${base} + ${2 * q + 1}u] = h.y; }`)
          .join(' ')
      : `{ let f = bitcast<vec4<f32>>(${v}); ${['x', 'y', 'z', 'w'].map((w, q) => `${dst}[${base} + ${q}u] = f.${w};`).join(' ')} }`;
  const aFetch =
    (k0: string): Load =>
    (i, r, c) =>
      `ga${i} = a16[a16_base + (row0 + ${r}) * kv + ${k0} / E + ${c}];`;
  const aPut: Load = (i, r, c) => unpack(`ga${i}`, 'As', `(${r}) * ${g.ap}u + (${c}) * E`);
  const q = quant ? quantB(cfg, g, quant.bits, threads, ind) : null;
  const fetch = (k0: string) =>
    q
      ? [each(BM, perT, ind, aFetch(k0)), q.fetch(k0)].join('\n')
      : both(
          aFetch(k0),
          (i, r, c) => `gb${i} = b16[b16_base + (col0 + ${r}) * kv + ${k0} / E + ${c}];`,
          (i, r, c) => `gb${i} = b16[b16_base + (${k0} + ${r}) * nv + col0 / E + ${c}];`,
        );
  const put = q
    ? [each(BM, perT, ind, aPut), q.put].join('\n')
    : both(
        aPut,
        (i, r, c) => unpack(`gb${i}`, 'Bs', `(${r}) * ${g.bpT}u + (${c}) * E`),
        (i, r, c) => unpack(`gb${i}`, 'Bs', `(${r}) * ${g.bpN}u + (${c}) * E`),
      );
  // The K steps of a tile, unrolled with constant offsets (A is never transposed here).
  const compute = Array.from({ length: BK / cfg.sk }, (_, q) =>
    step(
      cfg,
      majorness,
      (i) => ['&As', `(tm0 + ${i}u) * ${cfg.sm * g.ap}u + ${q * cfg.sk}u`, false, `${g.ap}u`],
      (j, trans) =>
        trans
          ? ['&Bs', `(tn0 + ${j}u) * ${cfg.sn * g.bpT}u + ${q * cfg.sk}u`, true, `${g.bpT}u`]
          : ['&Bs', `${q * cfg.sk * g.bpN}u + (tn0 + ${j}u) * SN`, false, `${g.bpN}u`],
      ind,
      true,
    ),
  ).join('\n');
  const decl = [
    lines(aLoads, (i) => `  var ga${i}: vec4<u32>;`),
    q ? q.decl : lines(bLoads, (i) => `  var gb${i}: vec4<u32>;`),
    lines(cfg.rn, (j) => `  var r${j}: subgroup_matrix_right<${cfg.component}, ${cfg.sn}, ${cfg.sk}>;`),
  ].join('\n');
  const loop = [
    fetch('0u'),
    `${ind}for (var k0 = 0u; k0 < p.K; k0 += BK) {`,
    put,
    `${ind}  workgroupBarrier();`,
    `${ind}  if (k0 + BK < p.K) {`,
    fetch('(k0 + BK)'),
    `${ind}  }`,
    compute,
    `${ind}  workgroupBarrier();`,
    `${ind}}`,
  ].join('\n');
  return { decl, loop };
}

/**
 * PREFETCH's B side under QUANT: each thread fetches chunks of 32 consecutive values of a row of
 * W (BITS whole words, 16 bytes at a time where BITS is a multiple of 4, one scale and one bias),
 * and puts them dequantized into the staged tile. For TRANS_B W is [N, K] and a chunk runs along
 * K inside one row of Bs ([BN][bpT]); otherwise W is [K, N] and a chunk runs along N inside one
 * row of Bs ([BK][bpN]).
 */
function quantB(cfg: SgmatConfig, g: ReturnType<typeof sgmatTile>, bits: number, threads: number, ind: string) {
  const { BN, BK } = g;
  const vec = bits % 4 === 0;
  const total = (BN * BK) / 32;
  const loads = Math.ceil(total / threads);
  const word = (i: number, w: number) => (vec ? `gq${i}_${w >> 2}.${'xyzw'[w & 3]}` : `gw${i}_${w}`);
  const mask = `${2 ** bits - 1}u`;
  // Value j of chunk i's words: LSB-first, straddling a word boundary at 3, 5 and 6 bits.
  const value = (i: number, j: number) => {
    const [w, sh] = [(j * bits) >> 5, (j * bits) & 31];
    if (sh + bits > 32) return `((${word(i, w)} >> ${sh}u) | (${word(i, w + 1)} << ${32 - sh}u)) & ${mask}`;
    const shifted = sh === 0 ? word(i, w) : `(${word(i, w)} >> ${sh}u)`;
    return sh + bits === 32 ? shifted : `${shifted} & ${mask}`;
  };
  const layouts = [
    { trans: true, perRow: BK / 32, pitch: g.bpT },
    { trans: false, perRow: BN / 32, pitch: g.bpN },
  ];
  const each = (indent: string, f: (i: number, r: string, c: string, l: (typeof layouts)[number]) => string) =>
    [
      `${ind}if (TRANS_B == 1u) {`,
      ...layouts.flatMap((l, n) => [
        ...(n === 1 ? [`${ind}} else {`] : []),
        perThread(total, threads, indent, (i, chunk) => f(i, `${chunk} / ${l.perRow}u`, `${chunk} % ${l.perRow}u`, l)),
      ]),
      `${ind}}`,
    ].join('\n');
  const fetch = (k0: string) =>
    each(`${ind}  `, (i, r, c, l) => {
      const [row, words, group] = l.trans
        ? [`(col0 + ${r})`, `kw + (${k0} / 32u + ${c}) * BITS`, `(p.K / GROUP) + (${k0} + (${c}) * 32u) / GROUP`]
        : [`(${k0} + ${r})`, `nw + (col0 / 32u + ${c}) * BITS`, `(p.N / GROUP) + (col0 + (${c}) * 32u) / GROUP`];
      const load = vec
        ? lines(bits / 4, (v) => `gq${i}_${v} = b16[o / 4u + ${v}u];`).replaceAll('\n', ' ')
        : lines(bits, (w) => `gw${i}_${w} = wq[o + ${w}u];`).replaceAll('\n', ' ');
      return `{ let o = ${row} * ${words}; ${load} let gi = ${row} * ${group}; gs${i} = scales[gi]; gz${i} = biases[gi]; }`;
    });
  const put = each(`${ind}  `, (i, r, c, l) => {
    const quads = lines(8, (v) => {
      const q = [0, 1, 2, 3].map((e) => value(i, 4 * v + e)).join(', ');
      const stores = [0, 1, 2, 3].map((e) => `Bs[o + ${4 * v + e}u] = h.${'xyzw'[e]};`).join(' ');
      return `{ let h = vec4<${cfg.component}>(fma(vec4<f32>(vec4<u32>(${q})), s, z)); ${stores} }`;
    }).replaceAll('\n', ' ');
    return `{ let s = vec4<f32>(f32(gs${i})); let z = vec4<f32>(f32(gz${i})); let o = (${r}) * ${l.pitch}u + (${c}) * 32u; ${quads} }`;
  });
  const decl = [
    "  // W's words per row (K and N are multiples of 32 under QUANT).",
    '  let kw = p.K / 32u * BITS;',
    '  let nw = p.N / 32u * BITS;',
    lines(loads, (i) =>
      [
        ...(vec
          ? Array.from({ length: bits / 4 }, (_, v) => `  var gq${i}_${v}: vec4<u32>;`)
          : Array.from({ length: bits }, (_, w) => `  var gw${i}_${w}: u32;`)),
        `  var gs${i}: ${cfg.component};`,
        `  var gz${i}: ${cfg.component};`,
      ].join('\n'),
    ),
  ].join('\n');
  return { decl, fetch, put };
}

/** Whether `cfg` prefetches for operands of type `t` (stored as the configuration's component). */
function prefetchesFor(cfg: SgmatConfig, t: 'f32' | 'f16'): boolean {
  return cfg.prefetch && t === cfg.component;
}

/**
 * The WGSL of `cfg` for operands of type `t`, its loads and stores in the compiler's form
 * (`majorness`; benchmarks compile it on adapters that cannot run it, to validate it).
 */
export function sgmatShader(
  cfg: SgmatConfig,
  t: 'f32' | 'f16',
  quant: QuantSpec | null = null,
  majorness: Majorness = 'template',
): { key: string; source: string } {
  const prefetch = prefetchesFor(cfg, t);
  if (quant && !prefetch)
    throw new ValueError(
      'matmul',
      `${cfg.name} takes a quantized B only where it prefetches`,
      `a prefetching configuration on ${cfg.component} operands`,
      `prefetch ${cfg.prefetch} on ${t} operands`,
    );
  const params = {
    t,
    mt: cfg.component,
    sm: cfg.sm,
    sn: cfg.sn,
    sk: cfg.sk,
    sg: cfg.subgroupSize,
    rm: cfg.rm,
    rn: cfg.rn,
    prefetch: prefetch ? 1 : 0,
    quant: quant ? `${quant.bits}/${quant.groupSize}` : 0,
    majorness,
  };
  // The statements are generated once per configuration (generatedShader), not per dispatch.
  return generatedShader('gemm-sgmat', sgmatSource, params, () => {
    const tiles = Array.from({ length: cfg.rm * cfg.rn }, (_, e) => [Math.floor(e / cfg.rn), e % cfg.rn]);
    const staged = step(
      cfg,
      majorness,
      (i, trans) => (trans ? ['&As', `ks * BM + (tm0 + ${i}u) * SM`, true, 'BM'] : ['&As', `(tm0 + ${i}u) * SM * BK + ks`, false, 'BK']),
      (j, trans) => (trans ? ['&Bs', `(tn0 + ${j}u) * SN * BK + ks`, true, 'BK'] : ['&Bs', `ks * BN + (tn0 + ${j}u) * SN`, false, 'BN']),
      '      ',
    );
    const tile = sgmatTile(cfg, prefetch);
    const pre = prefetch ? prefetchLoop(cfg, t, quant, majorness) : null;
    return {
      ENABLE: enableFor(t, cfg.component),
      T: t,
      MT: cfg.component,
      SM: String(cfg.sm),
      SN: String(cfg.sn),
      SK: String(cfg.sk),
      SG: String(cfg.subgroupSize),
      RM: String(cfg.rm),
      RN: String(cfg.rn),
      E: String(tile.e),
      A_TILE: String(tile.aTile),
      B_TILE: String(tile.bTile),
      UB: quant ? '10' : prefetch ? '8' : '6',
      ACC: tiles.map(([i, j]) => `  var acc_${i}_${j} = subgroup_matrix_result<f32, ${cfg.sn}, ${cfg.sm}>();`).join('\n'),
      OPERANDS: [
        lines(cfg.rm, (i) => `  var l${i}: subgroup_matrix_left<${cfg.component}, ${cfg.sk}, ${cfg.sm}>;`),
        `  var right: subgroup_matrix_right<${cfg.component}, ${cfg.sn}, ${cfg.sk}>;`,
        ...(pre ? [pre.decl] : []),
      ].join('\n'),
      ...(quant ? {} : { STAGED_STEP: staged }),
      ...(pre ? { PREFETCH_LOOP: pre.loop } : {}),
      STORE: tiles
        .map(
          ([i, j]) => `  ${matrixStore(['&Cs', 'sg * SM * SN', false, 'SN'], `acc_${i}_${j}`, majorness)}\n  write_tile(${i}u, ${j}u, row0, col0, batch, t);`,
        )
        .join('\n'),
      PREFETCH: prefetch ? '1' : '0',
      QUANT: quant ? '1' : '0',
      ...(quant ? { BITS: String(quant.bits), GROUP: String(quant.groupSize) } : {}),
    };
  });
}

/** Records C = α·op(A)·op(B) + β·C + bias on the subgroup-matrix kernel; throws where the adapter cannot run `cfg`. */
export function recordSgmat(
  backend: WebGPUBackend,
  shape: GemmShape,
  ops: Pick<GemmOperands, 'a' | 'b' | 'c' | 'bias' | 'aBatchStride' | 'bBatchStride' | 'alpha' | 'beta' | 'quant'>,
  t: 'f32' | 'f16',
  cfg: SgmatConfig,
): void {
  const report = backend.context.report;
  const offered = subgroupMatrixChoice(report, t === 'f16' ? 'float16' : 'float32');
  const same =
    offered &&
    offered.component === cfg.component &&
    offered.sm === cfg.sm &&
    offered.sn === cfg.sn &&
    offered.sk === cfg.sk &&
    offered.subgroupSize === cfg.subgroupSize;
  // An f32 component also serves f16 operands (widened as they are staged).
  const widened = t === 'f16' && cfg.component === 'f32' && subgroupMatrixChoice(report, 'float32')?.sm === cfg.sm;
  for (const [key, v] of [
    ['rm', cfg.rm],
    ['rn', cfg.rn],
  ] as const)
    if (!Number.isInteger(v) || v < 1 || v > 8) throw new ValueError('matmul', `${cfg.name}: ${key} must be an integer in 1..8`, '1..8', String(v));
  if (!same && !widened) {
    const configs = subgroupMatrixConfigsText(report);
    throw new ValueError(
      'matmul',
      `${cfg.name} needs the adapter's subgroup-matrix configuration`,
      `chromium-experimental-subgroup-matrix with ${cfg.component}->f32 ${cfg.sm}x${cfg.sn}x${cfg.sk} and a fixed subgroup size of ${cfg.subgroupSize}`,
      `${report.features.includes('chromium-experimental-subgroup-matrix') ? configs || 'no configurations' : 'no such feature'}, subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`,
    );
  }
  const prefetch = prefetchesFor(cfg, t);
  const { quant } = ops;
  const { M, N, K, batch } = shape;
  const { BM, BN, BK } = sgmatTile(cfg);
  if (quant && !sgmatQuantApplies(shape, cfg, quant))
    throw new ValueError(
      'matmul',
      `${cfg.name} takes a quantized B only where every workgroup prefetches whole tiles of whole 32-value chunks`,
      `${cfg.component} operands, batch 1, A not transposed, M % ${BM} = 0, N % ${BN} = 0, K % ${BK} = 0, groups of 32, 64 or 128`,
      `[${M}, ${K}]${shape.transA ? 'ᵀ' : ''}·W${shape.transB ? 'ᵀ' : ''} → [${M}, ${N}] ${shape.dtype ?? 'float32'}, batch ${batch}, ${quant.bits} bits in groups of ${quant.groupSize}`,
    );
  const { key, source } = sgmatShader(cfg, t, quant ?? null, backend.context.report.subgroupMatrixMajorness);
  // Under QUANT the words are read as u32 (binding 1) or 16 bytes at a time (binding 7), not both.
  const vecWords = quant !== undefined && quant.bits % 4 === 0;
  const buffers = quant
    ? [ops.a, vecWords ? null : ops.b, ops.bias ?? dummy(backend), ops.c, null, null, ops.a, vecWords ? ops.b : null, quant.scales, quant.biases]
    : [ops.a, ops.b, ops.bias ?? dummy(backend), ops.c, ops.a, ops.b, ...(prefetch ? [ops.a, ops.b] : [])];
  backend.dispatch({
    key,
    source,
    constants: gemmConstants(shape, ops),
    buffers,
    uniform: uniform(gemmUniformHead({ M, N, K, entries: batch }, ops, 0, 0)),
    workgroups: [Math.ceil(N / BN), Math.ceil(M / BM), batch],
    label: cfg.name,
  });
}
