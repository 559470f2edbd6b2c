import * as T from '@metal-lora/tensor';
import { cpuBackend, type Tensor } from '@metal-lora/tensor';
import { assertClose, gemmTolerance, randomValues, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import { gpuIt, withDispatchLabels } from '../../../test-support/gpu';
import type { WebGPUBackend } from '../src/index';
import { qgemvBody } from '../src/kernels/qgemv-body';

/** A random weight quantized on the host, as CPU tensors (the reference) and on the GPU. */
function quantized(b: WebGPUBackend, rows: number, cols: number, bits: number, groupSize: number, seed: number, dtype: 'float32' | 'float16' = 'float32') {
  const w = T.tensor(randomValues(rows * cols, seed, 0.4), [rows, cols], { dtype, backend: cpuBackend });
  const q = T.quantize(w, { bits, groupSize });
  const gpu = [q.weight, q.scales, q.biases].map((t) => T.tensor(t.dataSync(), [...t.shape], { dtype: t.dtype, backend: b }));
  // The float64 matrix the packed one stands for.
  const ref = T.dequantize(q.weight, q.scales.cast('float64'), q.biases.cast('float64'), { bits, groupSize });
  return { cpu: q, gpu: { weight: gpu[0], scales: gpu[1], biases: gpu[2] }, ref };
}

describe('qgemv.wgsl section GEN (generated text)', () => {
  it('at 2, 4 and 8 bits: each value masked in place by a literal, from the word shifted down 16 past bit 23', () => {
    // The first word's first values, masked in place, and those whose bits reach past bit 23.
    for (const [bits, inPlace, high] of [
      [2, ['0x3u', '0xcu', '0x300000u'], ['0xc0u', '0x300u']],
      [4, ['0xfu', '0xf0u', '0xf0000u'], ['0xf0u', '0xf00u', '0xf000u']],
      [8, ['0xffu', '0xff00u'], ['0xffu', '0xff00u']],
    ] as const) {
      const body = qgemvBody({ bits, vw: 4, rows: 2, mr: 1 });
      // Two rows of W, one vec4 of words each, every value of every word unpacked.
      expect(body.match(/let w\d_0 = wq\[/g)?.length, `q${bits}`).toBe(2);
      expect(body.match(/\| MAGIC\) - TWO23/g)?.length, `q${bits}`).toBe(2 * 4 * (32 / bits));
      for (const mask of inPlace) expect(body, `q${bits}`).toContain(`(w0_0.x & ${mask}) | MAGIC`);
      expect(body, `q${bits}`).toContain('let h0_0_0 = w0_0.x >> 16u;');
      for (const mask of high) expect(body, `q${bits}`).toContain(`(h0_0_0 & ${mask}) | MAGIC`);
      expect(body).not.toMatch(/\[[a-z]\w*\]/);
    }
  });
  it('f32 at 3, 5 and 6 bits: chunks of BITS scalar words, the values across two words joined from both', () => {
    for (const [bits, joins] of [
      // Values whose bits cross a word boundary in 32 values: 3 bits: 10 (30..32) and 21 (63..65); 5 bits: 6, 12, 19, 25; 6 bits: 5, 10, 21, 26.
      [3, ['(w0_0 >> 30u) | ((w0_1 & 0x1u) << 2u)', '(w0_1 >> 31u) | ((w0_2 & 0x3u) << 1u)']],
      [
        5,
        [
          '(w0_0 >> 30u) | ((w0_1 & 0x7u) << 2u)',
          '(w0_1 >> 28u) | ((w0_2 & 0x1u) << 4u)',
          '(w0_2 >> 31u) | ((w0_3 & 0xfu) << 1u)',
          '(w0_3 >> 29u) | ((w0_4 & 0x3u) << 3u)',
        ],
      ],
      [
        6,
        [
          '(w0_0 >> 30u) | ((w0_1 & 0xfu) << 2u)',
          '(w0_1 >> 28u) | ((w0_2 & 0x3u) << 4u)',
          '(w0_3 >> 30u) | ((w0_4 & 0xfu) << 2u)',
          '(w0_4 >> 28u) | ((w0_5 & 0x3u) << 4u)',
        ],
      ],
    ] as const) {
      const body = qgemvBody({ bits, vw: bits, rows: 1, mr: 1 });
      expect(body.match(/let w0_\d+ = wq\[/g)?.length, `q${bits}`).toBe(bits);
      expect(body.match(/\| MAGIC\) - TWO23/g)?.length, `q${bits}`).toBe(32);
      for (const join of joins) expect(body, `q${bits}`).toContain(join);
      expect(body.match(/<< \d+u\)/g)?.length, `q${bits}`).toBe(joins.length);
    }
  });
});

describe('webgpu quantized weights (MLX affine)', () => {
  // Every bit width, every group size, awkward row counts; rows of x from 1 (decode) to past a tile.
  const cases: [number, number, number, number, number][] = [
    // bits, groupSize, W rows, groups per row, x rows
    [4, 64, 67, 3, 1],
    [4, 32, 33, 5, 70],
    [8, 128, 17, 2, 9],
    [3, 32, 45, 3, 5],
    [2, 64, 70, 2, 33],
    [6, 32, 19, 4, 3],
    [5, 128, 9, 1, 66],
    // The vec4 GEMM's QUANT section (M ≥ 64, aligned): both directions, word-aligned and straddling bits.
    [4, 32, 64, 4, 100],
    [8, 64, 96, 2, 130],
    [3, 32, 32, 3, 65],
    // 5 and 6 bits through the vec4 kernel both ways (values straddling words in weight_vec4).
    [6, 32, 64, 4, 100],
    [5, 32, 64, 4, 100],
    // Long K over few tiles: the vec4 kernel with K split (x·Wᵀ, then dy·W).
    [4, 64, 68, 36, 64],
    [8, 32, 2052, 2, 64],
    // The decode kernel (2, 4 and 8 bits, up to eight rows): awkward row counts of W.
    [8, 32, 33, 2, 4],
    [2, 128, 13, 1, 8],
    [4, 64, 250, 2, 2],
    [4, 32, 40, 2, 16],
    // Rows long enough that each lane of a team walks several chunks (64 at 4 bits, VW = 4; 64 at
    // 2 bits in groups of 32, VW = 1).
    [4, 64, 37, 32, 1],
    [2, 32, 21, 32, 3],
  ];
  for (const [bits, groupSize, rows, groups, m] of cases) {
    gpuIt(`${bits} bits, groups of ${groupSize}: dequantize, x·Wᵀ and dy·W against float64 ([${rows}, ${groups * groupSize}], ${m} rows)`, async (b) => {
      b.poisonOutputs = true;
      try {
        const cols = groups * groupSize;
        const { gpu, ref } = quantized(b, rows, cols, bits, groupSize, bits * 31 + m);
        const spec = { bits, groupSize };
        const deq = T.dequantize(gpu.weight, gpu.scales, gpu.biases, spec);
        assertClose(await deq.data(), ref.dataSync(), TOLERANCES.float32, 'dequantize');
        const xv = randomValues(m * cols, 5 + m);
        const x = T.tensor(xv, [m, cols], { dtype: 'float32', backend: b });
        const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true });
        // Products reorder their sums: the GEMM tolerance, relative to the largest output.
        assertClose(
          await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, spec).data(),
          want.dataSync(),
          gemmTolerance('float32', want.dataSync()),
          'x·Wᵀ',
        );
        const dv = randomValues(m * rows, 9 + m);
        const dy = T.tensor(dv, [1, m, rows], { dtype: 'float32', backend: b });
        const back = T.quantizedMatmul(dy, gpu.weight, gpu.scales, gpu.biases, { ...spec, transpose: false });
        expect(back.shape).toEqual([1, m, cols]);
        const wantBack = T.matmul(T.tensor(dv, [m, rows], { dtype: 'float64', backend: cpuBackend }), ref);
        assertClose(await back.data(), wantBack.dataSync(), gemmTolerance('float32', wantBack.dataSync()), 'dy·W');
      } finally {
        b.poisonOutputs = false;
      }
    });
  }

  // quantizeAsync on webgpu runs quantize.wgsl: the CPU reference's f32 formula, so scales and
  // biases agree to rounding and the q values exactly, but where a value sits within rounding of a
  // half step (the GPU's division is not correctly rounded): there, one step apart at most.
  for (const [bits, groupSize, rows, groups] of [
    [4, 64, 7, 3],
    [8, 32, 5, 4],
    [2, 128, 3, 2],
    [3, 32, 6, 3],
    [5, 64, 4, 2],
    [6, 32, 9, 2],
  ] as const) {
    gpuIt(`quantize on the GPU: ${bits} bits, groups of ${groupSize} against the CPU reference`, async (b) => {
      const cols = groups * groupSize;
      const values = randomValues(rows * cols, bits * 7 + groupSize, 0.3);
      // Awkward groups: all one value, one holding zeros and an exact tie, one positive only.
      values.fill(0.25, 0, groupSize);
      for (let j = 0; j < groupSize; j++) values[cols + j] = j % 3 === 0 ? 0 : j === 1 ? 1.5 : j / groupSize;
      for (let j = 0; j < groupSize; j++) values[2 * cols + j] = Math.abs(values[2 * cols + j]) + 0.1;
      const spec = { bits, groupSize };
      const want = T.quantize(T.tensor(values, [rows, cols], { dtype: 'float32', backend: cpuBackend }), spec);
      b.poisonOutputs = true;
      try {
        const got = await T.quantizeAsync(T.tensor(values, [rows, cols], { dtype: 'float32', backend: b }), spec);
        expect(got.weight.shape).toEqual(want.weight.shape);
        expect(got.weight.dtype).toBe('int32');
        const scales = await got.scales.data();
        assertClose(scales, want.scales.dataSync(), { rtol: 1e-6, atol: 0 }, 'scales');
        assertClose(await got.biases.data(), want.biases.dataSync(), { rtol: 1e-6, atol: 0 }, 'biases');
        const unpack = (w: ArrayLike<number>) => {
          // The q values: dequantized with scale 1 and bias 0.
          const deq = T.dequantize(
            T.tensor(Int32Array.from(w), [rows, (cols * bits) / 32], { dtype: 'int32', backend: cpuBackend }),
            T.tensor(
              Float64Array.from({ length: rows * groups }, () => 1),
              [rows, groups],
              { dtype: 'float64', backend: cpuBackend },
            ),
            T.zeros([rows, groups], { dtype: 'float64', backend: cpuBackend }),
            spec,
          );
          return deq.dataSync();
        };
        const [gq, wq] = [unpack(await got.weight.data()), unpack(want.weight.dataSync())];
        let differ = 0;
        for (let i = 0; i < gq.length; i++) {
          expect(Math.abs(gq[i] - wq[i])).toBeLessThanOrEqual(1);
          if (gq[i] !== wq[i]) {
            differ++;
            // Only at a near-tie: the value sits within rounding of the midpoint between the two steps.
            const g = Math.floor(i / cols) * groups + Math.floor((i % cols) / groupSize);
            const t = (values[i] - want.biases.dataSync()[g]) / want.scales.dataSync()[g];
            expect(Math.abs(Math.abs(t - Math.floor(t)) - 0.5)).toBeLessThan(1e-4);
          }
        }
        expect(differ).toBeLessThanOrEqual(2);
      } finally {
        b.poisonOutputs = false;
      }
    });
  }

  gpuIt('quantize on the GPU: a value that is not finite or a range that overflows named as on the CPU, and float16 weights', async (b, ctx) => {
    const values = randomValues(4 * 64, 3, 0.5);
    values[2 * 64 + 17] = Number.NaN;
    await expect(T.quantizeAsync(T.tensor(values, [4, 64], { dtype: 'float32', backend: b }), { bits: 4, groupSize: 32 })).rejects.toThrow(
      'quantize: value at row 2, column 17 is not finite',
    );
    values[2 * 64 + 17] = Number.NEGATIVE_INFINITY;
    await expect(T.quantizeAsync(T.tensor(values, [4, 64], { dtype: 'float32', backend: b }), { bits: 8, groupSize: 64 })).rejects.toThrow(
      'quantize: value at row 2, column 17 is not finite',
    );
    // Finite values whose range float32 cannot hold: the GPU marks the group, the host names it.
    const wide = Float64Array.from(values, (v, i) => (i === 70 ? 3e38 : i === 75 ? -3e38 : v));
    wide[2 * 64 + 17] = 0.5;
    await expect(T.quantizeAsync(T.tensor(wide, [4, 64], { dtype: 'float32', backend: b }), { bits: 4, groupSize: 32 })).rejects.toThrow(
      'quantize: the values of row 1, columns 0..31 span more than float32 holds',
    );
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    values[2 * 64 + 17] = 0.75;
    const half = Float64Array.from(values, (v) => T.float16BitsToFloat32(T.float32ToFloat16Bits(v)));
    const want = T.quantize(T.tensor(half, [4, 64], { dtype: 'float16', backend: cpuBackend }), { bits: 4, groupSize: 32 });
    // float16 weights: an infinity is reported through an f16 NaN scale.
    const inf = Float64Array.from(half, (v, i) => (i === 100 ? Number.POSITIVE_INFINITY : v));
    await expect(T.quantizeAsync(T.tensor(inf, [4, 64], { dtype: 'float16', backend: b }), { bits: 4, groupSize: 32 })).rejects.toThrow(
      'quantize: value at row 1, column 36 is not finite',
    );
    const got = await T.quantizeAsync(T.tensor(half, [4, 64], { dtype: 'float16', backend: b }), { bits: 4, groupSize: 32 });
    expect(got.scales.dtype).toBe('float16');
    assertClose(await got.scales.data(), want.scales.dataSync(), TOLERANCES.float16, 'scales');
    assertClose(await got.biases.data(), want.biases.dataSync(), TOLERANCES.float16, 'biases');
    const deq = await T.dequantize(got.weight, got.scales, got.biases, { bits: 4, groupSize: 32 }).data();
    const wantDeq = T.dequantize(want.weight, want.scales, want.biases, { bits: 4, groupSize: 32 }).dataSync();
    const scales = want.scales.dataSync();
    // The CPU's weights but at a near-tie, where the q value may be one step apart.
    let differ = 0;
    for (let i = 0; i < half.length; i++) {
      const d = Math.abs(deq[i] - wantDeq[i]);
      if (d > 1e-3 + 1e-2 * Math.abs(wantDeq[i])) {
        differ++;
        expect(d).toBeLessThanOrEqual(Math.abs(scales[Math.floor(i / 32)]) * 1.01);
      }
    }
    expect(differ).toBeLessThanOrEqual(2);
  });

  // QLoRA: loraLinear over a packed base, forward and every gradient against the CPU float64
  // reference (the same op on the float64 parts): decode rows (qgemv and a term product), the vec4
  // kernel with the LoRA term as its prologue, and the composed products (odd rank, or forced).
  const qlora: [number, number, number, number, number, number, boolean, number, boolean][] = [
    // M, in, out, rank, bits, groupSize, bias, dropout, force composed
    [5, 128, 36, 4, 4, 64, true, 0, false],
    [70, 128, 68, 8, 4, 32, false, 0.2, false],
    [66, 96, 40, 8, 8, 32, true, 0, false],
    [33, 64, 20, 3, 3, 32, false, 0.1, false],
    [40, 128, 24, 4, 4, 64, true, 0.1, true],
    [70, 96, 40, 8, 6, 32, true, 0.1, false],
  ];
  for (const [m, inF, outF, r, bits, groupSize, hasBias, p, composed] of qlora) {
    gpuIt(
      `QLoRA loraLinear: M=${m} in=${inF} out=${outF} r=${r}, ${bits} bits / ${groupSize}, bias ${hasBias}, dropout ${p}${composed ? ', composed' : ''}: y, dx, dA, dB against float64`,
      async (b) => {
        const { cpu, gpu } = quantized(b, outF, inF, bits, groupSize, m + r);
        const values = {
          x: randomValues(m * inF, 1),
          a: randomValues(r * inF, 2, 0.2),
          b: randomValues(outF * r, 3, 0.2),
          bias: randomValues(outF, 4),
          dy: randomValues(m * outF, 5),
        };
        const run = async (backend: T.Backend, q: { weight: Tensor; scales: Tensor; biases: Tensor }, dtype: 'float32' | 'float64') => {
          const make = (v: Float64Array, shape: number[], grad = false) => T.tensor(v, shape, { dtype, backend, requiresGrad: grad });
          const x = make(values.x, [m, inF], true);
          const a = make(values.a, [r, inF], true);
          const lb = make(values.b, [outF, r], true);
          const quant = {
            scales: dtype === 'float64' ? q.scales.cast('float64') : q.scales,
            biases: dtype === 'float64' ? q.biases.cast('float64') : q.biases,
            bits,
            groupSize,
          };
          const y = T.loraLinear(x, q.weight, a, lb, { scale: 1.5, bias: hasBias ? make(values.bias, [outF]) : undefined, dropout: p, seed: 11, quant });
          T.sum(T.mul(y, make(values.dy, [m, outF]))).backward();
          return Promise.all([y, x.grad!, a.grad!, lb.grad!].map((t) => t.data()));
        };
        b.poisonOutputs = true;
        if (composed) b.overrides.loraPlan = 'composed';
        try {
          const want = await run(cpuBackend, cpu, 'float64');
          const { result: got, labels } = await withDispatchLabels(b, () => run(b, gpu, 'float32'));
          // Which kernels ran: the fused y and dx products on the vec4 tile (no separate base
          // product), qgemv at decode, or the quantized products beside the LoRA term's.
          const fusedTile = labels.filter((l) => l === 'vec4-128x128').length;
          if (m > 16 && r % 4 === 0 && !composed) {
            expect(fusedTile).toBe(2);
            expect(labels.filter((l) => /^(qmm|qgemv)/.test(l))).toEqual([]);
          } else {
            expect(fusedTile).toBe(0);
            expect(labels.some((l) => (m <= 16 ? l.startsWith(`qgemv q${bits} m${m}`) : l.startsWith('qmm-')))).toBe(true);
          }
          for (const [i, name] of ['y', 'dx', 'dA', 'dB'].entries()) assertClose(got[i], want[i], gemmTolerance('float32', want[i]), name);
        } finally {
          b.poisonOutputs = false;
          b.overrides.loraPlan = null;
        }
      },
    );
  }

  gpuIt('QLoRA loraLinear in float16 (f16 scales, activations and adapter): y, dx, dA, dB within f16 tolerance of float64', async (b, ctx) => {
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    const [m, inF, outF, r] = [70, 128, 68, 8];
    const { cpu, gpu } = quantized(b, outF, inF, 4, 64, 21, 'float16');
    const half = (v: Float64Array) => Float64Array.from(v, (x) => T.float16BitsToFloat32(T.float32ToFloat16Bits(x)));
    const values = {
      x: half(randomValues(m * inF, 1)),
      a: half(randomValues(r * inF, 2, 0.2)),
      b: half(randomValues(outF * r, 3, 0.2)),
      dy: half(randomValues(m * outF, 5)),
    };
    const run = async (backend: T.Backend, q: { weight: Tensor; scales: Tensor; biases: Tensor }, dtype: 'float16' | 'float64') => {
      const make = (v: Float64Array, shape: number[], grad = false) => T.tensor(v, shape, { dtype, backend, requiresGrad: grad });
      const x = make(values.x, [m, inF], true);
      const a = make(values.a, [r, inF], true);
      const lb = make(values.b, [outF, r], true);
      const cast = (t: Tensor) => (dtype === 'float64' ? t.cast('float64') : t);
      const y = T.loraLinear(x, q.weight, a, lb, { scale: 2, quant: { scales: cast(q.scales), biases: cast(q.biases), bits: 4, groupSize: 64 } });
      T.sum(T.mul(y, make(values.dy, [m, outF]))).backward();
      return Promise.all([y, x.grad!, a.grad!, lb.grad!].map((t) => t.data()));
    };
    const want = await run(cpuBackend, cpu, 'float64');
    b.poisonOutputs = true;
    try {
      const got = await run(b, gpu, 'float16');
      for (const [i, name] of ['y', 'dx', 'dA', 'dB'].entries()) assertClose(got[i], want[i], gemmTolerance('float16', want[i]), name);
    } finally {
      b.poisonOutputs = false;
    }
  });

  gpuIt('float16 scales and activations: the product within f16 tolerance of float64', async (b, ctx) => {
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    const { gpu, ref } = quantized(b, 40, 128, 4, 64, 3, 'float16');
    const xv = Float64Array.from(randomValues(12 * 128, 4), (v) => T.float16BitsToFloat32(T.float32ToFloat16Bits(v)));
    const x: Tensor = T.tensor(xv, [12, 128], { dtype: 'float16', backend: b });
    const want = T.matmul(T.tensor(xv, [12, 128], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true });
    assertClose(await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, { bits: 4, groupSize: 64 }).data(), want.dataSync(), TOLERANCES.float16);
  });

  gpuIt('the gradient in x through the GPU kernels equals the CPU float64 one', async (b) => {
    const { cpu, gpu } = quantized(b, 24, 64, 4, 32, 8);
    const xv = randomValues(5 * 64, 6);
    const grad = async (backend: T.Backend, q: { weight: Tensor; scales: Tensor; biases: Tensor }, dtype: 'float32' | 'float64') => {
      const x = T.tensor(xv, [5, 64], { dtype, backend, requiresGrad: true });
      const [scales, biases] = dtype === 'float64' ? [q.scales.cast('float64'), q.biases.cast('float64')] : [q.scales, q.biases];
      const loss = T.sum(
        T.mul(
          T.quantizedMatmul(x, q.weight, scales, biases, { bits: 4, groupSize: 32 }),
          T.quantizedMatmul(x, q.weight, scales, biases, { bits: 4, groupSize: 32 }),
        ),
      );
      loss.backward();
      return x.grad!.data();
    };
    const want = await grad(cpuBackend, cpu, 'float64');
    assertClose(await grad(b, gpu, 'float32'), want, gemmTolerance('float32', want));
  });

  gpuIt('decode: every team shape (lanes 8 / 16 / 32, rows 1 / 2 / 4) against float64, ragged N', async (b) => {
    const [bits, groupSize, rows, cols] = [4, 32, 203, 640];
    const { gpu, ref } = quantized(b, rows, cols, bits, groupSize, 77);
    b.poisonOutputs = true;
    try {
      for (const m of [1, 3, 11]) {
        const xv = randomValues(m * cols, 80 + m);
        const x = T.tensor(xv, [m, cols], { dtype: 'float32', backend: b });
        const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
        for (const lanes of [8, 16, 32])
          for (const teamRows of [1, 2, 4]) {
            b.overrides.qgemv = { lanes, rows: teamRows };
            const got = await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, { bits, groupSize }).data();
            assertClose(got, want, gemmTolerance('float32', want), `M=${m} lanes ${lanes} rows ${teamRows}`);
          }
      }
    } finally {
      b.overrides.qgemv = null;
      b.poisonOutputs = false;
    }
    b.overrides.qgemv = { lanes: 24, rows: 2 };
    try {
      expect(() =>
        T.quantizedMatmul(T.tensor(randomValues(cols, 1), [1, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
          bits,
          groupSize,
        }),
      ).toThrow(
        'quantizedMatmul: overrides.qgemv names a team shape qgemv.wgsl does not have; expected lanes 8, 16 or 32 and rows 1, 2, 4 or 8, got lanes 24, rows 2',
      );
      b.overrides.qgemv = { lanes: 8, rows: 2, once: 1 as unknown as boolean };
      expect(() =>
        T.quantizedMatmul(T.tensor(randomValues(cols, 1), [1, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
          bits,
          groupSize,
        }),
      ).toThrow('quantizedMatmul: overrides.qgemv.once is not a flag; expected true, false or absent, got number 1');
      for (const [forced, got] of [
        [{ lanes: 8, rows: 2, body: 'unroll' as const, once: true }, 'unroll, once'],
        [{ lanes: 8, rows: 2, body: 'fast' as 'unroll' }, 'fast'],
      ] as const) {
        b.overrides.qgemv = forced;
        expect(() =>
          T.quantizedMatmul(T.tensor(randomValues(cols, 1), [1, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
            bits,
            groupSize,
          }),
        ).toThrow(
          `quantizedMatmul: overrides.qgemv.body names a body this product cannot take; expected 'loop', or 'unroll' without once; 'unroll' alone at 3, 5 and 6 bits, got ${got} at 4 bits`,
        );
      }
    } finally {
      b.overrides.qgemv = null;
    }
  });

  // bits, group size, values a chunk: 2 bits in groups of 32 (one word a chunk), 4 and 8 bits (four words).
  const WHOLE_WORDS = [
    [2, 32, 16],
    [4, 64, 32],
    [8, 32, 16],
  ] as const;

  // qgemv.wgsl with and without its section ONCE at 2 bits in groups
  // of 32 (one word a chunk), 4 and 8 bits (four), 1 to 16 rows of x, team shapes in turn (at most
  // two rows of W beside 16 rows of x: accumulators cost compile time), ragged N; a short K, where
  // each lane walks one chunk or none, and a long one, where each walks three or more.
  gpuIt('decode: section ONCE against float64 (2 / 4 / 8 bits, M 1..16, ragged N, short and long K)', async (b) => {
    const rows = 75;
    const shapes = [
      [8, 4],
      [16, 2],
      [32, 1],
      [8, 2],
      [32, 4],
      [16, 1],
    ] as const;
    let turn = 0;
    b.poisonOutputs = true;
    try {
      for (const [bits, groupSize, chunkValues] of WHOLE_WORDS) {
        // 6 chunks a row (fewer than any team's lanes), then 100 (at least 3 per lane).
        const weights = [6, 100].map((chunks) => {
          const cols = chunks * chunkValues;
          return { cols, ...quantized(b, rows, cols, bits, groupSize, bits * 13 + chunks) };
        });
        for (const m of [1, 3, 8, 16])
          for (const once of [false, true]) {
            const fitting = shapes.filter(([, teamRows]) => m < 16 || teamRows <= 2);
            const [lanes, teamRows] = fitting[turn++ % fitting.length];
            b.overrides.qgemv = { lanes, rows: teamRows, once };
            for (const { cols, gpu, ref } of weights) {
              const xv = randomValues(m * cols, 90 + m + cols);
              const x = T.tensor(xv, [m, cols], { dtype: 'float32', backend: b });
              const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
              const what = `q${bits} K=${cols} M=${m} lanes ${lanes} rows ${teamRows}${once ? ' once' : ''}`;
              const { labels } = await withDispatchLabels(b, async () => {
                const got = await T.quantizedMatmul(x, gpu.weight, gpu.scales, gpu.biases, { bits, groupSize }).data();
                assertClose(got, want, gemmTolerance('float32', want), what);
              });
              expect(labels, what).toContain(`qgemv q${bits} m${m}${once ? ' once' : ''}`);
            }
          }
      }
    } finally {
      b.overrides.qgemv = null;
      b.poisonOutputs = false;
    }
  });

  // Section GEN's body (f32 and f16 x) at the widths above and at 3, 5 and 6 bits (chunks of BITS
  // words, values across two words), 1 and 3 rows of x, ragged N, a short K (fewer chunks than
  // lanes) and a long one.
  gpuIt('decode: section GEN against float64 (2 to 8 bits, M 1..3, ragged N)', async (b) => {
    const rows = 75;
    b.poisonOutputs = true;
    try {
      for (const [bits, groupSize, chunkValues] of [...WHOLE_WORDS, [3, 32, 32], [5, 64, 32], [6, 128, 32]] as const)
        for (const dtype of b.context.report.shaderF16 ? (['float32', 'float16'] as const) : (['float32'] as const)) {
          // 4 chunks a row (fewer than any team's lanes), then 40.
          const weights = [4, 40].map((chunks) => {
            const cols = chunks * chunkValues;
            return { cols, ...quantized(b, rows, cols, bits, groupSize, bits * 17 + chunks, dtype) };
          });
          // x from the storage buffer, or staged in workgroup memory: all of it at once (one row),
          // or in tiles of 16 chunks (three rows; K = 40 chunks: two whole tiles and a ragged one).
          for (const [m, stage] of [
            [1, undefined],
            [3, undefined],
            [1, true],
            [3, 16],
          ] as const) {
            const [lanes, teamRows] = stage ? (m === 1 ? [8, 8] : [16, 8]) : m === 1 ? [8, 4] : [32, 2];
            b.overrides.qgemv = { lanes, rows: teamRows, body: 'unroll', stage };
            for (const { cols, gpu, ref } of weights) {
              // Large values in the second chunk of each row (sums that would overflow f16).
              const xv = Float64Array.from(randomValues(m * cols, 91 + m + cols), (v, i) => {
                const big = Math.floor((i % cols) / chunkValues) === 1 ? 3000 : 1;
                return dtype === 'float16' ? T.float16BitsToFloat32(T.float32ToFloat16Bits(v * big)) : v * big;
              });
              const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
              const what = `q${bits} ${dtype} K=${cols} M=${m}${stage ? ` stage ${stage}` : ''}`;
              const { labels } = await withDispatchLabels(b, async () => {
                const got = await T.quantizedMatmul(T.tensor(xv, [m, cols], { dtype, backend: b }), gpu.weight, gpu.scales, gpu.biases, {
                  bits,
                  groupSize,
                }).data();
                assertClose(got, want, gemmTolerance(dtype, want), what);
              });
              expect(labels, what).toContain(`qgemv q${bits} m${m} unroll${stage ? ' stage' : ''}`);
            }
            // One-hot rows over a chunk's columns: every bit position of every word unpacked exactly.
            const { cols, gpu, ref } = weights[0];
            for (let first = 0; m === 3 && first < chunkValues; first += m) {
              const x = new Float64Array(m * cols);
              for (let i = 0; i < m; i++) x[i * cols + first + i] = 1;
              const got = await T.quantizedMatmul(T.tensor(x, [m, cols], { dtype, backend: b }), gpu.weight, gpu.scales, gpu.biases, {
                bits,
                groupSize,
              }).data();
              const want = T.matmul(T.tensor(x, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
              assertClose(got, want, TOLERANCES[dtype], `q${bits} ${dtype} one-hot columns ${first}..${first + m - 1}`);
            }
          }
        }
    } finally {
      b.overrides.qgemv = null;
      b.poisonOutputs = false;
    }
  });

  gpuIt('decode at 3, 5 and 6 bits streams W through qgemv up to 4 rows of x, the tiled GEMM from 5', async (b) => {
    const [rows, cols] = [40, 256];
    for (const bits of [3, 5, 6]) {
      const { gpu, ref } = quantized(b, rows, cols, bits, 64, 60 + bits);
      for (const m of [1, 4, 5]) {
        const xv = randomValues(m * cols, 61 + m);
        const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
        const { labels } = await withDispatchLabels(b, async () => {
          const got = await T.quantizedMatmul(T.tensor(xv, [m, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
            bits,
            groupSize: 64,
          }).data();
          assertClose(got, want, gemmTolerance('float32', want), `q${bits} M=${m}`);
        });
        if (m <= 4) expect(labels, `q${bits} M=${m}`).toContain(`qgemv q${bits} m${m} unroll`);
        else
          expect(
            labels.filter((l) => l.startsWith('qgemv')),
            `q${bits} M=${m}`,
          ).toEqual([]);
      }
    }
    const w6 = quantized(b, rows, cols, 6, 64, 1).gpu;
    b.overrides.qgemv = { lanes: 8, rows: 2, once: true };
    try {
      expect(() =>
        T.quantizedMatmul(T.tensor(randomValues(cols, 1), [1, cols], { dtype: 'float32', backend: b }), w6.weight, w6.scales, w6.biases, {
          bits: 6,
          groupSize: 64,
        }),
      ).toThrow(
        "quantizedMatmul: overrides.qgemv.body names a body this product cannot take; expected 'loop', or 'unroll' without once; 'unroll' alone at 3, 5 and 6 bits, got unroll, once at 6 bits",
      );
      // x's tiles: a whole number of chunks a lane, and no more than a row's 8 chunks.
      for (const stage of [12, 16]) {
        b.overrides.qgemv = { lanes: 8, rows: 2, stage };
        expect(() =>
          T.quantizedMatmul(T.tensor(randomValues(cols, 1), [1, cols], { dtype: 'float32', backend: b }), w6.weight, w6.scales, w6.biases, {
            bits: 6,
            groupSize: 64,
          }),
        ).toThrow(
          `quantizedMatmul: overrides.qgemv.stage names a tile of x this product cannot take; expected GEN's body ('unroll') and true, or chunks a tile that are a multiple of the 8 lanes up to 8, got ${stage} with unroll, 1 rows of f32 x`,
        );
      }
    } finally {
      b.overrides.qgemv = null;
    }
  });

  gpuIt('decode in f16 unpacks each value once for all rows from 4 rows of x on (the default), not below', async (b, ctx) => {
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    const [rows, cols] = [70, 256];
    const { gpu, ref } = quantized(b, rows, cols, 4, 64, 77, 'float16');
    for (const m of [3, 4, 16]) {
      const xv = Float64Array.from(randomValues(m * cols, 78 + m), (v) => T.float16BitsToFloat32(T.float32ToFloat16Bits(v)));
      const want = T.matmul(T.tensor(xv, [m, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
      const { labels } = await withDispatchLabels(b, async () => {
        const got = await T.quantizedMatmul(T.tensor(xv, [m, cols], { dtype: 'float16', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
          bits: 4,
          groupSize: 64,
        }).data();
        assertClose(got, want, gemmTolerance('float16', want), `f16 M=${m}`);
      });
      expect(labels).toContain(`qgemv q4 m${m}${m >= 4 ? ' once' : ''}`);
    }
  });

  // An LM head's width (N ≥ 65536) at one row of x: GEN's body at 8 bits, with x staged at 4 (the H200's choice).
  gpuIt('decode of a wide W: GEN at 8 bits, with x staged at 4, against float64', async (b) => {
    const [rows, cols] = [65536 + 37, 64];
    const xv = randomValues(cols, 5);
    b.poisonOutputs = true;
    try {
      for (const bits of [8, 4]) {
        const { gpu, ref } = quantized(b, rows, cols, bits, 32, 70 + bits);
        const want = T.matmul(T.tensor(xv, [1, cols], { dtype: 'float64', backend: cpuBackend }), ref, { transposeB: true }).dataSync();
        const { labels } = await withDispatchLabels(b, async () => {
          const got = await T.quantizedMatmul(T.tensor(xv, [1, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, {
            bits,
            groupSize: 32,
          }).data();
          assertClose(got, want, gemmTolerance('float32', want), `q${bits}`);
        });
        expect(labels).toContain(bits === 8 ? 'qgemv q8 m1 unroll' : 'qgemv q4 m1 unroll stage');
        for (const t of Object.values(gpu)) t.dispose();
      }
    } finally {
      b.poisonOutputs = false;
    }
  });

  // One-hot rows of x pick single columns of W: the decode kernel must unpack every value of every
  // word exactly (each bit position, values past bit 23 included), whatever the row and chunk; in
  // its default form and in section ONCE's (another unpacking).
  for (const [bits, groupSize, rows] of [
    [4, 32, 37],
    [8, 64, 21],
    [2, 64, 19],
    [2, 32, 9],
    [4, 128, 5],
  ] as const) {
    gpuIt(`decode (${bits} bits, groups of ${groupSize}): one-hot rows give W's columns exactly`, async (b) => {
      const cols = 2 * groupSize;
      const { gpu } = quantized(b, rows, cols, bits, groupSize, 40 + bits);
      const spec = { bits, groupSize };
      const w = await T.dequantize(gpu.weight, gpu.scales, gpu.biases, spec).data();
      try {
        for (const forced of [null, { lanes: 16, rows: 1, once: true }]) {
          b.overrides.qgemv = forced;
          for (let first = 0; first < cols; first += 16) {
            const m = Math.min(16, cols - first);
            const x = new Float64Array(m * cols);
            for (let i = 0; i < m; i++) x[i * cols + first + i] = 1;
            const got = await T.quantizedMatmul(T.tensor(x, [m, cols], { dtype: 'float32', backend: b }), gpu.weight, gpu.scales, gpu.biases, spec).data();
            const want = Float64Array.from({ length: m * rows }, (_, i) => w[(i % rows) * cols + first + Math.floor(i / rows)]);
            assertClose(got, want, TOLERANCES.float32, `columns ${first}..${first + m - 1}${forced ? ' (once)' : ''}`);
          }
        }
      } finally {
        b.overrides.qgemv = null;
      }
    });
  }
});
