/**
 * Test helpers shared by every package's suites (exported as `@metal-lora/tensor/testing`):
 * tolerances in one place, comparisons that print both sides, and float64 gradient checks.
 */
// The package entry installs the Tensor methods, the gradient table and the CPU backend that these helpers use.
import './index';
import { grad } from './autograd';
import { type DType, fromStorage, toStorage } from './dtype';
import { noGrad } from './engine';
import { mul, sum } from './ops/all';
import { normalValues } from './random';
import { fromValues, type Tensor } from './tensor';

/** Tolerances by the precision being compared: `rtol·|expected| + atol`. */
export const TOLERANCES = {
  float64: { rtol: 1e-10, atol: 1e-12 },
  float32: { rtol: 2e-5, atol: 2e-6 },
  /** GPU f32 reductions reorder sums; errors grow with the reduction length. */
  float32Gemm: { rtol: 1e-4, atol: 1e-5 },
  float16: { rtol: 1e-2, atol: 1e-3 },
  /** Central differences in float64 (step 1e-6): truncation and round-off error ~1e-9. */
  gradCheck: { rtol: 1e-6, atol: 1e-7 },
} as const;

export type Tolerance = { rtol: number; atol: number };

/**
 * A tolerance for sums of many products (GEMMs, gradients): the absolute part scales with the
 * largest expected magnitude, since an element that cancels to near zero still carries rounding
 * error of the size of its terms. `fraction` is that error relative to the largest value.
 */
export function scaledTolerance(base: Tolerance, expected: ArrayLike<number>, fraction = 2e-6): Tolerance {
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) if (Number.isFinite(expected[i])) maxAbs = Math.max(maxAbs, Math.abs(expected[i]));
  return { rtol: base.rtol, atol: Math.max(base.atol, fraction * maxAbs) };
}

export interface Comparison {
  ok: boolean;
  maxAbsError: number;
  maxRelError: number;
  worstIndex: number;
  message: string;
}

/** Compares elementwise; NaN equals NaN, infinities must match exactly. */
export function compare(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label = 'values'): Comparison {
  if (actual.length !== expected.length) {
    return {
      ok: false,
      maxAbsError: Number.POSITIVE_INFINITY,
      maxRelError: Number.POSITIVE_INFINITY,
      worstIndex: -1,
      message: `${label}: length ${actual.length} vs expected ${expected.length}`,
    };
  }
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (a !== e && worstExcess < Number.POSITIVE_INFINITY) {
        worst = i;
        worstExcess = Number.POSITIVE_INFINITY;
        maxAbs = Number.POSITIVE_INFINITY;
      }
      continue;
    }
    const err = Math.abs(a - e);
    const rel = err / Math.max(Math.abs(e), Number.MIN_VALUE);
    if (err > maxAbs) maxAbs = err;
    if (Math.abs(e) > tol.atol && rel > maxRel) maxRel = rel;
    const excess = err - (tol.rtol * Math.abs(e) + tol.atol);
    if (excess > worstExcess) {
      worstExcess = excess;
      worst = i;
    }
  }
  const ok = worst < 0;
  const at = (arr: ArrayLike<number>, i: number) => (i >= 0 ? arr[i] : Number.NaN);
  const message = ok
    ? `${label}: within rtol ${tol.rtol}, atol ${tol.atol} (max abs ${maxAbs.toExponential(2)}, max rel ${maxRel.toExponential(2)})`
    : `${label}: out of tolerance (rtol ${tol.rtol}, atol ${tol.atol}) at index ${worst}: got ${at(actual, worst)}, expected ${at(expected, worst)}; max abs error ${maxAbs.toExponential(3)}, max rel error ${maxRel.toExponential(3)}; first values got [${Array.from(actual).slice(0, 6).join(', ')}] expected [${Array.from(expected).slice(0, 6).join(', ')}]`;
  return { ok, maxAbsError: maxAbs, maxRelError: maxRel, worstIndex: worst, message };
}

/** Throws an Error carrying the comparison message unless `actual` is close to `expected`. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: Tolerance, label?: string): Comparison {
  const c = compare(actual, expected, tol, label);
  if (!c.ok) throw new Error(c.message);
  return c;
}

/** Seeded normal values (never all zeros), for test inputs. */
export function randomValues(n: number, seed: number, std = 1): Float64Array {
  const out = new Float64Array(n);
  normalValues(seed, n, 0, std, out);
  return out;
}

/** Random values as `dtype` stores them (float16: rounded to half), in float64: what a kernel reads, exactly. */
export function storedValues(n: number, seed: number, dtype: 'float32' | 'float16'): Float64Array {
  return Float64Array.from(fromStorage(toStorage(randomValues(n, seed), dtype), dtype));
}

/**
 * A GEMM's tolerance against float64 for operands stored as `dtype`: f16 runs store operands and
 * C as halves and compute in f32, so C is compared after its own rounding.
 */
export function gemmTolerance(dtype: 'float32' | 'float16', expected: ArrayLike<number>): Tolerance {
  return dtype === 'float16' ? scaledTolerance(TOLERANCES.float16, expected, 1e-3) : scaledTolerance(TOLERANCES.float32Gemm, expected);
}

/** A seeded random tensor of `shape` on the current backend. */
export function randomTensor(shape: readonly number[], seed: number, options: { dtype?: DType; requiresGrad?: boolean; std?: number } = {}): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  return fromValues(randomValues(size, seed, options.std ?? 1), shape, { dtype: options.dtype ?? 'float32', requiresGrad: options.requiresGrad });
}

/**
 * Checks the gradients of `fn` at float64 `inputs` against central differences. The output is
 * contracted with fixed random weights, so the whole vector-Jacobian product is checked, not
 * only its sum. Returns the worst comparison; throws with both sides printed when off.
 */
export function gradCheck(
  fn: (...inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  options: { eps?: number; tol?: Tolerance; only?: number[] } = {},
): Comparison[] {
  const eps = options.eps ?? 1e-6;
  const tol = options.tol ?? TOLERANCES.gradCheck;
  const which = options.only ?? inputs.map((_, i) => i);
  const probe = noGrad(() => fn(...inputs));
  const weights = fromValues(randomValues(probe.size, 0xc0ffee), probe.shape, { dtype: 'float64', backend: probe.backend });
  probe.dispose();
  const objective = (xs: Tensor[]) => sum(mul(fn(...xs), weights));
  const leaves = inputs.map((x) => {
    const leaf = x.detach();
    leaf.requiresGrad = which.includes(inputs.indexOf(x));
    return leaf;
  });
  const analytic = grad(
    objective(leaves),
    which.map((i) => leaves[i]),
  );
  const results: Comparison[] = [];
  which.forEach((inputIndex, k) => {
    const base = inputs[inputIndex];
    const values = Float64Array.from(base.dataSync());
    const numeric = new Float64Array(values.length);
    for (let e = 0; e < values.length; e++) {
      const at = (delta: number) => {
        const shifted = values.slice();
        shifted[e] += delta;
        const xs = inputs.map((x, i) => (i === inputIndex ? fromValues(shifted, x.shape, { dtype: 'float64', backend: x.backend }) : x));
        const v = noGrad(() => objective(xs));
        const out = v.itemSync();
        v.dispose();
        xs[inputIndex].dispose();
        return out;
      };
      numeric[e] = (at(eps) - at(-eps)) / (2 * eps);
    }
    results.push(assertClose(analytic[k].dataSync(), numeric, tol, `gradient of input ${inputIndex} ${JSON.stringify(base.shape)}`));
  });
  weights.dispose();
  return results;
}
