import { type KernelOutput, type OpOutputs, registerKernel, sizeOf, type TensorRef, ValueError } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from '../backend';
import { recordSplitKReduce } from '../gemm/splitk';
import attentionDkdvSource from '../wgsl/attention-dkdv.wgsl';
import attentionDqSource from '../wgsl/attention-dq.wgsl';
import attentionForwardSource from '../wgsl/attention-forward.wgsl';
import decodeAttentionSource from '../wgsl/decode-attention.wgsl';
import gatedSource from '../wgsl/gated-act.wgsl';
import normSource from '../wgsl/rms-norm.wgsl';
import ropeSource from '../wgsl/rope.wgsl';
import softmaxSource from '../wgsl/softmax.wgsl';
import { type Args, buf, enableFor, generatedShader, grid1d, gridRows, out, shader, typeOf, uniform } from './common';

// The fused transformer-block ops: one dispatch each where the composition took five to twenty.

/**
 * `rmsNorm` ([x, weight] → y, rstd) or, with `backward` (dy and the saved rstd), its backward
 * ([dy, x, weight, rstd] → dx): one workgroup per row.
 */
function recordRmsNorm(
  backend: WebGPUBackend,
  x: TensorRef,
  weight: TensorRef,
  attrs: { eps?: number; offset: boolean },
  backward: { dy: TensorRef; rstd: TensorRef } | null,
): { y: GpuData; rstd: GpuData | null } {
  const op = backward ? 'rmsNormBackward' : 'rmsNorm';
  const t = typeOf(backend, x.dtype, op);
  const [rows, d] = x.shape;
  const y = backend.allocate(x.dtype, rows * d, `${op} out`);
  const rstd = backward ? null : backend.allocate(x.dtype, rows, 'rmsNorm rstd');
  const { workgroups, gridX } = gridRows(rows);
  const { key, source } = shader('rms-norm', normSource, { ENABLE: enableFor(t), T: t, BACKWARD: backward ? '1' : '0', RESIDUAL: '0' });
  if (rows > 0)
    backend.dispatch({
      key,
      source,
      constants: { OFFSET: attrs.offset ? 1 : 0 },
      buffers: [buf(x), buf(weight), y.buffer, backward ? buf(backward.rstd) : rstd!.buffer, backward ? buf(backward.dy) : null],
      uniform: uniform([rows, d, gridX, { f32: backward ? 0 : attrs.eps! }]),
      workgroups,
      label: op,
    });
  return { y, rstd };
}

function rmsNormKernel({ inputs: [x, weight], attrs, backend }: Args<'rmsNorm'>): OpOutputs['rmsNorm'] {
  const { y, rstd } = recordRmsNorm(backend, x, weight, attrs, null);
  return { y: out(y, [...x.shape], x.dtype), rstd: out(rstd!, [x.shape[0]], x.dtype) };
}

function rmsNormBackwardKernel({ inputs: [dy, x, weight, rstd], attrs, backend }: Args<'rmsNormBackward'>): KernelOutput {
  return out(recordRmsNorm(backend, x, weight, attrs, { dy, rstd }).y, [...x.shape], x.dtype);
}

/** `addRmsNorm` ([x, residual, weight] → sum, y): rms-norm.wgsl with RESIDUAL, one workgroup per row. */
function addRmsNormKernel({ inputs: [x, residual, weight], attrs, backend }: Args<'addRmsNorm'>): OpOutputs['addRmsNorm'] {
  const op = 'addRmsNorm';
  const t = typeOf(backend, x.dtype, op);
  const [rows, d] = x.shape;
  const y = backend.allocate(x.dtype, rows * d, `${op} y`);
  const sum = backend.allocate(x.dtype, rows * d, `${op} sum`);
  const { workgroups, gridX } = gridRows(rows);
  const { key, source } = shader('rms-norm', normSource, { ENABLE: enableFor(t), T: t, BACKWARD: '0', RESIDUAL: '1' });
  if (rows > 0 && d > 0)
    backend.dispatch({
      key,
      source,
      constants: { OFFSET: attrs.offset ? 1 : 0 },
      buffers: [buf(x), buf(weight), y.buffer, sum.buffer, buf(residual)],
      uniform: uniform([rows, d, gridX, { f32: attrs.eps }]),
      workgroups,
      label: op,
    });
  return { sum: out(sum, [rows, d], x.dtype), y: out(y, [rows, d], x.dtype) };
}

function ropeKernel({ inputs: [x, cos, sin], attrs, backend }: Args<'rope'>): KernelOutput {
  const t = typeOf(backend, x.dtype, 'rope');
  const [B, H, T, dh] = attrs.transposeIn ? [x.shape[0], x.shape[2], x.shape[1], x.shape[3]] : x.shape;
  const n = sizeOf(x.shape);
  const y = backend.allocate(x.dtype, n, 'rope out');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('rope', ropeSource, { ENABLE: enableFor(t), T: t });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      constants: {
        INVERSE: attrs.inverse ? 1 : 0,
        PER_SEQ: cos.shape.length === 4 ? 1 : 0,
        IN_BTHD: attrs.transposeIn ? 1 : 0,
        OUT_BTHD: attrs.transposeOut ? 1 : 0,
      },
      buffers: [buf(x), buf(cos), buf(sin), y.buffer],
      uniform: uniform([n, dh, cos.shape[cos.shape.length - 1], T, H, gridX]),
      workgroups,
      label: 'rope',
    });
  return out(y, attrs.transposeOut ? [B, T, H, dh] : [B, H, T, dh], x.dtype);
}

/** `gatedActivation` ([gate, up] → act(gate)·up) or, given dy, its backward (→ dGate, dUp). */
function recordGated(
  backend: WebGPUBackend,
  gate: TensorRef,
  up: TensorRef,
  activation: 'silu' | 'gelu_tanh',
  dy: TensorRef | null,
): { first: GpuData; dUp: GpuData | null } {
  const backward = dy !== null;
  const t = typeOf(backend, gate.dtype, backward ? 'gatedActivationBackward' : 'gatedActivation');
  const n = sizeOf(gate.shape);
  const first = backend.allocate(gate.dtype, n, backward ? 'gatedActivation dGate' : 'gatedActivation out');
  const dUp = backward ? backend.allocate(gate.dtype, n, 'gatedActivation dUp') : null;
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('gated-act', gatedSource, { ENABLE: enableFor(t), T: t, BACKWARD: backward ? '1' : '0' });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      constants: { ACT: activation === 'silu' ? 0 : 1 },
      buffers: [buf(gate), buf(up), first.buffer, dy ? buf(dy) : null, dUp ? dUp.buffer : null],
      uniform: uniform([n, gridX]),
      workgroups,
      label: backward ? 'gatedActivationBackward' : 'gatedActivation',
    });
  return { first, dUp };
}

function gatedKernel({ inputs: [gate, up], attrs, backend }: Args<'gatedActivation'>): KernelOutput {
  return out(recordGated(backend, gate, up, attrs.activation, null).first, [...gate.shape], gate.dtype);
}

function gatedBackwardKernel({ inputs: [dy, gate, up], attrs, backend }: Args<'gatedActivationBackward'>): OpOutputs['gatedActivationBackward'] {
  const { first, dUp } = recordGated(backend, gate, up, attrs.activation, dy);
  const shape = [...gate.shape];
  return { dGate: out(first, shape, gate.dtype), dUp: out(dUp!, shape, gate.dtype) };
}

/** `maskedSoftmax` ([x, mask]) and its backward ([dy, y]): one workgroup per row of the last axis. */
function maskedSoftmaxKernel<K extends 'maskedSoftmax' | 'maskedSoftmaxBackward'>(backward: K extends 'maskedSoftmaxBackward' ? true : false) {
  return ({ inputs: [a, b], attrs, backend }: Args<K>): KernelOutput => {
    const op = backward ? 'maskedSoftmaxBackward' : 'maskedSoftmax';
    const [x, mask] = backward ? [b, a] : [a, b]; // backward: y in the x slot, dy in the mask slot
    const t = typeOf(backend, x.dtype, op);
    const n = sizeOf(x.shape);
    const [T, S] = x.shape.slice(-2);
    const rows = S > 0 ? n / S : 0;
    const perSeq = !backward && mask.shape.length > 2; // a [T, S] mask is shared, whatever x's rank
    const y = backend.allocate(x.dtype, n, op);
    const { workgroups, gridX } = gridRows(rows);
    const { key, source } = shader('softmax', softmaxSource, { ENABLE: enableFor(t), T: t, MASK: '1', BACKWARD: backward ? '1' : '0' });
    if (rows > 0)
      backend.dispatch({
        key,
        source,
        constants: backward ? {} : { PER_SEQ: perSeq ? 1 : 0 },
        buffers: [buf(x), buf(mask), y.buffer],
        uniform: uniform([rows, S, T, perSeq ? rows / x.shape[0] : rows, gridX, { f32: attrs.scale }]),
        workgroups,
        label: op,
      });
    return out(y, [...x.shape], x.dtype);
  };
}

/** The largest power of two from 4 to 32 with `n · dv4 ≤ budget` (vec4): rows or keys per chunk of whole heads. */
function chunkRows(dv4: number, budget: number): number {
  let n = 32;
  while (n > 4 && n * dv4 > budget) n /= 2;
  return n;
}

/**
 * WGSL functions `load_<name>(row, d)`: features d..d+3 of a row of the bound tensor as vec4<f32>,
 * zeros past D; with `keyed`, also `fetch_keys(keys, j, i)`: thread i's share (vec4 i + 128·u) of
 * the VK rows of that tensor from key j, zeros past S, for lib/attention-key-chunks.wgsl.
 */
function attentionLoads(names: string[], keyed?: string): string {
  const fetch = keyed
    ? `
fn fetch_keys(keys: u32, j: u32, i: u32) -> array<vec4<f32>, VPT> {
  var x: array<vec4<f32>, VPT>;
  for (var u = 0u; u < VPT; u++) {
    let e = i + 128u * u;
    x[u] = vec4<f32>(0.0);
    if (e < VK * DV4 && j + e / DV4 < p.S) { x[u] = load_${keyed}(keys + j + e / DV4, 4u * (e % DV4)); }
  }
  return x;
}`
    : '';
  return `${names
    .map(
      (n) => `fn load_${n}(row: u32, d: u32) -> vec4<f32> {
  let base = row * D + d;
  if (d + 4u <= D) { return vec4<f32>(f32(${n}[base]), f32(${n}[base + 1u]), f32(${n}[base + 2u]), f32(${n}[base + 3u])); }
  var x = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) { if (d + e < D) { x[e] = f32(${n}[base + e]); } }
  return x;
}`,
    )
    .join('\n')}${fetch}`;
}

/**
 * What the three attention kernels share: the checked sizes, the uniform, the text constants and
 * the mask's override. Heads of at most 256 features (an output row's vec4 spread over 16 lanes,
 * at most 4 each); each kernel holds 16 KiB of workgroup memory, WebGPU's guaranteed minimum.
 */
function attentionSetup(backend: WebGPUBackend, op: string, q: TensorRef, k: TensorRef, mask: TensorRef, attrs: { scale: number; causal: boolean }) {
  const t = typeOf(backend, q.dtype, op);
  const [B, H, R, D] = q.shape;
  const S = k.shape[2];
  const T = mask.shape[mask.shape.length - 2];
  if (D > 256) throw new ValueError(op, 'the webgpu kernels take heads of at most 256 features', 'D ≤ 256', String(D));
  if (B * H > 65535) throw new ValueError(op, 'batch · heads is too large for one dispatch', 'B·H ≤ 65535', String(B * H));
  if (Math.ceil(Math.max(R, S) / 32) > 65535)
    throw new ValueError(op, 'too many query rows or keys for one dispatch', `R and S ≤ ${65535 * 32}`, `R ${R}, S ${S}`);
  const DV4 = Math.max(1, Math.ceil(D / 4));
  const vk = chunkRows(DV4, 512);
  /** vec4 per thread (of 128) of a chunk of `n` rows of whole heads. */
  const perThread = (n: number) => Math.ceil((n * DV4) / 128);
  const vr = chunkRows(DV4, 256);
  const sizes = { ENABLE: enableFor(t), T: t, D: String(D), DV4: String(DV4), ON: String(Math.ceil(DV4 / 16)) };
  /** The kernel's specialized text, keyed by its few parameters (the loads are generated once). */
  const kernel = (name: string, template: string, loads: string[], extra: Record<string, string>, keyed?: string) =>
    generatedShader(name, template, { t, D, ...extra }, () => ({ ...sizes, ...extra, LOADS: attentionLoads(loads, keyed) }));
  return {
    t,
    B,
    H,
    R,
    D,
    S,
    forward: () => kernel('attention-forward', attentionForwardSource, ['q', 'k', 'v'], { VK: String(vk), VPT: String(perThread(vk)) }, 'v'),
    dq: () => kernel('attention-dq', attentionDqSource, ['q', 'k', 'v', 'y', 'dy'], { VK: String(vk), VPT: String(perThread(vk)) }, 'k'),
    dkdv: (split: boolean) =>
      kernel('attention-dkdv', attentionDkdvSource, ['q', 'k', 'v', 'dy'], { VR: String(vr), RPT: String(perThread(vr)), SPLIT: split ? '1' : '0' }),
    constants: { PER_SEQ: mask.shape.length > 2 ? 1 : 0 },
    /** The uniform, with attention-dkdv's parts of `partRows` rows and workspaces of `partStride` elements each. */
    params: (partRows = 0, partStride = 0) => uniform([R, S, T, H, attrs.causal ? 1 : 0, partRows, partStride, { f32: attrs.scale }]),
  };
}

/** `attention`: flash-style forward, 32 rows per workgroup, scores never stored (attention-forward.wgsl). */
function attentionKernel({ inputs: [q, k, v, mask], attrs, backend }: Args<'attention'>): OpOutputs['attention'] {
  const op = 'attention';
  const { B, H, R, D, forward, constants, params } = attentionSetup(backend, op, q, k, mask, attrs);
  const y = backend.allocate(q.dtype, B * H * R * D, `${op} out`);
  const lse = backend.allocate('float32', B * H * R, `${op} logsumexp`);
  if (B * H * R > 0 && D > 0)
    backend.dispatch({
      ...forward(),
      constants,
      buffers: [buf(q), buf(k), buf(v), buf(mask), y.buffer, lse.buffer],
      uniform: params(),
      workgroups: [Math.ceil(R / 32), B * H, 1],
      label: op,
    });
  return { y: out(y, [...q.shape], q.dtype), lse: out(lse, [B, H, R], 'float32') };
}

/**
 * How attention-dkdv splits the rows: into parts of `partRows` rows (a multiple of 32) so that at
 * least ~1024 workgroups run where few keys and heads would leave the GPU idle (SmolLM2's 3 KV
 * heads at batch 4: 192 blocks of keys); one part where the keys fill it.
 */
export function attentionKeySplit(R: number, S: number, heads: number): { parts: number; partRows: number } {
  const rowBlocks = Math.max(1, Math.ceil(R / 32));
  const wanted = Math.min(rowBlocks, Math.ceil(1024 / Math.max(1, Math.ceil(S / 32) * heads)));
  const partRows = 32 * Math.ceil(rowBlocks / Math.max(1, wanted));
  return { parts: Math.ceil(rowBlocks / (partRows / 32)), partRows };
}

/**
 * `attentionBackward`: dq (and each row's Σ dy·y) by blocks of rows, then dk and dv by blocks of
 * keys (attention-dq.wgsl, attention-dkdv.wgsl), split over the rows where the keys are few and
 * the parts added up by the split-K reduction.
 */
function attentionBackwardKernel({ inputs: [q, k, v, mask, y, lse, dy], attrs, backend }: Args<'attentionBackward'>): OpOutputs['attentionBackward'] {
  const op = 'attentionBackward';
  const { t, B, H, R, D, S, dq: dqShader, dkdv: dkdvShader, constants, params } = attentionSetup(backend, op, q, k, mask, attrs);
  const dq = backend.allocate(q.dtype, B * H * R * D, 'attention dq');
  const dk = backend.allocate(q.dtype, B * H * S * D, 'attention dk');
  const dv = backend.allocate(q.dtype, B * H * S * D, 'attention dv');
  if (B * H * R > 0 && D > 0) {
    const dsum = backend.acquire(B * H * R * 4, 'attention Σ dy·y');
    backend.dispatch({
      ...dqShader(),
      constants,
      buffers: [buf(q), buf(k), buf(v), buf(mask), buf(y), buf(lse), buf(dy), dq.buffer, dsum],
      uniform: params(),
      workgroups: [Math.ceil(R / 32), B * H, 1],
      label: 'attention dq',
    });
    const { parts, partRows } = attentionKeySplit(R, S, B * H);
    const n = B * H * S * D;
    const split = parts > 1;
    const [wk, wv] = split
      ? [backend.acquire(parts * n * 4, 'attention dk parts'), backend.acquire(parts * n * 4, 'attention dv parts')]
      : [dk.buffer, dv.buffer];
    backend.dispatch({
      ...dkdvShader(split),
      constants,
      buffers: [buf(q), buf(k), buf(v), buf(mask), buf(lse), dsum, buf(dy), wk, wv],
      uniform: params(partRows, split ? n : 0),
      workgroups: [Math.ceil(S / 32), B * H, split ? parts : 1],
      label: 'attention dk dv',
    });
    if (split) {
      const shape = { M: B * H * S, N: D, batch: 1 };
      for (const [ws, c, alpha, label] of [
        [wk, dk.buffer, attrs.scale, 'attention dk reduce'],
        [wv, dv.buffer, 1, 'attention dv reduce'],
      ] as const) {
        recordSplitKReduce(backend, shape, { c, alpha, beta: 0 }, t, ws, parts, label);
        backend.release(ws);
      }
    }
    backend.release(dsum);
  }
  return { dq: out(dq, [...q.shape], q.dtype), dk: out(dk, [...k.shape], q.dtype), dv: out(dv, [...k.shape], q.dtype) };
}

/** `decodeAttention`: one workgroup per query row (decode-attention.wgsl). */
function decodeAttentionKernel({ inputs: [q, k, v, mask], attrs, backend }: Args<'decodeAttention'>): KernelOutput {
  const op = 'decodeAttention';
  const t = typeOf(backend, q.dtype, op);
  const [B, H, R, D] = q.shape;
  const S = k.shape[2];
  if (D > 256) throw new ValueError(op, 'the webgpu kernel takes heads of at most 256 features', 'D ≤ 256', String(D));
  const rows = B * H * R;
  const y = backend.allocate(q.dtype, rows * D, op);
  const { workgroups, gridX } = gridRows(rows);
  const { key, source } = shader('decode-attention', decodeAttentionSource, { ENABLE: enableFor(t), T: t });
  if (rows > 0 && D > 0)
    backend.dispatch({
      key,
      source,
      constants: { PER_SEQ: mask.shape.length > 2 ? 1 : 0 },
      buffers: [buf(q), buf(k), buf(v), buf(mask), y.buffer],
      uniform: uniform([rows, S, D, R, mask.shape[mask.shape.length - 2], H * R, gridX, { f32: attrs.scale }]),
      workgroups,
      label: op,
    });
  return out(y, [...q.shape], q.dtype);
}

export function registerBlockKernels(): void {
  registerKernel('webgpu', 'decodeAttention', decodeAttentionKernel);
  registerKernel('webgpu', 'attention', attentionKernel);
  registerKernel('webgpu', 'attentionBackward', attentionBackwardKernel);
  registerKernel('webgpu', 'maskedSoftmax', maskedSoftmaxKernel<'maskedSoftmax'>(false));
  registerKernel('webgpu', 'maskedSoftmaxBackward', maskedSoftmaxKernel<'maskedSoftmaxBackward'>(true));
  registerKernel('webgpu', 'rmsNorm', rmsNormKernel);
  registerKernel('webgpu', 'rmsNormBackward', rmsNormBackwardKernel);
  registerKernel('webgpu', 'addRmsNorm', addRmsNormKernel);
  registerKernel('webgpu', 'rope', ropeKernel);
  registerKernel('webgpu', 'gatedActivation', gatedKernel);
  registerKernel('webgpu', 'gatedActivationBackward', gatedBackwardKernel);
}
