import { DTypeError } from './errors';

/**
 * Element types. `float16` is stored as IEEE half bits and computed in f32 on the CPU; `float64`
 * exists for reference computations and gradient checks (the CPU backend only); `bool` holds 0/1.
 */
export type DType = 'float32' | 'float16' | 'float64' | 'int32' | 'bool';

export const DTYPES: readonly DType[] = ['float32', 'float16', 'float64', 'int32', 'bool'];

/** The typed array a dtype is stored in on the CPU. */
export type StorageArray = Float32Array | Float64Array | Int32Array | Uint16Array | Uint8Array;
/** The typed array a dtype's values are read as (float16 decodes to Float32Array). */
export type ValueArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float16' || dtype === 'float64';
}

export function bytesPerElement(dtype: DType): number {
  switch (dtype) {
    case 'float64':
      return 8;
    case 'float32':
    case 'int32':
      return 4;
    case 'float16':
      return 2;
    case 'bool':
      return 1;
  }
}

export function assertDType(op: string, value: unknown): DType {
  if (typeof value === 'string' && (DTYPES as readonly string[]).includes(value)) return value as DType;
  throw new DTypeError(op, 'unknown dtype', DTYPES.join(' | '), String(value));
}

/** A zero-filled array in which values of `dtype` are computed (f16 computes in f32). */
export function allocValues(dtype: DType, size: number): ValueArray {
  switch (dtype) {
    case 'float64':
      return new Float64Array(size);
    case 'float32':
    case 'float16':
      return new Float32Array(size);
    case 'int32':
      return new Int32Array(size);
    case 'bool':
      return new Uint8Array(size);
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Rounds an f32 value to the nearest IEEE half (ties to even) and returns its bits. */
export function float32ToFloat16Bits(value: number): number {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to signed zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let bits = mant >>> shift;
    const rest = mant & ((1 << shift) - 1);
    if (rest > half || (rest === half && bits & 1)) bits++;
    return sign | bits;
  }
  let bits = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && bits & 1)) bits++; // may carry into the exponent: correct
  return sign | bits;
}

/** Decodes IEEE half bits to a number. */
export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Converts computed values into the storage array of `dtype` (encodes f16, rounds f32, truncates ints). */
export function toStorage(values: ArrayLike<number>, dtype: DType): StorageArray {
  const n = values.length;
  switch (dtype) {
    case 'float16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = float32ToFloat16Bits(values[i]);
      return out;
    }
    case 'float32':
      return values instanceof Float32Array ? values : Float32Array.from(values);
    case 'float64':
      return values instanceof Float64Array ? values : Float64Array.from(values);
    case 'int32':
      return values instanceof Int32Array ? values : Int32Array.from(values, (v) => Math.trunc(v));
    case 'bool':
      return values instanceof Uint8Array ? values : Uint8Array.from(values, (v) => (v ? 1 : 0));
  }
}

/** Reads a storage array of `dtype` as values (decodes f16 into a new Float32Array). */
export function fromStorage(storage: StorageArray, dtype: DType): ValueArray {
  if (dtype === 'float16') {
    const bits = storage as Uint16Array;
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) out[i] = float16BitsToFloat32(bits[i]);
    return out;
  }
  return storage as ValueArray;
}
