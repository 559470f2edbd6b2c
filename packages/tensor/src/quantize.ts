/**
 * MLX's affine quantization on the host: the packing and the reference arithmetic that the
 * quantized ops' kernels follow. A weight `[rows, cols]` is split into groups of `groupSize`
 * consecutive columns; each group keeps a scale and a bias (`w ≈ scale·q + bias`, q in
 * 0..2^bits − 1) and its q values are packed LSB-first into a little-endian bit stream per row,
 * `cols·bits/32` 32-bit words (for 2, 4 and 8 bits whole words; 3, 5 and 6 bits straddle them, as
 * MLX's byte-packed streams do). Packed words are held in int32 tensors (the same bits as the
 * file's U32).
 */
import { ValueError } from './errors';

/** Bit widths MLX's affine mode packs. */
export const QUANT_BITS = [2, 3, 4, 5, 6, 8] as const;
/** Group sizes MLX's affine mode uses. */
export const QUANT_GROUP_SIZES = [32, 64, 128] as const;

export interface QuantizeOptions {
  /** Bits per weight: 2, 3, 4, 5, 6 or 8 (default 4). */
  bits?: number;
  /** Consecutive input columns sharing one scale and bias: 32, 64 or 128 (default 64). */
  groupSize?: number;
}

/** A checked quantization: bits and group size. */
export interface QuantSpec {
  bits: number;
  groupSize: number;
}

/** `options` checked against MLX's affine mode (a clear error for anything else), with its defaults. */
export function quantSpec(op: string, options: QuantizeOptions = {}): QuantSpec {
  const bits = options.bits ?? 4;
  const groupSize = options.groupSize ?? 64;
  if (!(QUANT_BITS as readonly number[]).includes(bits)) throw new ValueError(op, 'unsupported bits', QUANT_BITS.join(', '), String(bits));
  if (!(QUANT_GROUP_SIZES as readonly number[]).includes(groupSize))
    throw new ValueError(op, 'unsupported group size', QUANT_GROUP_SIZES.join(', '), String(groupSize));
  return { bits, groupSize };
}

/** Refuses a column count that the groups do not divide. */
export function checkQuantColumns(op: string, cols: number, { groupSize }: QuantSpec): void {
  if (!(Number.isInteger(cols) && cols > 0 && cols % groupSize === 0))
    throw new ValueError(op, `the input dimension must be a multiple of the group size ${groupSize}`, `a multiple of ${groupSize}`, String(cols));
}

/** 32-bit words per packed row of `cols` values. */
export function packedWords(cols: number, bits: number): number {
  return (cols * bits) / 32;
}

/** The q value of column `c` of a packed row starting at word `base` (any bit width, straddling words). */
export function unpackAt(words: Int32Array | Uint32Array, base: number, c: number, bits: number): number {
  const bit = c * bits;
  const word = base + (bit >>> 5);
  const shift = bit & 31;
  let v = words[word] >>> shift;
  if (shift + bits > 32) v |= words[word + 1] << (32 - shift);
  return v & ((1 << bits) - 1);
}

/** Rounds half to even, as C's `rint` (MLX rounds so). */
function rint(x: number): number {
  const r = Math.round(x);
  // Math.round takes a tie up; r − x is exactly 0.5 only at a tie (Sterbenz), kept even.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Quantizes `values` (`rows × cols`, row-major) as MLX's `mx.quantize` does in affine mode, in
 * float32 arithmetic as it does: per group, the edge of larger magnitude (min or max) is kept
 * exactly (`scale = edge / rint(edge / step)`, `bias = edge`), a constant group gets a tiny scale,
 * and q = clip(rint((w − bias) / scale)). Scales and biases come back in float32; stored in a
 * narrower dtype they are rounded again, and dequantizing uses the stored ones.
 */
export function quantizeAffine(
  values: ArrayLike<number>,
  rows: number,
  cols: number,
  spec: QuantSpec,
): { packed: Int32Array; scales: Float32Array; biases: Float32Array } {
  const { bits, groupSize } = spec;
  checkQuantColumns('quantize', cols, spec);
  const f = Math.fround;
  const levels = (1 << bits) - 1;
  const groups = cols / groupSize;
  const words = packedWords(cols, bits);
  const packed = new Int32Array(rows * words);
  const scales = new Float32Array(rows * groups);
  const biases = new Float32Array(rows * groups);
  const eps = f(1e-7);
  // One group at a time as f32 (a Float32Array store rounds as Math.fround does).
  const group = new Float32Array(groupSize);
  for (let r = 0; r < rows; r++) {
    const rowWord = r * words;
    let bit = 0;
    for (let g = 0; g < groups; g++) {
      const start = r * cols + g * groupSize;
      let lo = Number.POSITIVE_INFINITY;
      let hi = Number.NEGATIVE_INFINITY;
      // NaN as soon as one value is not finite (x·0 is NaN for ±∞ and NaN, 0 otherwise).
      let finite = 0;
      for (let j = 0; j < groupSize; j++) {
        group[j] = values[start + j];
        const v = group[j];
        finite += v * 0;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      if (finite !== 0) {
        const j = group.findIndex((v) => !Number.isFinite(v));
        throw new ValueError('quantize', `value at row ${r}, column ${g * groupSize + j} is not finite`, 'finite weights', String(group[j]));
      }
      const lower = Math.abs(lo) > Math.abs(hi);
      let scale = Math.max(f(f(hi - lo) / levels), eps) * (lower ? 1 : -1);
      // A range wider than float32 holds (max − min overflows) has no scale: every value would
      // dequantize to NaN.
      if (!Number.isFinite(scale))
        throw new ValueError(
          'quantize',
          `the values of row ${r}, columns ${g * groupSize}..${(g + 1) * groupSize - 1} span more than float32 holds`,
          'max − min of a group within float32',
          `${lo} .. ${hi}`,
        );
      const edge = lower ? lo : hi;
      const q0 = rint(f(edge / scale));
      let bias = 0;
      if (q0 !== 0) {
        scale = f(edge / q0);
        bias = edge;
      }
      scales[r * groups + g] = scale;
      biases[r * groups + g] = bias;
      if (32 % bits === 0) {
        // 2, 4 and 8 bits fill whole words: each word assembled in a register, stored once.
        let word = rowWord + (bit >>> 5);
        for (let j = 0; j < groupSize; word++) {
          let packedWord = 0;
          for (let shift = 0; shift < 32; shift += bits, j++) {
            packedWord |= Math.min(levels, Math.max(0, rint(f(f(group[j] - bias) / scale)))) << shift;
          }
          packed[word] = packedWord;
        }
        bit += groupSize * bits;
        continue;
      }
      for (let j = 0; j < groupSize; j++, bit += bits) {
        const q = Math.min(levels, Math.max(0, rint(f(f(group[j] - bias) / scale))));
        const word = rowWord + (bit >>> 5);
        const shift = bit & 31;
        packed[word] |= q << shift;
        if (shift + bits > 32) packed[word + 1] |= q >>> (32 - shift);
      }
    }
  }
  return { packed, scales, biases };
}

/** The float64 weights `scale·q + bias` of packed rows (the reference of `dequantize`). */
export function dequantizeAffine(
  packed: Int32Array | Uint32Array,
  scales: ArrayLike<number>,
  biases: ArrayLike<number>,
  rows: number,
  cols: number,
  spec: QuantSpec,
): Float64Array {
  const { bits, groupSize } = spec;
  const words = packedWords(cols, bits);
  const groups = cols / groupSize;
  const out = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = r * groups + Math.floor(c / groupSize);
      out[r * cols + c] = scales[g] * unpackAt(packed, r * words, c, bits) + biases[g];
    }
  }
  return out;
}
