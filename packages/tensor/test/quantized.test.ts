import { describe, expect, it } from 'vitest';
import {
  dequantize,
  dequantizeAffine,
  linearCrossEntropy,
  softmaxCrossEntropy,
  sum,
  matmul,
  packedWords,
  QUANT_BITS,
  QUANT_GROUP_SIZES,
  quantize,
  quantizeAffine,
  quantizedMatmul,
  type Tensor,
  tensor,
  unpackAt,
} from '../src/index';
import { assertClose, gradCheck, randomTensor, randomValues, TOLERANCES } from '../src/testing';

/** Column c of a packed row read through a BigInt of the row's bits: an independent reading of the layout. */
function bigIntColumn(words: Int32Array, base: number, count: number, c: number, bits: number): number {
  let row = 0n;
  for (let i = count - 1; i >= 0; i--) row = (row << 32n) | BigInt(words[base + i] >>> 0);
  return Number((row >> BigInt(c * bits)) & ((1n << BigInt(bits)) - 1n));
}

describe('MLX affine quantization (host)', () => {
  it('packs q values LSB-first into a little-endian bit stream per row, for every bit width and group size', () => {
    for (const bits of QUANT_BITS) {
      for (const groupSize of QUANT_GROUP_SIZES) {
        const rows = 3;
        const cols = 2 * groupSize;
        const values = randomValues(rows * cols, bits * 100 + groupSize, 0.5);
        const spec = { bits, groupSize };
        const { packed, scales, biases } = quantizeAffine(values, rows, cols, spec);
        const words = packedWords(cols, bits);
        expect(packed.length, `${bits} bits`).toBe(rows * words);
        const deq = dequantizeAffine(packed, scales, biases, rows, cols, spec);
        for (let r = 0; r < rows; r++) {
          for (let c = 0; c < cols; c++) {
            const q = unpackAt(packed, r * words, c, bits);
            expect(q, `bits ${bits} row ${r} col ${c}`).toBe(bigIntColumn(packed, r * words, words, c, bits));
            const g = r * (cols / groupSize) + Math.floor(c / groupSize);
            // Every weight within half a step of its group (the clip can add one more step at the far edge).
            expect(Math.abs(deq[r * cols + c] - values[r * cols + c]), `bits ${bits} row ${r} col ${c}`).toBeLessThanOrEqual(
              Math.abs(scales[g]) * 1.0001 + 1e-6,
            );
          }
        }
      }
    }
  });

  it('keeps the edge of larger magnitude exact and zero representable (mx.quantize semantics)', () => {
    const groupSize = 32;
    // One group: the min has the larger magnitude, so bias = min and it dequantizes exactly.
    const values = Float64Array.from({ length: groupSize }, (_, i) => -1.5 + (i * 2.5) / (groupSize - 1));
    const { packed, scales, biases } = quantizeAffine(values, 1, groupSize, { bits: 4, groupSize });
    expect(biases[0]).toBe(-1.5);
    expect(scales[0]).toBeGreaterThan(0);
    const deq = dequantizeAffine(packed, scales, biases, 1, groupSize, { bits: 4, groupSize });
    expect(deq[0]).toBe(Math.fround(-1.5));
    // The max has the larger magnitude: a negative scale, bias = max.
    const flipped = values.map((v) => -v);
    const q2 = quantizeAffine(flipped, 1, groupSize, { bits: 4, groupSize });
    expect(q2.biases[0]).toBe(1.5);
    expect(q2.scales[0]).toBeLessThan(0);
    // A constant group keeps its value.
    const constant = new Float64Array(groupSize).fill(0.25);
    const q3 = quantizeAffine(constant, 1, groupSize, { bits: 8, groupSize });
    assertClose(dequantizeAffine(q3.packed, q3.scales, q3.biases, 1, groupSize, { bits: 8, groupSize }), constant, TOLERANCES.float32);
    // Element 0 of a 4-bit row sits in bits 0–3 of word 0.
    const row = Float64Array.from({ length: 64 }, (_, i) => (i === 0 ? 1 : 0) - (i === 1 ? 1 : 0));
    const q4 = quantizeAffine(row, 1, 64, { bits: 4, groupSize: 64 });
    expect(q4.packed[0] & 0xf).toBe(unpackAt(q4.packed, 0, 0, 4));
  });

  it('refuses bit widths, group sizes and shapes MLX does not make, and non-finite weights', () => {
    const w = randomTensor([4, 64], 1);
    expect(() => quantize(w, { bits: 7 })).toThrow('quantize: unsupported bits; expected 2, 3, 4, 5, 6, 8, got 7');
    expect(() => quantize(w, { groupSize: 16 })).toThrow('quantize: unsupported group size; expected 32, 64, 128, got 16');
    expect(() => quantize(randomTensor([4, 48], 1), { groupSize: 32 })).toThrow(
      'quantize: the input dimension must be a multiple of the group size 32; expected a multiple of 32, got 48',
    );
    expect(() =>
      quantize(
        tensor(
          Float64Array.from({ length: 32 }, (_, i) => (i === 3 ? Number.NaN : i)),
          [1, 32],
        ),
        { groupSize: 32 },
      ),
    ).toThrow(/quantize: value at row 0, column 3 is not finite/);
    // Finite values whose range float32 cannot hold (max − min overflows): no scale exists.
    const wide = Float64Array.from({ length: 64 }, (_, i) => (i === 33 ? 3e38 : i === 40 ? -3e38 : i));
    expect(() => quantize(tensor(wide, [1, 64]), { bits: 4, groupSize: 32 })).toThrow(
      'quantize: the values of row 0, columns 32..63 span more than float32 holds',
    );
  });
});

describe('dequantize and quantizedMatmul (CPU reference)', () => {
  const cases: [number, number, number][] = [
    [4, 64, 3],
    [8, 32, 5],
    [3, 128, 2],
    [2, 32, 7],
    [6, 64, 1],
    [5, 32, 4],
  ];
  for (const [bits, groupSize, outRows] of cases) {
    it(`${bits} bits, groups of ${groupSize}: the dequantized matrix and both products against float64`, () => {
      const cols = groupSize * 2;
      const w = randomTensor([outRows, cols], bits + groupSize, { dtype: 'float64', std: 0.3 });
      const q = quantize(w, { bits, groupSize });
      expect(q.weight.dtype).toBe('int32');
      expect(q.weight.shape).toEqual([outRows, (cols * bits) / 32]);
      const want = dequantizeAffine(q.weight.dataSync() as Int32Array, q.scales.dataSync(), q.biases.dataSync(), outRows, cols, { bits, groupSize });
      const deq = dequantize(q.weight, q.scales, q.biases, { bits, groupSize });
      expect(deq.shape).toEqual([outRows, cols]);
      assertClose(deq.dataSync(), want, TOLERANCES.float64);
      const ref = tensor(want, [outRows, cols], { dtype: 'float64' });
      // x·Wᵀ with x of rank 3 (awkward leading axes), and x·W the other way.
      const x = randomTensor([2, 3, cols], 7, { dtype: 'float64' });
      assertClose(
        quantizedMatmul(x, q.weight, q.scales, q.biases, { bits, groupSize }).dataSync(),
        matmul(x, ref, { transposeB: true }).dataSync(),
        TOLERANCES.float64,
      );
      const dy = randomTensor([5, outRows], 8, { dtype: 'float64' });
      assertClose(
        quantizedMatmul(dy, q.weight, q.scales, q.biases, { bits, groupSize, transpose: false }).dataSync(),
        matmul(dy, ref).dataSync(),
        TOLERANCES.float64,
      );
    });
  }

  it('float16 scales: the product in half precision against the float64 product of the same halves', () => {
    const w = randomTensor([6, 64], 3, { dtype: 'float16', std: 0.3 });
    const q = quantize(w, { bits: 4, groupSize: 32 });
    expect(q.scales.dtype).toBe('float16');
    const deq = dequantize(q.weight, q.scales, q.biases, { bits: 4, groupSize: 32 });
    const x = randomTensor([3, 64], 4, { dtype: 'float16' });
    const want = matmul(x.cast('float64'), deq.cast('float64'), { transposeB: true });
    assertClose(quantizedMatmul(x, q.weight, q.scales, q.biases, { bits: 4, groupSize: 32 }).dataSync(), want.dataSync(), TOLERANCES.float16);
  });

  it('the gradient in x by finite differences, both directions', () => {
    const w = randomTensor([5, 64], 11, { dtype: 'float64', std: 0.3 });
    const q = quantize(w, { bits: 3, groupSize: 32 });
    for (const transpose of [true, false]) {
      const x = randomTensor(transpose ? [3, 64] : [3, 5], 12, { dtype: 'float64', requiresGrad: true });
      gradCheck((t: Tensor) => quantizedMatmul(t, q.weight, q.scales, q.biases, { bits: 3, groupSize: 32, transpose }), [x]);
    }
  });

  it('linearCrossEntropy over a quantized head: the loss and h-gradient of the full logits, in chunks', () => {
    const q = quantize(randomTensor([37, 64], 21, { dtype: 'float64', std: 0.3 }), { bits: 4, groupSize: 32 });
    const head = { ...q, bits: 4, groupSize: 32 };
    const targets = tensor(
      Int32Array.from({ length: 11 }, (_, i) => (i * 5) % 37),
      [11],
      { dtype: 'int32' },
    );
    const weights = tensor(
      Float64Array.from({ length: 11 }, (_, i) => (i === 3 ? 0 : 1 + (i % 3) / 2)),
      [11],
      { dtype: 'float64' },
    );
    const losses = (chunkRows?: number) => {
      const h = randomTensor([11, 64], 22, { dtype: 'float64', requiresGrad: true });
      const loss =
        chunkRows === undefined
          ? softmaxCrossEntropy(quantizedMatmul(h, q.weight, q.scales, q.biases, head), targets, weights)
          : linearCrossEntropy(h, head, targets, weights, { chunkRows });
      sum(loss).backward();
      return { loss: loss.dataSync(), grad: h.grad!.dataSync() };
    };
    const whole = losses();
    for (const chunkRows of [4, 11]) {
      const chunked = losses(chunkRows);
      assertClose(chunked.loss, whole.loss, TOLERANCES.float64);
      assertClose(chunked.grad, whole.grad, TOLERANCES.float64);
    }
    expect(() => linearCrossEntropy(randomTensor([2, 32], 1, { dtype: 'float64' }), head, targets, weights)).toThrow(
      "linearCrossEntropy: the quantized head's input dimension must match h; expected 32 columns, got 64",
    );
  });

  it('refuses mismatched shapes, dtypes and trainable constants with a clear error', () => {
    const q = quantize(randomTensor([4, 64], 2), { bits: 4, groupSize: 32 });
    const x = randomTensor([2, 64], 3);
    expect(() => quantizedMatmul(randomTensor([2, 60], 3), q.weight, q.scales, q.biases, { groupSize: 32 })).toThrow(
      "quantizedMatmul: x's last axis must match the weight's input dimension; expected [..., 64], got [2, 60]",
    );
    expect(() => quantizedMatmul(x, q.weight, q.scales, q.biases, { bits: 8, groupSize: 32 })).toThrow(
      "quantizedMatmul: weight's packed width does not match 2 groups of 32 at 8 bits; expected [4, 16], got [4, 8]",
    );
    expect(() => quantizedMatmul(x.cast('float64'), q.weight, q.scales, q.biases, { groupSize: 32 })).toThrow(
      "quantizedMatmul: x must be in scales' dtype; expected float32, got float64",
    );
    expect(() => dequantize(q.scales, q.scales, q.biases, { groupSize: 32 })).toThrow(
      'dequantize: weight must hold packed int32 words; expected int32, got float32',
    );
    const trainable = tensor(q.scales.dataSync(), q.scales.shape, { requiresGrad: true });
    expect(() => quantizedMatmul(x, q.weight, trainable, q.biases, { groupSize: 32 })).toThrow(
      /quantizedMatmul: the quantized weight, scales and biases are constants/,
    );
  });
});
