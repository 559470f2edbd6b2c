/**
 * U = s·dy·B and dB = s·dyᵀ·T from one read of dy (lora-dual.wgsl) plus one reduction dispatch
 * for both (lora-dual-reduce.wgsl): the LoRA backward's two products over dy. Where it applies is
 * the selector's `loraDualApplies`.
 */
import type { GpuData, WebGPUBackend } from '../backend';
import { generatedShader, grid1d, lines, uniform } from '../kernels/common';
import dualSource from '../wgsl/lora-dual.wgsl';
import reduceSource from '../wgsl/lora-dual-reduce.wgsl';

const BM = 64;
const NS = 64;
/**
 * How the workgroup's 256 threads share the two products: `split` gives each half one product
 * (threads own more outputs: each B or T load feeds more multiply-adds), `shared` has every thread
 * do both, one after the other. The default, `split` up to r = 32 and `shared` above, is what
 * measured faster (RESULTS.md, "lora-dual roles"). At r ≤ 8 both layouts are the same.
 */
export type LoraDualRoles = 'split' | 'shared';

/** OU, the outputs of each kind per thread: the least power of two with (64 / OU)·R4 ≤ the threads per product. */
function outputsPerThread(r: number, roles: LoraDualRoles): number {
  const threads = roles === 'split' ? 128 : 256;
  let ou = 1;
  while ((BM / ou) * (r / 4) > threads) ou *= 2;
  return ou;
}

function dualShader(r: number, roles: LoraDualRoles): { key: string; source: string } {
  return generatedShader('lora-dual', dualSource, { r, roles }, () => dualValues(r, roles));
}

function dualValues(r: number, roles: LoraDualRoles): Record<string, string> {
  const R4 = r / 4;
  const OU = outputsPerThread(r, roles);
  return {
    R4: String(R4),
    OU: String(OU),
    U_DECL: lines(OU, (i) => `  var u${i} = vec4<f32>(0.0);`),
    U_FMA: lines(OU, (i) => `        u${i} += tile[at(g * OU + ${i}u, n)] * bv;`),
    B_DECL: lines(OU, (i) => `      var b${i} = vec4<f32>(0.0);`),
    B_FMA: lines(OU, (i) => `        b${i} += tile[at(m, g * OU + ${i}u)] * tv;`),
    B_STORE: lines(OU, (i) => `      if (n0 + g * OU + ${i}u < n_end) { ws_b[(block * p.N + n0 + g * OU + ${i}u) * R4 + j4] = b${i}; }`),
    U_STORE: lines(OU, (i) => `    if (m0 + g * OU + ${i}u < p.M) { ws_u[(chunk * p.M + m0 + g * OU + ${i}u) * R4 + j4] = u${i}; }`),
  };
}

/** Column chunks per block of rows: about 256 workgroups in all, each chunk a whole number of tiles. */
export function loraDualGrid(M: number, N: number): { blocks: number; chunks: number; nChunk: number } {
  const blocks = Math.ceil(M / BM);
  const tiles = Math.ceil(N / NS);
  const wanted = Math.max(1, Math.min(tiles, Math.ceil(256 / blocks)));
  const nChunk = Math.ceil(tiles / wanted) * NS;
  return { blocks, chunks: Math.ceil(N / nChunk), nChunk };
}

/** Records U = s·dy·B [M, r] and dB = s·dyᵀ·T [N, r] (where the selector's `loraDualApplies` holds). */
export function recordLoraDual(
  backend: WebGPUBackend,
  dy: GPUBuffer,
  b: GPUBuffer,
  t: GPUBuffer,
  M: number,
  N: number,
  r: number,
  scale: number,
  roles: LoraDualRoles = r <= 32 ? 'split' : 'shared',
): { u: GpuData; dB: GpuData } {
  const { blocks, chunks, nChunk } = loraDualGrid(M, N);
  const u = backend.allocate('float32', M * r, 'loraLinear U');
  const dB = backend.allocate('float32', N * r, 'loraLinear dB');
  const wsU = backend.acquire(chunks * M * r * 4, 'lora-dual U partials');
  const wsB = backend.acquire(blocks * N * r * 4, 'lora-dual dB partials');
  const { key, source } = dualShader(r, roles);
  backend.dispatch({
    key,
    source,
    buffers: [dy, b, t, wsU, wsB],
    uniform: uniform([M, N, nChunk, 0]),
    workgroups: [blocks, chunks, 1],
    label: `lora-dual r${r} ${roles}`,
  });
  const n4 = (M + N) * (r / 4);
  const { workgroups, gridX } = grid1d(n4);
  backend.dispatch({
    key: 'lora-dual-reduce',
    source: reduceSource,
    buffers: [wsU, wsB, u.buffer, dB.buffer],
    uniform: uniform([M * (r / 4), N * (r / 4), chunks, blocks, gridX, 0, 0, { f32: scale }]),
    workgroups,
    label: 'lora-dual reduce',
  });
  backend.release(wsU);
  backend.release(wsB);
  return { u, dB };
}
