import { float16BitsToFloat32, float32ToFloat16Bits, FormatError } from '@metal-lora/tensor';

/**
 * Every dtype name the safetensors format defines, with its size in bits, in the reference
 * implementation's order (increasing alignment), which its writer uses (descending) to order data.
 */
export const SAFETENSORS_DTYPES = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;

const ORDER = Object.keys(SAFETENSORS_DTYPES) as SafetensorsDType[];

/** Position in the reference enum (the writer sorts data by it, descending). */
export function dtypeRank(dtype: SafetensorsDType): number {
  return ORDER.indexOf(dtype);
}

export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === 'string' && Object.hasOwn(SAFETENSORS_DTYPES, value);
}

/** Dtypes `toFloat32` / `toFloat64` decode; the sub-byte floats, the FNUZ variants and C64 are refused. */
export const DECODABLE: readonly SafetensorsDType[] = [
  'BOOL',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'F8_E8M0',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'F64',
  'I64',
  'U64',
];

/** F8 E4M3 (finite-only "fn" variant: S.EEEE.MMM, bias 7, 0x7f/0xff are NaN, no infinities). */
function f8e4m3(bits: number): number {
  const sign = bits & 0x80 ? -1 : 1;
  const exp = (bits >> 3) & 0xf;
  const mant = bits & 0x7;
  if (exp === 0xf && mant === 0x7) return Number.NaN;
  if (exp === 0) return sign * mant * 2 ** -9;
  return sign * (1 + mant / 8) * 2 ** (exp - 7);
}

/** F8 E5M2 (IEEE-like: S.EEEEE.MM, bias 15, with infinities and NaNs). */
function f8e5m2(bits: number): number {
  return float16BitsToFloat32(bits << 8);
}

/** F8 E8M0: an unsigned power of two, 2^(bits - 127); 0xff is NaN. */
function f8e8m0(bits: number): number {
  return bits === 0xff ? Number.NaN : 2 ** (bits - 127);
}

function bf16(bits: number): number {
  const u = new Uint32Array([bits << 16]);
  return new Float32Array(u.buffer)[0];
}

/**
 * Decodes little-endian raw bytes of `count` elements to numbers. I64/U64 beyond 2^53 lose
 * precision (as any conversion to a JavaScript number does).
 */
export function decode(dtype: SafetensorsDType, bytes: Uint8Array, count: number, out: Float32Array | Float64Array, op: string, key?: string): void {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case 'BOOL':
    case 'U8':
      for (let i = 0; i < count; i++) out[i] = bytes[i];
      return;
    case 'I8':
      for (let i = 0; i < count; i++) out[i] = view.getInt8(i);
      return;
    case 'F8_E4M3':
      for (let i = 0; i < count; i++) out[i] = f8e4m3(bytes[i]);
      return;
    case 'F8_E5M2':
      for (let i = 0; i < count; i++) out[i] = f8e5m2(bytes[i]);
      return;
    case 'F8_E8M0':
      for (let i = 0; i < count; i++) out[i] = f8e8m0(bytes[i]);
      return;
    case 'I16':
      for (let i = 0; i < count; i++) out[i] = view.getInt16(2 * i, true);
      return;
    case 'U16':
      for (let i = 0; i < count; i++) out[i] = view.getUint16(2 * i, true);
      return;
    case 'F16':
      for (let i = 0; i < count; i++) out[i] = float16BitsToFloat32(view.getUint16(2 * i, true));
      return;
    case 'BF16':
      for (let i = 0; i < count; i++) out[i] = bf16(view.getUint16(2 * i, true));
      return;
    case 'I32':
      for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true);
      return;
    case 'U32':
      for (let i = 0; i < count; i++) out[i] = view.getUint32(4 * i, true);
      return;
    case 'F32':
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return;
    case 'I64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigInt64(8 * i, true));
      return;
    case 'U64':
      for (let i = 0; i < count; i++) out[i] = Number(view.getBigUint64(8 * i, true));
      return;
    default:
      throw new FormatError(op, `dtype ${dtype} cannot be decoded to numbers`, { key }, `one of ${DECODABLE.join(', ')}`, dtype);
  }
}

/** f32 → bfloat16 bits, rounding to nearest even (NaN stays a quiet NaN). */
export function float32ToBFloat16Bits(value: number): number {
  const u = new Uint32Array(new Float32Array([value]).buffer)[0];
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  const rounded = u + 0x7fff + ((u >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Encodes numbers as raw little-endian bytes of `dtype` (F32, F16, BF16, F64, I32, I64 and the small integers). */
export function encode(dtype: SafetensorsDType, values: ArrayLike<number>, op: string, key?: string): Uint8Array {
  const n = values.length;
  const bytes = new Uint8Array((n * SAFETENSORS_DTYPES[dtype]) / 8);
  const view = new DataView(bytes.buffer);
  switch (dtype) {
    case 'F32':
      for (let i = 0; i < n; i++) view.setFloat32(4 * i, values[i], true);
      break;
    case 'F64':
      for (let i = 0; i < n; i++) view.setFloat64(8 * i, values[i], true);
      break;
    case 'F16':
      for (let i = 0; i < n; i++) view.setUint16(2 * i, float32ToFloat16Bits(values[i]), true);
      break;
    case 'BF16':
      for (let i = 0; i < n; i++) view.setUint16(2 * i, float32ToBFloat16Bits(values[i]), true);
      break;
    case 'I32':
      for (let i = 0; i < n; i++) view.setInt32(4 * i, values[i], true);
      break;
    case 'I64':
      for (let i = 0; i < n; i++) view.setBigInt64(8 * i, BigInt(Math.trunc(values[i])), true);
      break;
    case 'I16':
      for (let i = 0; i < n; i++) view.setInt16(2 * i, values[i], true);
      break;
    case 'U8':
    case 'BOOL':
      for (let i = 0; i < n; i++) bytes[i] = values[i];
      break;
    case 'I8':
      for (let i = 0; i < n; i++) view.setInt8(i, values[i]);
      break;
    default:
      throw new FormatError(op, `encoding numbers as ${dtype} is not supported`, { key }, 'F32, F64, F16, BF16, I64, I32, I16, I8, U8 or BOOL', dtype);
  }
  return bytes;
}
