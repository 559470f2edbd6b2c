import { type DType, isFloat } from '../dtype';
import { DTypeError } from '../errors';
import { fromValues, Tensor } from '../tensor';

/** A tensor operand, or a number taken as a scalar of the other operand's dtype and backend. */
export type Operand = Tensor | number;

export function asTensor(value: Operand, like: Tensor, op = 'asTensor'): Tensor {
  if (value instanceof Tensor) return value;
  // A number takes the tensor's dtype; one that dtype cannot hold would be silently rounded
  // (int32 + 0.5 gave the int32 unchanged): refuse it instead of promoting behind the user's back.
  if (like.dtype === 'int32' && !(Number.isInteger(value) && value >= -2147483648 && value <= 2147483647)) {
    throw new DTypeError(
      op,
      `the number ${value} is not an int32, the other operand's dtype`,
      'an integer in int32 range (cast the tensor to a float dtype for fractions)',
      String(value),
    );
  }
  if (like.dtype === 'bool' && value !== 0 && value !== 1)
    throw new DTypeError(op, `the number ${value} is not a bool, the other operand's dtype`, '0 or 1', String(value));
  return fromValues([value], [], { dtype: like.dtype, backend: like.backend });
}

export function assertTensor(op: string, value: unknown, name: string): Tensor {
  if (!(value instanceof Tensor)) throw new DTypeError(op, `${name} is not a Tensor`, 'a Tensor', value === null ? 'null' : typeof value);
  return value;
}

export function assertFloat(op: string, t: Tensor, name = 'input'): void {
  if (!isFloat(t.dtype)) throw new DTypeError(op, `${name} must be floating point`, 'float32 | float16 | float64', t.dtype);
}

export function assertSameDType(op: string, tensors: readonly Tensor[], names: readonly string[]): DType {
  const dtype = tensors[0].dtype;
  tensors.forEach((t, i) => {
    if (t.dtype !== dtype) throw new DTypeError(op, `${names[i]} has another dtype than ${names[0]}`, dtype, t.dtype);
  });
  return dtype;
}

/** Disposes intermediates of a backward rule once its result exists. */
export function freeing<T>(result: T, ...temps: Tensor[]): T {
  for (const t of temps) t.dispose();
  return result;
}
