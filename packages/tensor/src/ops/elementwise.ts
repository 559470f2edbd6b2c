import type { DType } from '../dtype';
import { assertDType, isFloat } from '../dtype';
import { runOp } from '../dispatch';
import { recordOp } from '../engine';
import { DTypeError } from '../errors';
import type { Tensor } from '../tensor';
import { asTensor, assertFloat, assertSameDType, assertTensor, type Operand } from './helpers';
import type { GradientContexts } from './gradient-contexts';
import type { BinaryOp, OpAttrs, UnaryOp } from './op-names';

// Gradients: ops/gradients.ts.

const INTEGER_OK = new Set<string>(['neg', 'abs', 'relu']);

/** `saves`: 'x' or 'y', the one tensor the op's gradient reads, or '' for none. */
function unary<K extends UnaryOp>(op: K, x: Tensor, attrs: OpAttrs[K] & GradientContexts[K], saves: 'x' | 'y' | ''): Tensor {
  assertTensor(op, x, 'x');
  if (!INTEGER_OK.has(op)) assertFloat(op, x, 'x');
  else if (x.dtype === 'bool') throw new DTypeError(op, 'bool input', 'a numeric dtype', 'bool');
  const y = runOp(op, [x], attrs);
  const save = saves === 'x' ? [x] : saves === 'y' ? [y] : [];
  return recordOp(op, y, [x], attrs, save);
}

/** -x */
export function neg(x: Tensor): Tensor {
  return unary('neg', x, {}, '');
}
/** eˣ */
export function exp(x: Tensor): Tensor {
  return unary('exp', x, {}, 'y');
}
/** Natural logarithm. */
export function log(x: Tensor): Tensor {
  return unary('log', x, {}, 'x');
}
/** Square root. */
export function sqrt(x: Tensor): Tensor {
  return unary('sqrt', x, {}, 'y');
}
/** Hyperbolic tangent. */
export function tanh(x: Tensor): Tensor {
  return unary('tanh', x, {}, 'y');
}
/** 1 / (1 + e⁻ˣ) */
export function sigmoid(x: Tensor): Tensor {
  return unary('sigmoid', x, {}, 'y');
}
/** x·sigmoid(x) (SiLU / swish), the activation of Llama's MLP. */
export function silu(x: Tensor): Tensor {
  return unary('silu', x, {}, 'x');
}
/** max(x, 0); the gradient at 0 is 0. */
export function relu(x: Tensor): Tensor {
  return unary('relu', x, {}, 'x');
}
/** The Gauss error function. */
export function erf(x: Tensor): Tensor {
  return unary('erf', x, {}, 'x');
}
/** |x|; the gradient at 0 is 0. */
export function abs(x: Tensor): Tensor {
  return unary('abs', x, {}, 'x');
}

/**
 * GELU: `x·Φ(x)` exactly (`approximate: 'none'`, PyTorch's and MLX's default) or with the tanh
 * approximation.
 */
export function gelu(x: Tensor, options: { approximate?: 'none' | 'tanh' } = {}): Tensor {
  const approximate = options.approximate ?? 'none';
  if (approximate !== 'none' && approximate !== 'tanh') throw new DTypeError('gelu', 'unknown approximation', "'none' | 'tanh'", String(approximate));
  return unary('gelu', x, { approximate }, 'x');
}

/**
 * `saves` names the tensors the op's gradient reads ('a', 'b', 'y', saved in that order), so `add`
 * holds no activations at all. The comparisons are not differentiable.
 */
function binary(op: BinaryOp, a: Operand, b: Operand, saves = ''): Tensor {
  if (typeof a === 'number' && typeof b === 'number') throw new DTypeError(op, 'both operands are numbers', 'at least one Tensor', 'two numbers');
  const at = typeof a === 'number' ? asTensor(a, assertTensor(op, b, 'b'), op) : assertTensor(op, a, 'a');
  const bt = typeof b === 'number' ? asTensor(b, at, op) : assertTensor(op, b, 'b');
  assertSameDType(op, [at, bt], ['a', 'b']);
  if (at.dtype === 'bool' && op !== 'equal') throw new DTypeError(op, 'bool operands', 'a numeric dtype', 'bool');
  const y = runOp(op, [at, bt], {});
  const save = [at, bt, y].filter((_, i) => saves.includes('aby'[i]));
  const result =
    op === 'equal' || op === 'greater' || op === 'less'
      ? y
      : recordOp(op, y, [at, bt], { aShape: at.shape, bShape: bt.shape, needA: at.requiresGrad, needB: bt.requiresGrad }, save);
  // Scalars made from numbers live on only as the node's saved handles.
  if (typeof a === 'number') at.dispose();
  if (typeof b === 'number') bt.dispose();
  return result;
}

/** a + b with broadcasting. Either side may be a number. */
export function add(a: Operand, b: Operand): Tensor {
  return binary('add', a, b);
}
/** a − b with broadcasting. */
export function sub(a: Operand, b: Operand): Tensor {
  return binary('sub', a, b);
}
/** a · b elementwise with broadcasting. */
export function mul(a: Operand, b: Operand): Tensor {
  return binary('mul', a, b, 'ab');
}
/** a / b elementwise with broadcasting. */
export function div(a: Operand, b: Operand): Tensor {
  return binary('div', a, b, 'by');
}
/** aᵇ elementwise with broadcasting. The exponent's gradient uses log(a) (NaN for a < 0). */
export function pow(a: Operand, b: Operand): Tensor {
  return binary('pow', a, b, 'aby');
}
/** Elementwise maximum; tied gradients are split evenly. */
export function maximum(a: Operand, b: Operand): Tensor {
  return binary('maximum', a, b, 'ab');
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
  const y = runOp('where', [cond, at, bt], {});
  const result = recordOp('where', y, [cond, at, bt], { aShape: at.shape, bShape: bt.shape }, [cond]);
  if (typeof a === 'number') at.dispose();
  if (typeof b === 'number') bt.dispose();
  return result;
}

/** Converts to another dtype (float → int truncates toward zero; any → bool tests non-zero). */
export function cast(x: Tensor, dtype: DType): Tensor {
  assertTensor('cast', x, 'x');
  const target = assertDType('cast', dtype);
  if (target === x.dtype) return recordOp('cast', x.share(), [x], { from: null });
  const y = runOp('cast', [x], { dtype: target });
  if (!isFloat(target) || !isFloat(x.dtype)) return y;
  return recordOp('cast', y, [x], { from: x.dtype });
}

/** x² */
export function square(x: Tensor): Tensor {
  return mul(x, x);
}
