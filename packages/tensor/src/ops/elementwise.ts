import type { DType } from '../dtype';
import { assertDType, isFloat } from '../dtype';
import { record, runOp } from '../engine';
import { DTypeError } from '../errors';
import { GELU_TANH_C } from '../math';
import { full, type Tensor } from '../tensor';
import { asTensor, assertFloat, assertSameDType, assertTensor, freeing, type Operand } from './helpers';
import type { BinaryOp, UnaryOp } from './op-names';
import { sumToShape } from './reduce';

const INTEGER_OK = new Set<string>(['neg', 'abs', 'relu']);

/** `saves`: 'x' or 'y', the one tensor the rule reads (the other reaches it as undefined). */
function unary(op: UnaryOp, x: Tensor, attrs: Record<string, unknown>, saves: 'x' | 'y' | '', rule: (dy: Tensor, x: Tensor, y: Tensor) => Tensor): Tensor {
  assertTensor(op, x, 'x');
  if (!INTEGER_OK.has(op)) assertFloat(op, x, 'x');
  else if (x.dtype === 'bool') throw new DTypeError(op, 'bool input', 'a numeric dtype', 'bool');
  // biome-ignore lint/suspicious/noExplicitAny: attrs are checked per op by the callers below
  const [y] = runOp(op, [x], attrs as any);
  const save = saves === 'x' ? [x] : saves === 'y' ? [y] : [];
  return record(y, [x], op, (dy, [s]) => [rule(dy, s, s)], save);
}

/** -x */
export function neg(x: Tensor): Tensor {
  return unary('neg', x, {}, '', (dy) => neg(dy));
}
/** eˣ */
export function exp(x: Tensor): Tensor {
  return unary('exp', x, {}, 'y', (dy, _x, y) => mul(dy, y));
}
/** Natural logarithm. */
export function log(x: Tensor): Tensor {
  return unary('log', x, {}, 'x', (dy, xs) => div(dy, xs));
}
/** Square root. */
export function sqrt(x: Tensor): Tensor {
  return unary('sqrt', x, {}, 'y', (dy, _x, y) => {
    const twice = mul(y, 2);
    return freeing(div(dy, twice), twice);
  });
}
/** Hyperbolic tangent. */
export function tanh(x: Tensor): Tensor {
  return unary('tanh', x, {}, 'y', (dy, _x, y) => {
    const y2 = mul(y, y);
    const d = sub(1, y2);
    return freeing(mul(dy, d), y2, d);
  });
}
/** 1 / (1 + e⁻ˣ) */
export function sigmoid(x: Tensor): Tensor {
  return unary('sigmoid', x, {}, 'y', (dy, _x, y) => {
    const one = sub(1, y);
    const d = mul(y, one);
    return freeing(mul(dy, d), one, d);
  });
}
/** x·sigmoid(x) (SiLU / swish), the activation of Llama's MLP. */
export function silu(x: Tensor): Tensor {
  return unary('silu', x, {}, 'x', (dy, xs) => {
    // d/dx = s·(1 + x·(1 − s))
    const s = sigmoid(xs);
    const oneMinus = sub(1, s);
    const xo = mul(xs, oneMinus);
    const inner = add(xo, 1);
    const d = mul(s, inner);
    return freeing(mul(dy, d), s, oneMinus, xo, inner, d);
  });
}
/** max(x, 0); the gradient at 0 is 0. */
export function relu(x: Tensor): Tensor {
  return unary('relu', x, {}, 'x', (dy, xs) => {
    const pos = greater(xs, 0);
    const mask = cast(pos, dy.dtype);
    return freeing(mul(dy, mask), pos, mask);
  });
}
/** The Gauss error function. */
export function erf(x: Tensor): Tensor {
  return unary('erf', x, {}, 'x', (dy, xs) => {
    const x2 = mul(xs, xs);
    const nx2 = neg(x2);
    const e = exp(nx2);
    const d = mul(e, 2 / Math.sqrt(Math.PI));
    return freeing(mul(dy, d), x2, nx2, e, d);
  });
}
/** |x|; the gradient at 0 is 0. */
export function abs(x: Tensor): Tensor {
  return unary('abs', x, {}, 'x', (dy, xs) => {
    const p = greater(xs, 0);
    const n = less(xs, 0);
    const pf = cast(p, dy.dtype);
    const nf = cast(n, dy.dtype);
    const sign = sub(pf, nf);
    return freeing(mul(dy, sign), p, n, pf, nf, sign);
  });
}

/**
 * GELU: `x·Φ(x)` exactly (`approximate: 'none'`, PyTorch's and MLX's default) or with the tanh
 * approximation.
 */
export function gelu(x: Tensor, options: { approximate?: 'none' | 'tanh' } = {}): Tensor {
  const approximate = options.approximate ?? 'none';
  if (approximate !== 'none' && approximate !== 'tanh') throw new DTypeError('gelu', 'unknown approximation', "'none' | 'tanh'", String(approximate));
  return unary('gelu', x, { approximate }, 'x', (dy, xs) => {
    const temps: Tensor[] = [];
    const t = <T extends Tensor>(v: T): T => {
      temps.push(v);
      return v;
    };
    let d: Tensor;
    if (approximate === 'none') {
      // Φ(x) + x·φ(x)
      const cdf = t(mul(t(add(t(erf(t(mul(xs, Math.SQRT1_2)))), 1)), 0.5));
      const pdf = t(mul(t(exp(t(mul(t(mul(xs, xs)), -0.5)))), 1 / Math.sqrt(2 * Math.PI)));
      d = t(add(cdf, t(mul(xs, pdf))));
    } else {
      const x2 = t(mul(xs, xs));
      const u = t(mul(t(add(t(mul(x2, 0.044715)), 1)), t(mul(xs, GELU_TANH_C)))); // c·(x + 0.044715·x³)
      const th = t(tanh(u));
      const du = t(mul(t(add(t(mul(x2, 3 * 0.044715)), 1)), GELU_TANH_C));
      const left = t(mul(t(add(th, 1)), 0.5));
      const right = t(mul(t(mul(t(mul(xs, 0.5)), t(sub(1, t(mul(th, th)))))), du));
      d = t(add(left, right));
    }
    return freeing(mul(dy, d), ...temps);
  });
}

/** A binary backward rule; `needA`/`needB` say which gradients are wanted. */
type BinaryRule = (dy: Tensor, a: Tensor, b: Tensor, y: Tensor, needA: boolean, needB: boolean) => [Tensor | null, Tensor | null];

/**
 * `saves` names what the rule reads ('a', 'b', 'y'); only those are kept alive until backward,
 * so `add` holds no activations at all. Unsaved operands reach the rule as undefined.
 */
function binary(op: BinaryOp, a: Operand, b: Operand, rule?: BinaryRule, saves = ''): Tensor {
  if (typeof a === 'number' && typeof b === 'number') throw new DTypeError(op, 'both operands are numbers', 'at least one Tensor', 'two numbers');
  const at = typeof a === 'number' ? asTensor(a, assertTensor(op, b, 'b'), op) : assertTensor(op, a, 'a');
  const bt = typeof b === 'number' ? asTensor(b, at, op) : assertTensor(op, b, 'b');
  assertSameDType(op, [at, bt], ['a', 'b']);
  if (at.dtype === 'bool' && op !== 'equal') throw new DTypeError(op, 'bool operands', 'a numeric dtype', 'bool');
  const [y] = runOp(op, [at, bt], {});
  const aShape = at.shape;
  const bShape = bt.shape;
  const aNeeds = at.requiresGrad;
  const bNeeds = bt.requiresGrad;
  const saveList: Tensor[] = [];
  const slot = (name: string, t: Tensor) => (saves.includes(name) ? saveList.push(t) - 1 : -1);
  const slots = { a: slot('a', at), b: slot('b', bt), y: slot('y', y) };
  const result = !rule
    ? y
    : record(
        y,
        [at, bt],
        op,
        (dy, saved) => {
          const [ga, gb] = rule(dy, saved[slots.a], saved[slots.b], saved[slots.y], aNeeds, bNeeds);
          return [aNeeds && ga ? sumToShape(ga, aShape, ga !== dy) : null, bNeeds && gb ? sumToShape(gb, bShape, gb !== dy) : null];
        },
        saveList,
      );
  // Scalars made from numbers live on only as the node's saved handles.
  if (typeof a === 'number') at.dispose();
  if (typeof b === 'number') bt.dispose();
  return result;
}

/** a + b with broadcasting. Either side may be a number. */
export function add(a: Operand, b: Operand): Tensor {
  return binary('add', a, b, (dy) => [dy, dy]);
}
/** a − b with broadcasting. */
export function sub(a: Operand, b: Operand): Tensor {
  return binary('sub', a, b, (dy, _a, _b, _y, _needA, needB) => [dy, needB ? neg(dy) : null]);
}
/** a · b elementwise with broadcasting. */
export function mul(a: Operand, b: Operand): Tensor {
  return binary('mul', a, b, (dy, as, bs, _y, needA, needB) => [needA ? mul(dy, bs) : null, needB ? mul(dy, as) : null], 'ab');
}
/** a / b elementwise with broadcasting. */
export function div(a: Operand, b: Operand): Tensor {
  return binary(
    'div',
    a,
    b,
    (dy, _as, bs, ys, _needA, needB) => {
      const ga = div(dy, bs);
      if (!needB) return [ga, null];
      const t = mul(ga, ys); // dy·a/b²
      return [ga, freeing(neg(t), t)];
    },
    'by',
  );
}
/** aᵇ elementwise with broadcasting. The exponent's gradient uses log(a) (NaN for a < 0). */
export function pow(a: Operand, b: Operand): Tensor {
  return binary(
    'pow',
    a,
    b,
    (dy, as, bs, ys, needA, needB) => {
      let ga: Tensor | null = null;
      let gb: Tensor | null = null;
      if (needA) {
        const bm1 = sub(bs, 1);
        const p = pow(as, bm1);
        const d = mul(p, bs);
        ga = freeing(mul(dy, d), bm1, p, d);
      }
      if (needB) {
        const l = log(as);
        const d = mul(ys, l);
        gb = freeing(mul(dy, d), l, d);
      }
      return [ga, gb];
    },
    'aby',
  );
}
/** Elementwise maximum; tied gradients are split evenly. */
export function maximum(a: Operand, b: Operand): Tensor {
  return binary(
    'maximum',
    a,
    b,
    (dy, as, bs) => {
      const gt = greater(as, bs);
      const eq = equal(as, bs);
      const gtf = cast(gt, dy.dtype);
      const eqf = cast(eq, dy.dtype);
      const half = mul(eqf, 0.5);
      const wa = add(gtf, half);
      const wb = sub(1, wa);
      return freeing([mul(dy, wa), mul(dy, wb)], gt, eq, gtf, eqf, half, wa, wb);
    },
    'ab',
  );
}
/** a == b elementwise (bool). Not differentiable. */
export function equal(a: Operand, b: Operand): Tensor {
  return binary('equal', a, b);
}
/** a > b elementwise (bool). Not differentiable. */
export function greater(a: Operand, b: Operand): Tensor {
  return binary('greater', a, b);
}
/** a < b elementwise (bool). Not differentiable. */
export function less(a: Operand, b: Operand): Tensor {
  return binary('less', a, b);
}

/** `cond ? a : b` elementwise with broadcasting over all three. `cond` may be any dtype (non-zero = true). */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  assertTensor('where', cond, 'cond');
  if (typeof a === 'number' && typeof b === 'number') throw new DTypeError('where', 'both branches are numbers', 'at least one Tensor branch', 'two numbers');
  const at = typeof a === 'number' ? asTensor(a, b as Tensor, 'where') : assertTensor('where', a, 'a');
  const bt = typeof b === 'number' ? asTensor(b, at, 'where') : assertTensor('where', b, 'b');
  assertSameDType('where', [at, bt], ['a', 'b']);
  const [y] = runOp('where', [cond, at, bt], {});
  const aShape = at.shape;
  const bShape = bt.shape;
  const result = record(
    y,
    [cond, at, bt],
    'where',
    (dy, [cs]) => {
      const zeros = full(dy.shape, 0, { dtype: dy.dtype, backend: dy.backend });
      const ga = at.requiresGrad ? sumToShape(where(cs, dy, zeros), aShape, true) : null;
      const gb = bt.requiresGrad ? sumToShape(where(cs, zeros, dy), bShape, true) : null;
      zeros.dispose();
      return [null, ga, gb];
    },
    [cond],
  );
  if (typeof a === 'number') at.dispose();
  if (typeof b === 'number') bt.dispose();
  return result;
}

/** Converts to another dtype (float → int truncates toward zero; any → bool tests non-zero). */
export function cast(x: Tensor, dtype: DType): Tensor {
  assertTensor('cast', x, 'x');
  const target = assertDType('cast', dtype);
  if (target === x.dtype) return record(x.share(), [x], 'cast', (dy) => [dy]);
  const [y] = runOp('cast', [x], { dtype: target });
  if (!isFloat(target) || !isFloat(x.dtype)) return y;
  const from = x.dtype;
  return record(y, [x], 'cast', (dy) => [cast(dy, from)]);
}

/** x² */
export function square(x: Tensor): Tensor {
  return mul(x, x);
}
