import { type DType, isFloat } from '../dtype';
import { DTypeError } from '../errors';
import { fromValues, Tensor } from '../tensor';

/** A tensor operand, or a number taken as a scalar of the other operand's dtype and backend. */
export type Operand = Tensor | number;

export function asTensor(value: Operand, like: Tensor): Tensor {
  if (value instanceof Tensor) return value;
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
