import * as T from '../src/index';
import { describe, expect, expectTypeOf, it } from 'vitest';
import {
  add,
  concat,
  DTypeError,
  gather,
  getKernel,
  type KernelArgs,
  type KernelFn,
  type KernelOutput,
  type OpResult,
  type Tensor,
  type TensorRef,
  KernelNotFoundError,
  loraLinear,
  matmul,
  MetalLoRAError,
  ones,
  registerKernel,
  reshape,
  setBackend,
  ShapeError,
  slice,
  sum,
  tensor,
  transpose,
  unregisterKernel,
  ValueError,
  zeros,
} from '../src/index';

describe('typed errors with "<op>: what; expected X, got Y"', () => {
  it('shape mismatch in broadcasting', () => {
    expect(() => add(zeros([2, 3]), zeros([4]))).toThrow(ShapeError);
    expect(() => add(zeros([2, 3]), zeros([4]))).toThrow(
      'add: shapes cannot be broadcast together; expected equal dimensions or 1 in each position from the right, got [2, 3] and [4]',
    );
  });
  it('matmul inner dimensions', () => {
    expect(() => matmul(zeros([2, 3]), zeros([4, 5]))).toThrow(/^matmul: inner dimensions differ; expected .*, got \[2, 3\] · \[4, 5\] \(3 vs 4\)$/);
    expect(() => matmul(zeros([3]), zeros([3, 1]))).toThrow(ShapeError);
  });
  it('dtype mismatch', () => {
    const err = (() => {
      try {
        add(zeros([2]), zeros([2], { dtype: 'float16' }));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(DTypeError);
    expect(err).toBeInstanceOf(MetalLoRAError);
    expect((err as Error).message).toBe('add: b has another dtype than a; expected float32, got float16');
  });
  it('bad axes and permutations', () => {
    expect(() => sum(zeros([2, 2]), 2)).toThrow('sum: axis out of range; expected an integer in [-2, 1], got 2');
    expect(() => sum(zeros([2, 2]), [0, -2])).toThrow(ValueError);
    expect(() => transpose(zeros([2, 2]), [0, 0])).toThrow(ValueError);
    expect(() => concat([zeros([2, 2]), zeros([3, 3])], 0)).toThrow(ShapeError);
  });
  it('reshape element count and ragged data', () => {
    expect(() => reshape(zeros([2, 3]), [4, 2])).toThrow(
      'reshape: element count differs; expected a shape of 6 elements (from [2, 3]), got [4, 2] (8 elements)',
    );
    expect(() => tensor([[1, 2], [3]])).toThrow(ShapeError);
    expect(() => tensor([1, 2, 3], [2, 2])).toThrow(ShapeError);
  });
  it('gather index out of range and wrong index dtype', () => {
    expect(() => gather(ones([3, 2]), tensor([3], undefined, { dtype: 'int32' }))).toThrow(
      'gather: index 3 at position 0 is out of range; expected 0 <= index < 3, got 3',
    );
    expect(() => gather(ones([3, 2]), tensor([1]))).toThrow(DTypeError);
  });
  it('transcendental ops refuse integers; slice refuses non-integers', () => {
    expect(() => tensor([1], undefined, { dtype: 'int32' }).exp()).toThrow(DTypeError);
    expect(() => slice(zeros([3]), [0.5])).toThrow(ValueError);
  });
  it('loraLinear validates every operand', () => {
    const x = zeros([2, 4]);
    const w = zeros([3, 4]);
    expect(() => loraLinear(x, w, zeros([2, 5]), zeros([3, 2]), { scale: 1 })).toThrow('loraLinear: loraA must be [rank, in]; expected [rank, 4], got [2, 5]');
    expect(() => loraLinear(x, w, zeros([2, 4]), zeros([3, 3]), { scale: 1 })).toThrow('loraLinear: loraB must be [out, rank]; expected [3, 2], got [3, 3]');
    expect(() => loraLinear(x, w, zeros([2, 4]), zeros([3, 2]), { scale: 1, dropout: 1 })).toThrow(ValueError);
    expect(() => loraLinear(x, w, zeros([2, 4]), zeros([3, 2]), { scale: Number.NaN })).toThrow(ValueError);
    expect(() => loraLinear(zeros([2, 5]), w, zeros([2, 4]), zeros([3, 2]), { scale: 1 })).toThrow(ShapeError);
    expect(() => loraLinear(x, w, zeros([2, 4]), zeros([3, 2]), { scale: 1, bias: zeros([4]) })).toThrow(ShapeError);
  });
});

describe('kernel and backend registry', () => {
  it('a missing kernel names the backends that have it', () => {
    expect(() => getKernel('webgpu-test', 'matmul')).toThrow(KernelNotFoundError);
    expect(() => getKernel('webgpu-test', 'matmul')).toThrow(
      "matmul: no kernel registered for backend 'webgpu-test'; expected one of the backends that have it: cpu, got 'webgpu-test'",
    );
  });
  it('a kernel is typed by its op: inputs, attributes and result (checked by the typecheck)', () => {
    expectTypeOf<KernelArgs<'matmul'>['attrs']>().toEqualTypeOf<{ transposeA: boolean; transposeB: boolean }>();
    expectTypeOf<KernelArgs<'rmsNorm'>['inputs']>().toEqualTypeOf<readonly [x: TensorRef, weight: TensorRef]>();
    expectTypeOf<OpResult<'exp'>>().toEqualTypeOf<KernelOutput>();
    expectTypeOf<OpResult<'rmsNorm'>>().toEqualTypeOf<{ y: KernelOutput; rstd: KernelOutput }>();
    expectTypeOf<OpResult<'loraLinearBackward', Tensor>>().toEqualTypeOf<{ dx?: Tensor; dA?: Tensor; dB?: Tensor; dWeight?: Tensor; dBias?: Tensor }>();
    expectTypeOf(registerKernel<'matmul'>)
      .parameter(2)
      .toEqualTypeOf<KernelFn<'matmul'>>();
  });
  it('a duplicate registration throws; unregister allows a new one', () => {
    const fn = ({ inputs: [x] }: KernelArgs<'exp'>) => ({ data: x.data, shape: [...x.shape], dtype: x.dtype });
    expect(() => registerKernel('cpu', 'exp', fn)).toThrow(/already registered/);
    registerKernel('test-backend', 'exp', fn);
    expect(getKernel('test-backend', 'exp')).toBe(fn);
    unregisterKernel('test-backend', 'exp');
    expect(() => getKernel('test-backend', 'exp')).toThrow(KernelNotFoundError);
  });
  it('an unknown backend name is refused', async () => {
    await expect(setBackend('metal')).rejects.toThrow("setBackend: unknown backend; expected one of cpu, got 'metal'");
  });
});

describe('no silent wrong answers from creation, mixed operands and empty reductions', () => {
  it('refuses unknown dtypes, oversized shapes, fractions for int32 operands and the max of nothing', () => {
    expect(() => T.zeros([2], { dtype: 'float8' as never })).toThrow('full: unknown dtype; expected float32 | float16 | float64 | int32 | bool, got float8');
    expect(() => T.zeros([1e6, 1e6])).toThrow(
      'full: the tensor is too large; expected at most 2147483647 elements, got 1000000000000 elements for [1000000, 1000000]',
    );
    expect(() => T.add(T.tensor([1, 2, 3], undefined, { dtype: 'int32' }), 0.5)).toThrow(
      "add: the number 0.5 is not an int32, the other operand's dtype; expected an integer in int32 range (cast the tensor to a float dtype for fractions), got 0.5",
    );
    expect(T.add(T.tensor([1, 2, 3], undefined, { dtype: 'int32' }), 2).toArraySync()).toEqual([3, 4, 5]);
    expect(() => T.max(T.zeros([0]))).toThrow('max: a reduced axis is empty; expected every reduced axis of length ≥ 1, got [0] reduced over [0]');
    expect(T.max(T.zeros([2, 0]), 0).shape).toEqual([0]);
    expect(T.sum(T.zeros([0])).itemSync()).toBe(0);
  });
});
