/**
 * The derivative of every differentiable op, in one table (as tinygrad keeps its derivatives):
 * each rule turns the output's gradient into its inputs' gradients, written with other ops so it
 * runs on every backend. A forward pass records its op by name (`recordOp`) with the tensors the
 * rule reads and a context (`gradient-contexts.ts`); the package entry installs this table. Kept
 * apart from the ops, which would otherwise import each other for their gradients.
 */
import { runOp } from '../dispatch';
import { setGradientTable } from '../engine';
import { GELU_TANH_C } from '../math';
import { full, type Tensor } from '../tensor';
import { add, cast, div, equal, erf, exp, greater, less, log, mul, neg, pow, sigmoid, sub, tanh, where } from './elementwise';
import type { BinaryContext, GradientRule, GradientTable } from './gradient-contexts';
import { freeing } from './helpers';
import { gather, scatterAdd } from './indexing';
import { pad, reshape, slice, transpose } from './layout';
import { matmul } from './matmul';
import { broadcastTo, sum, sumToShape } from './reduce';

/**
 * A broadcasting binary op's rule: the gradients in the output's shape (only the wanted ones need
 * be computed), each summed back to its operand's shape here.
 */
function broadcasting(
  rule: (dy: Tensor, saved: readonly Tensor[], needA: boolean, needB: boolean) => [Tensor | null, Tensor | null],
): GradientRule<BinaryContext> {
  return (dy, saved, { aShape, bShape, needA, needB }) => {
    const [ga, gb] = rule(dy, saved, needA, needB);
    return [needA && ga ? sumToShape(ga, aShape, ga !== dy) : null, needB && gb ? sumToShape(gb, bShape, gb !== dy) : null];
  };
}

const GRADIENTS: GradientTable = {
  neg: (dy) => [neg(dy)],
  exp: (dy, [y]) => [mul(dy, y)],
  log: (dy, [x]) => [div(dy, x)],
  sqrt: (dy, [y]) => {
    const twice = mul(y, 2);
    return [freeing(div(dy, twice), twice)];
  },
  tanh: (dy, [y]) => {
    const y2 = mul(y, y);
    const d = sub(1, y2);
    return [freeing(mul(dy, d), y2, d)];
  },
  sigmoid: (dy, [y]) => {
    const one = sub(1, y);
    const d = mul(y, one);
    return [freeing(mul(dy, d), one, d)];
  },
  silu: (dy, [x]) => {
    // d/dx = s·(1 + x·(1 − s))
    const s = sigmoid(x);
    const oneMinus = sub(1, s);
    const xo = mul(x, oneMinus);
    const inner = add(xo, 1);
    const d = mul(s, inner);
    return [freeing(mul(dy, d), s, oneMinus, xo, inner, d)];
  },
  relu: (dy, [x]) => {
    const pos = greater(x, 0);
    const mask = cast(pos, dy.dtype);
    return [freeing(mul(dy, mask), pos, mask)];
  },
  erf: (dy, [x]) => {
    const x2 = mul(x, x);
    const nx2 = neg(x2);
    const e = exp(nx2);
    const d = mul(e, 2 / Math.sqrt(Math.PI));
    return [freeing(mul(dy, d), x2, nx2, e, d)];
  },
  abs: (dy, [x]) => {
    const p = greater(x, 0);
    const n = less(x, 0);
    const pf = cast(p, dy.dtype);
    const nf = cast(n, dy.dtype);
    const sign = sub(pf, nf);
    return [freeing(mul(dy, sign), p, n, pf, nf, sign)];
  },
  gelu: (dy, [x], { approximate }) => {
    const temps: Tensor[] = [];
    const t = <T extends Tensor>(v: T): T => {
      temps.push(v);
      return v;
    };
    let d: Tensor;
    if (approximate === 'none') {
      // Φ(x) + x·φ(x)
      const cdf = t(mul(t(add(t(erf(t(mul(x, Math.SQRT1_2)))), 1)), 0.5));
      const pdf = t(mul(t(exp(t(mul(t(mul(x, x)), -0.5)))), 1 / Math.sqrt(2 * Math.PI)));
      d = t(add(cdf, t(mul(x, pdf))));
    } else {
      const x2 = t(mul(x, x));
      const u = t(mul(t(add(t(mul(x2, 0.044715)), 1)), t(mul(x, GELU_TANH_C)))); // c·(x + 0.044715·x³)
      const th = t(tanh(u));
      const du = t(mul(t(add(t(mul(x2, 3 * 0.044715)), 1)), GELU_TANH_C));
      const left = t(mul(t(add(th, 1)), 0.5));
      const right = t(mul(t(mul(t(mul(x, 0.5)), t(sub(1, t(mul(th, th)))))), du));
      d = t(add(left, right));
    }
    return [freeing(mul(dy, d), ...temps)];
  },

  add: broadcasting((dy) => [dy, dy]),
  sub: broadcasting((dy, _saved, _needA, needB) => [dy, needB ? neg(dy) : null]),
  mul: broadcasting((dy, [a, b], needA, needB) => [needA ? mul(dy, b) : null, needB ? mul(dy, a) : null]),
  div: broadcasting((dy, [b, y], _needA, needB) => {
    const ga = div(dy, b);
    if (!needB) return [ga, null];
    const t = mul(ga, y); // dy·a/b²
    return [ga, freeing(neg(t), t)];
  }),
  pow: broadcasting((dy, [a, b, y], needA, needB) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (needA) {
      const bm1 = sub(b, 1);
      const p = pow(a, bm1);
      const d = mul(p, b);
      ga = freeing(mul(dy, d), bm1, p, d);
    }
    if (needB) {
      const l = log(a);
      const d = mul(y, l);
      gb = freeing(mul(dy, d), l, d);
    }
    return [ga, gb];
  }),
  maximum: broadcasting((dy, [a, b]) => {
    // Ties split the gradient evenly.
    const gt = greater(a, b);
    const eq = equal(a, b);
    const gtf = cast(gt, dy.dtype);
    const eqf = cast(eq, dy.dtype);
    const half = mul(eqf, 0.5);
    const wa = add(gtf, half);
    const wb = sub(1, wa);
    return freeing([mul(dy, wa), mul(dy, wb)], gt, eq, gtf, eqf, half, wa, wb);
  }),
  where: (dy, [cond], { aShape, bShape }, [, a, b]) => {
    const zeros = full(dy.shape, 0, { dtype: dy.dtype, backend: dy.backend });
    const ga = a.requiresGrad ? sumToShape(where(cond, dy, zeros), aShape, true) : null;
    const gb = b.requiresGrad ? sumToShape(where(cond, zeros, dy), bShape, true) : null;
    zeros.dispose();
    return [null, ga, gb];
  },
  cast: (dy, _saved, { from }) => [from === null ? dy : cast(dy, from)],

  broadcastTo: (dy, _saved, { shape }) => [sumToShape(dy, shape)],
  sum: (dy, _saved, { shape, kept }) => {
    const k = reshape(dy, kept);
    const g = broadcastTo(k, shape);
    k.dispose();
    return [g];
  },
  max: (dy, [x, y], { axes, kept }) => {
    // Tied maxima share the gradient evenly (as PyTorch's amax).
    const yk = reshape(y, kept);
    const hit = equal(x, yk);
    const mask = cast(hit, x.dtype);
    const count = sum(mask, axes, true);
    const share = div(reshape(dy, kept), count);
    const g = mul(mask, share);
    for (const t of [yk, hit, mask, count, share]) t.dispose();
    return [g];
  },
  softmax: (dy, [y], { axis }) => {
    const dyy = mul(dy, y);
    const s = sum(dyy, axis, true);
    const centered = sub(dy, s);
    const g = mul(y, centered);
    for (const t of [dyy, s, centered]) t.dispose();
    return [g];
  },
  logSoftmax: (dy, [y], { axis }) => {
    const p = exp(y);
    const s = sum(dy, axis, true);
    const ps = mul(p, s);
    const g = sub(dy, ps);
    for (const t of [p, s, ps]) t.dispose();
    return [g];
  },

  reshape: (dy, _saved, { shape }) => [reshape(dy, shape)],
  transpose: (dy, _saved, { inverse }) => [transpose(dy, inverse)],
  slice: (dy, _saved, { paddings }) => [pad(dy, paddings)],
  pad: (dy, _saved, { begin, end }) => [slice(dy, begin, end)],
  concat: (dy, _saved, { axis }, inputs) => {
    let offset = 0;
    return inputs.map((t) => {
      const begin = t.shape.map((_, j) => (j === axis ? offset : 0));
      const end = t.shape.map((d, j) => (j === axis ? offset + d : d));
      offset += t.shape[axis];
      return t.requiresGrad ? slice(dy, begin, end) : null;
    });
  },
  gather: (dy, [indices], { axis, shape }) => [scatterAdd(indices, dy, shape, axis), null],
  scatterAdd: (dy, [indices], { axis }) => [null, gather(dy, indices, axis)],

  matmul: (dy, [a, b], { transposeA, transposeB, aShape, bShape, needA, needB }) => {
    let ga: Tensor | null = null;
    let gb: Tensor | null = null;
    if (needA) {
      // y = A·B: dA = dy·Bᵀ; with A stored transposed, dA = B·dyᵀ (in op(B) terms).
      const g = transposeA ? matmul(b, dy, { transposeA: transposeB, transposeB: true }) : matmul(dy, b, { transposeB: !transposeB });
      ga = sumToShape(g, aShape, true);
    }
    if (needB) {
      const g = transposeB ? matmul(dy, a, { transposeA: true, transposeB: transposeA }) : matmul(a, dy, { transposeA: !transposeA });
      gb = sumToShape(g, bShape, true);
    }
    return [ga, gb];
  },
  loraLinear: (dy, [x, weight, loraA, loraB, t, ...quantParts], { scale, dropout, seed, needs, xShape, outFeatures, quant }) => {
    // One fused op computes the wanted gradients (the dropout mask regenerated from its seed).
    const dy2 = reshape(dy, [-1, outFeatures]);
    const {
      dx: dx2,
      dA,
      dB,
      dWeight: dW,
      dBias,
    } = runOp('loraLinearBackward', [dy2, x, weight, loraA, loraB, t, ...quantParts], {
      quant,
      scale,
      dropout,
      seed,
      needX: needs[0],
      needWeight: needs[1],
      needA: needs[2],
      needB: needs[3],
      needBias: needs[4] ?? false,
    });
    dy2.dispose();
    // The kernel returns those requested, by name.
    const dx = dx2 ? reshape(dx2, xShape) : null;
    dx2?.dispose();
    return [dx, dW ?? null, dA ?? null, dB ?? null, dBias ?? null];
  },

  softmaxCrossEntropy: (dy, [logits, targets, weights, logsumexp]) => {
    // The softmax is recomputed from the logits and the saved log-sum-exp.
    const dx = runOp('softmaxCrossEntropyBackward', [logits, targets, weights, logsumexp, dy], {});
    return [dx, null, null];
  },
  // Each row's gradient was formed in the forward pass for an upstream factor of 1: scale it.
  linearCrossEntropy: (dy, [rows]) => [mul(rows, reshape(dy, [-1, 1]))],
  // The quantized weights are constants: only x has a gradient, dy times W the other way round.
  quantizedMatmul: (dy, [weight, scales, biases], { bits, groupSize, transpose }) => [
    runOp('quantizedMatmul', [dy, weight, scales, biases], { bits, groupSize, transpose: !transpose }),
    null,
    null,
    null,
  ],

  rmsNorm: (dy, [x, weight, rstd], { features, xShape, offset }, inputs) => {
    const dy2 = reshape(dy, [-1, features]);
    const dx2 = runOp('rmsNormBackward', [dy2, x, weight, rstd], { offset });
    const dx = freeing(reshape(dx2, xShape), dx2);
    if (!inputs[1].requiresGrad) return freeing([dx, null], dy2);
    // dWeight = Σ over rows of dy·x/rms.
    const normed = mul(x, reshape(rstd, [-1, 1]));
    const dw = sum(mul(dy2, normed), 0);
    return freeing([dx, dw], dy2, normed);
  },
  // The inverse rotation, moved back to x's layout.
  rope: (dy, [cos, sin], { inverse, bthd }) => [runOp('rope', [dy, cos, sin], { inverse: !inverse, transposeIn: false, transposeOut: bthd }), null, null],
  gatedActivation: (dy, [gate, up], { activation }) => {
    const { dGate, dUp } = runOp('gatedActivationBackward', [dy, gate, up], { activation });
    return [dGate, dUp];
  },
  // The probabilities are recomputed from the saved log-sum-exp, a block at a time.
  attention: (dy, [q, k, v, mask, y, lse], { scale, causal }) => {
    const { dq, dk, dv } = runOp('attentionBackward', [q, k, v, mask, y, lse, dy], { scale, causal });
    return [dq, dk, dv, null];
  },
  maskedSoftmax: (dy, [y], { scale }) => {
    const dx = runOp('maskedSoftmaxBackward', [dy, y], { scale });
    return [dx, null];
  },
};

/** Installs the table; the package entry calls it once. */
export function registerGradients(): void {
  setGradientTable(GRADIENTS);
}
