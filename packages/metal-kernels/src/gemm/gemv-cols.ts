/** gemv-cols.wgsl: sums over the rows of a tall K-major operand (dyᵀ·T, Uᵀ·x, the bias gradient). */
import type { WebGPUBackend } from '../backend';
import { dummy, generatedShader, lines, uniform } from '../kernels/common';
import colsSource from '../wgsl/gemv-cols.wgsl';
import { type GemvOperands, type GemvTypes, gemvEpilogueFlags, gemvTypeValues } from './gemv-common';
import { type GemmShape, type GemvColsConfig, gemvColsStream } from './types';

function colsShader(c: GemvColsConfig, types: GemvTypes): { key: string; source: string } {
  return generatedShader('gemv-cols', colsSource, { colLanes: c.colLanes, mr: c.mr, unroll: c.unroll, ...types }, () => ({
    ...colsValues(c),
    ...gemvTypeValues(types),
  }));
}

function colsValues(c: GemvColsConfig): Record<string, string> {
  const { mr: MR, unroll: U } = c;
  const setup = lines(MR, (j) => `  let pj${j} = (p.j0 + min(${j}u, p.cols - 1u)) * p.sj;`);
  const acc = lines(MR, (j) => `  var a${j} = vec4<f32>(0.0);`);
  const body = lines(U, (u) =>
    [
      `    let m${u} = min(m + ${u}u * RL, last);`,
      `    let q${u} = select(vec4<f32>(0.0), vec4<f32>(q[m${u} * p.N4 + col]), m + ${u}u * RL < m_end);`,
      `    let pr${u} = m${u} * p.sk;`,
      lines(MR, (j) => `    a${j} += f32(pm[pr${u} + pj${j}]) * q${u};`),
    ].join('\n'),
  );
  const flush: string[] = [];
  for (let j = 0; j < MR; j += 2) {
    const count = Math.min(2, MR - j);
    flush.push(`  red[t] = a${j};${count > 1 ? ` red[256u + t] = a${j + 1};` : ''}`);
    flush.push(`  flush(${j}u, ${count}u, c4, split, t);`);
  }
  return { CL: String(c.colLanes), MR: String(MR), UNROLL: String(U), SETUP: setup, ACC: acc, BODY: body, FLUSH: flush.join('\n') };
}

/** Records gemv-cols for one shape (see {@link gemvColsStream}); `kChunk` rows of the reduction per split. */
export function recordGemvCols(backend: WebGPUBackend, s: GemmShape, ops: GemvOperands, c: GemvColsConfig, kChunk: number, splits: number): void {
  const streamB = gemvColsStream(s) === 'b';
  // Streamed Q [K, wide] and the small P: element (k, j) at k·sk + j·sj.
  let q: GPUBuffer;
  let pm: GPUBuffer;
  let wide: number;
  let narrow: number;
  let sk: number;
  let sj: number;
  if (streamB) {
    [q, pm, wide, narrow] = [ops.b, ops.a, s.N, s.M];
    [sk, sj] = s.transA ? [s.M, 1] : [1, s.K];
  } else {
    [q, pm, wide, narrow] = [ops.a, ops.b, s.M, s.N];
    [sk, sj] = s.transB ? [1, s.K] : [s.N, 1];
  }
  const { key, source } = colsShader(c, { t: ops.t, tc: ops.split ? 'f32' : ops.t });
  const flags = gemvEpilogueFlags(ops, streamB);
  for (let j0 = 0; j0 < narrow; j0 += c.mr) {
    backend.dispatch({
      key,
      source,
      constants: flags,
      buffers: [pm, q, ops.bias ?? dummy(backend), ops.c],
      uniform: uniform([Math.min(c.mr, narrow - j0), wide / 4, s.K, kChunk, sk, sj, j0, s.N, s.M * s.N, 0, { f32: ops.alpha }, { f32: ops.beta }]),
      workgroups: [Math.ceil(wide / 4 / c.colLanes), splits, 1],
      label: c.name,
    });
  }
}
