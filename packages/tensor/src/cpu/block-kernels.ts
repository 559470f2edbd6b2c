import { type KernelArgs, type KernelOutput, registerKernel, type TensorRef } from '../backend';
import { GELU_TANH_C, gelu, sigmoid } from '../math';
import { type StorageArray, toStorage, type ValueArray } from '../dtype';
import { ValueError } from '../errors';
import type { OpName, OpOutputs } from '../ops/op-names';
import type { CpuBackend } from './backend';

// Reference kernels of the fused transformer-block ops: float64 for float64 inputs, f32 otherwise
// (`backend.alloc` gives the float dtypes' compute arrays).
type Args<K extends OpName> = KernelArgs<K, CpuBackend>;

/** y = x·rstd·w per row, rstd = 1/√(mean(x²) + eps), from x's compute values. */
function normRows(
  xv: ArrayLike<number>,
  wv: ArrayLike<number>,
  rows: number,
  D: number,
  attrs: { eps: number; offset: boolean },
  y: ValueArray,
  rstd: ValueArray,
) {
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < D; j++) ss += xv[r * D + j] ** 2;
    rstd[r] = 1 / Math.sqrt(ss / D + attrs.eps);
    for (let j = 0; j < D; j++) y[r * D + j] = xv[r * D + j] * rstd[r] * (attrs.offset ? 1 + wv[j] : wv[j]);
  }
}

function rmsNormKernel({ inputs: [x, weight], attrs, backend }: Args<'rmsNorm'>): OpOutputs['rmsNorm'] {
  const [rows, D] = x.shape;
  const y = backend.alloc(x.dtype, rows * D);
  const rstd = backend.alloc(x.dtype, rows);
  normRows(backend.values(x), backend.values(weight), rows, D, attrs, y, rstd);
  return { y: backend.output(y, [rows, D], x.dtype), rstd: backend.output(rstd, [rows], x.dtype) };
}

/** sum = x + residual, then RMSNorm of the sum (the rmsNorm kernel's loop on the sum). */
function addRmsNormKernel({ inputs: [x, residual, weight], attrs, backend }: Args<'addRmsNorm'>): OpOutputs['addRmsNorm'] {
  const [rows, D] = x.shape;
  const [xv, rv] = [x, residual].map((t) => backend.values(t));
  const sum = backend.alloc(x.dtype, rows * D);
  for (let i = 0; i < sum.length; i++) sum[i] = xv[i] + rv[i];
  const y = backend.alloc(x.dtype, rows * D);
  normRows(sum, backend.values(weight), rows, D, attrs, y, backend.alloc(x.dtype, rows));
  return { sum: backend.output(sum, [rows, D], x.dtype), y: backend.output(y, [rows, D], x.dtype) };
}

/** dx = rstd·(h − n·mean(h·n)) with n = x·rstd, h = dy·w. */
function rmsNormBackwardKernel({ inputs: [dy, x, weight, rstd], attrs, backend }: Args<'rmsNormBackward'>): KernelOutput {
  const [rows, D] = x.shape;
  const [dyv, xv, wv, rv] = [dy, x, weight, rstd].map((t) => backend.values(t));
  const dx = backend.alloc(x.dtype, rows * D);
  for (let r = 0; r < rows; r++) {
    let dot = 0;
    for (let j = 0; j < D; j++) dot += dyv[r * D + j] * (attrs.offset ? 1 + wv[j] : wv[j]) * xv[r * D + j] * rv[r];
    const mean = dot / D;
    for (let j = 0; j < D; j++) {
      const h = dyv[r * D + j] * (attrs.offset ? 1 + wv[j] : wv[j]);
      dx[r * D + j] = rv[r] * (h - xv[r * D + j] * rv[r] * mean);
    }
  }
  return backend.output(dx, [rows, D], x.dtype);
}

/**
 * y[j] = x[j]·cos[j] + rot[j] with rot[j] = −x[j+h]·sin[j] (j < h) or x[j−h]·sin[j] (h ≤ j < R);
 * inverse: rot[j] = x[j+h]·sin[j+h] (j < h) or −x[j−h]·sin[j−h], the transposed rotation.
 */
function ropeKernel({ inputs: [x, cos, sin], attrs, backend }: Args<'rope'>): KernelOutput {
  const [B, H, T, Dh] = attrs.transposeIn ? [x.shape[0], x.shape[2], x.shape[1], x.shape[3]] : x.shape;
  const offset = (transposed: boolean, b: number, h: number, t: number) => (transposed ? ((b * T + t) * H + h) * Dh : ((b * H + h) * T + t) * Dh);
  const R = cos.shape[cos.shape.length - 1];
  const perSequence = cos.shape.length === 4;
  const [xv, cv, sv] = [x, cos, sin].map((t) => backend.values(t));
  const y = backend.alloc(x.dtype, xv.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < T; t++) {
        const base = offset(attrs.transposeIn, b, h, t);
        const to = offset(attrs.transposeOut, b, h, t);
        const table = ((perSequence ? b : 0) * T + t) * R;
        rotateRow(xv, base, cv, sv, table, R, Dh, attrs.inverse, y, to);
      }
  return backend.output(y, attrs.transposeOut ? [B, T, H, Dh] : [B, H, T, Dh], x.dtype);
}

/** One head's row of Dh features from xv[base..] rotated by the table row at `table`, into y[to..]. */
function rotateRow(
  xv: ArrayLike<number>,
  base: number,
  cv: ArrayLike<number>,
  sv: ArrayLike<number>,
  table: number,
  R: number,
  Dh: number,
  inverse: boolean,
  y: ValueArray,
  to: number,
): void {
  const half = R / 2;
  for (let j = 0; j < Dh; j++) {
    if (j >= R) {
      y[to + j] = xv[base + j];
      continue;
    }
    const other = j < half ? j + half : j - half;
    const sign = j < half ? -1 : 1;
    const rot = inverse ? -sign * xv[base + other] * sv[table + other] : sign * xv[base + other] * sv[table + j];
    y[to + j] = xv[base + j] * cv[table + j] + rot;
  }
}

/**
 * `writeKV`: k (rotated when tables are given) and v, `[B, T, H, D]`, into the storage of keys and
 * values `[B, H, S, D]` from the start slot (refused past the end).
 */
function writeKVKernel({ inputs: [keys, values, k, v, start, cos, sin], backend }: Args<'writeKV'>): OpOutputs['writeKV'] {
  const [B, H, S, D] = keys.shape;
  const T = k.shape[1];
  const at = (start.data as StorageArray)[0];
  if (!(at >= 0 && at + T <= S)) throw new ValueError('writeKV', 'start puts the slots past the end of the cache', `a start in 0..${S - T}`, String(at));
  const kv = backend.values(k);
  const vv = backend.values(v);
  const tables =
    cos && sin ? { cv: backend.values(cos), sv: backend.values(sin), R: cos.shape[cos.shape.length - 1], perSequence: cos.shape.length === 4 } : null;
  const row = backend.alloc(k.dtype, D);
  const [kd, vd] = [keys, values].map((t) => t.data as StorageArray);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++) {
        const from = ((b * T + t) * H + h) * D;
        const to = ((b * H + h) * S + at + t) * D;
        if (tables) rotateRow(kv, from, tables.cv, tables.sv, ((tables.perSequence ? b : 0) * T + t) * tables.R, tables.R, D, false, row, 0);
        else row.set(kv.subarray(from, from + D));
        kd.set(toStorage(row, k.dtype), to);
        vd.set(toStorage(vv.subarray(from, from + D), v.dtype), to);
      }
  return {};
}

function activation(name: 'silu' | 'gelu_tanh', g: number): { value: number; slope: number } {
  if (name === 'silu') {
    const s = sigmoid(g);
    return { value: g * s, slope: s * (1 + g * (1 - s)) };
  }
  const t = Math.tanh(GELU_TANH_C * (g + 0.044715 * g ** 3));
  return { value: gelu(g, 'tanh'), slope: 0.5 * (1 + t) + 0.5 * g * (1 - t * t) * GELU_TANH_C * (1 + 3 * 0.044715 * g * g) };
}

function gatedActivationKernel({ inputs: [gate, up], attrs, backend }: Args<'gatedActivation'>): KernelOutput {
  const [gv, uv] = [gate, up].map((t) => backend.values(t));
  const y = backend.alloc(gate.dtype, gv.length);
  for (let i = 0; i < gv.length; i++) y[i] = activation(attrs.activation, gv[i]).value * uv[i];
  return backend.output(y, [...gate.shape], gate.dtype);
}

function gatedActivationBackwardKernel({ inputs: [dy, gate, up], attrs, backend }: Args<'gatedActivationBackward'>): OpOutputs['gatedActivationBackward'] {
  const [dyv, gv, uv] = [dy, gate, up].map((t) => backend.values(t));
  const dGate = backend.alloc(gate.dtype, gv.length);
  const dUp = backend.alloc(gate.dtype, gv.length);
  for (let i = 0; i < gv.length; i++) {
    const { value, slope } = activation(attrs.activation, gv[i]);
    dGate[i] = dyv[i] * uv[i] * slope;
    dUp[i] = dyv[i] * value;
  }
  return { dGate: backend.output(dGate, [...gate.shape], gate.dtype), dUp: backend.output(dUp, [...gate.shape], gate.dtype) };
}

/** Rows of the last axis; a per-sequence mask's rows are those of its batch entry. */
function maskedSoftmaxKernel({ inputs: [x, mask], attrs, backend }: Args<'maskedSoftmax'>): KernelOutput {
  const [T, S] = x.shape.slice(-2);
  const [xv, mv] = [x, mask].map((t) => backend.values(t));
  const rows = xv.length / S;
  // A per-sequence mask has rank > 2 (validated: [B, 1, …, 1, T, S]); a [T, S] one is shared.
  const perSequence = mask.shape.length > 2;
  const perBatch = perSequence ? rows / x.shape[0] : rows;
  const y = backend.alloc(x.dtype, xv.length);
  for (let r = 0; r < rows; r++) {
    const m = ((perSequence ? Math.floor(r / perBatch) * T : 0) + (r % T)) * S;
    let mx = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < S; j++) mx = Math.max(mx, xv[r * S + j] * attrs.scale + mv[m + j]);
    let total = 0;
    for (let j = 0; j < S; j++) total += Math.exp(xv[r * S + j] * attrs.scale + mv[m + j] - mx);
    for (let j = 0; j < S; j++) y[r * S + j] = Math.exp(xv[r * S + j] * attrs.scale + mv[m + j] - mx) / total;
  }
  return backend.output(y, [...x.shape], x.dtype);
}

function maskedSoftmaxBackwardKernel({ inputs: [dy, y], attrs, backend }: Args<'maskedSoftmaxBackward'>): KernelOutput {
  const S = y.shape[y.shape.length - 1];
  const [dyv, yv] = [dy, y].map((t) => backend.values(t));
  const dx = backend.alloc(y.dtype, yv.length);
  for (let r = 0; r < yv.length / S; r++) {
    let dot = 0;
    for (let j = 0; j < S; j++) dot += dyv[r * S + j] * yv[r * S + j];
    for (let j = 0; j < S; j++) dx[r * S + j] = attrs.scale * yv[r * S + j] * (dyv[r * S + j] - dot);
  }
  return backend.output(dx, [...y.shape], y.dtype);
}

/** `decodeAttention`: per query row, the masked softmax of its scores and their weighted sum of v (float64). */
function decodeAttentionKernel({ inputs: [q, k, v, mask], attrs, backend }: Args<'decodeAttention'>): KernelOutput {
  const [B, H, R, D] = q.shape;
  const S = k.shape[2];
  const T = mask.shape[mask.shape.length - 2];
  const perSequence = mask.shape.length > 2;
  const [qv, kv, vv, mv] = [q, k, v, mask].map((t) => backend.values(t));
  const y = backend.alloc(q.dtype, qv.length);
  const scores = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let r = 0; r < R; r++) {
        const row = (b * H + h) * R + r;
        const keys = (b * H + h) * S * D;
        const m = ((perSequence ? b * T : 0) + (r % T)) * S;
        let mx = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < S; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qv[row * D + d] * kv[keys + j * D + d];
          scores[j] = dot * attrs.scale + mv[m + j];
          mx = Math.max(mx, scores[j]);
        }
        let total = 0;
        for (let j = 0; j < S; j++) total += scores[j] = Math.exp(scores[j] - mx);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < S; j++) acc += scores[j] * vv[keys + j * D + d];
          y[row * D + d] = acc / total;
        }
      }
  return backend.output(y, [...q.shape], q.dtype);
}

/** Scores at or below this count as −∞ in `attention` (as in its WGSL, whose sentinel it is). */
const ATTENTION_EXCLUDED = -3e38;

/** Attention's index arithmetic, shared by its forward and backward reference kernels. */
function attentionLayout(q: TensorRef, k: TensorRef, mask: TensorRef, causal: boolean) {
  const [B, H, R, D] = q.shape;
  const S = k.shape[2];
  const T = mask.shape[mask.shape.length - 2];
  const perSequence = mask.shape.length > 2;
  return {
    B,
    H,
    R,
    D,
    S,
    visible: (r: number, j: number) => !causal || j + T <= (r % T) + S,
    /** Calls `fn` for each query row: its index, the offset of its keys, its mask row and r. */
    eachRow(fn: (row: number, keys: number, m: number, r: number) => void): void {
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++) for (let r = 0; r < R; r++) fn((b * H + h) * R + r, (b * H + h) * S * D, ((perSequence ? b * T : 0) + (r % T)) * S, r);
    },
  };
}

/**
 * `attention` in float64: per row, the scores it sees (−∞ for the keys `causal` leaves out), their
 * softmax's weighted sum of v, and their log-sum-exp (+∞ for a row that sees no key, whose output is 0).
 */
function attentionKernel({ inputs: [q, k, v, mask], attrs, backend }: Args<'attention'>): OpOutputs['attention'] {
  const { B, H, R, D, S, visible, eachRow } = attentionLayout(q, k, mask, attrs.causal);
  const [qv, kv, vv, mv] = [q, k, v, mask].map((t) => backend.values(t));
  const y = backend.alloc(q.dtype, qv.length);
  const lseType = q.dtype === 'float64' ? 'float64' : 'float32';
  const lse = backend.alloc(lseType, B * H * R);
  const scores = new Float64Array(S);
  eachRow((row, keys, m, r) => {
    let mx = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < S; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += qv[row * D + d] * kv[keys + j * D + d];
      const score = dot * attrs.scale + mv[m + j];
      scores[j] = visible(r, j) && score > ATTENTION_EXCLUDED ? score : Number.NEGATIVE_INFINITY;
      mx = Math.max(mx, scores[j]);
    }
    let total = 0;
    for (let j = 0; j < S; j++) total += scores[j] = mx === Number.NEGATIVE_INFINITY ? 0 : Math.exp(scores[j] - mx);
    lse[row] = total > 0 ? mx + Math.log(total) : Number.POSITIVE_INFINITY;
    for (let d = 0; d < D; d++) {
      let acc = 0;
      for (let j = 0; j < S; j++) acc += scores[j] * vv[keys + j * D + d];
      y[row * D + d] = total > 0 ? acc / total : 0;
    }
  });
  return { y: backend.output(y, [...q.shape], q.dtype), lse: backend.output(lse, [B, H, R], lseType) };
}

/** `attentionBackward` in float64: P from the saved log-sum-exp, dS = P·(dy·vᵀ − Σ dy·y), dq = scale·dS·k, dk = scale·dSᵀ·q, dv = Pᵀ·dy. */
function attentionBackwardKernel({ inputs: [q, k, v, mask, y, lse, dy], attrs, backend }: Args<'attentionBackward'>): OpOutputs['attentionBackward'] {
  const { D, S, visible, eachRow } = attentionLayout(q, k, mask, attrs.causal);
  const [qv, kv, vv, mv, yv, lv, gv] = [q, k, v, mask, y, lse, dy].map((t) => backend.values(t));
  const dq = backend.alloc(q.dtype, qv.length);
  const dk = backend.alloc(q.dtype, kv.length);
  const dv = backend.alloc(q.dtype, kv.length);
  eachRow((row, keys, m, r) => {
    let delta = 0;
    for (let d = 0; d < D; d++) delta += gv[row * D + d] * yv[row * D + d];
    for (let j = 0; j < S; j++) {
      if (!visible(r, j)) continue;
      let dot = 0;
      let dp = 0;
      for (let d = 0; d < D; d++) {
        dot += qv[row * D + d] * kv[keys + j * D + d];
        dp += gv[row * D + d] * vv[keys + j * D + d];
      }
      const score = dot * attrs.scale + mv[m + j];
      if (score <= ATTENTION_EXCLUDED) continue;
      const p = Math.exp(score - lv[row]);
      const ds = p * (dp - delta) * attrs.scale;
      for (let d = 0; d < D; d++) {
        dq[row * D + d] += ds * kv[keys + j * D + d];
        dk[keys + j * D + d] += ds * qv[row * D + d];
        dv[keys + j * D + d] += p * gv[row * D + d];
      }
    }
  });
  const shape = (t: TensorRef) => [...t.shape];
  return { dq: backend.output(dq, shape(q), q.dtype), dk: backend.output(dk, shape(k), q.dtype), dv: backend.output(dv, shape(k), q.dtype) };
}

export function registerCpuBlockKernels(): void {
  registerKernel('cpu', 'attention', attentionKernel);
  registerKernel('cpu', 'attentionBackward', attentionBackwardKernel);
  registerKernel('cpu', 'decodeAttention', decodeAttentionKernel);
  registerKernel('cpu', 'maskedSoftmax', maskedSoftmaxKernel);
  registerKernel('cpu', 'maskedSoftmaxBackward', maskedSoftmaxBackwardKernel);
  registerKernel('cpu', 'rmsNorm', rmsNormKernel);
  registerKernel('cpu', 'rmsNormBackward', rmsNormBackwardKernel);
  registerKernel('cpu', 'addRmsNorm', addRmsNormKernel);
  registerKernel('cpu', 'rope', ropeKernel);
  registerKernel('cpu', 'writeKV', writeKVKernel);
  registerKernel('cpu', 'gatedActivation', gatedActivationKernel);
  registerKernel('cpu', 'gatedActivationBackward', gatedActivationBackwardKernel);
}
