import * as T from '@metal-lora/tensor';
import { cpuBackend, type DType, type Tensor } from '@metal-lora/tensor';
import { assertClose, randomValues, TOLERANCES, type Tolerance } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import { attentionKeySplit } from '../src/kernels/block';
import type { WebGPUBackend } from '../src/index';
import { gpuIt } from '../../../test-support/gpu';

/** An input: shape, how to draw it, and its dtype on the GPU. */
interface Input {
  shape: number[];
  kind?: 'normal' | 'positive' | 'int' | 'index' | 'bool';
  max?: number;
  dtype?: DType;
}

function values(input: Input, seed: number): Float64Array {
  const n = input.shape.reduce((a, b) => a * b, 1);
  const v = randomValues(n, seed);
  switch (input.kind) {
    case 'positive':
      return v.map((x) => Math.abs(x) + 0.25);
    case 'int':
      return v.map((x) => Math.round(x * 10));
    case 'index':
      return v.map((x) => Math.floor(Math.abs(x * 1000)) % (input.max ?? 2));
    case 'bool':
      return v.map((x) => (x > 0 ? 1 : 0));
    default:
      return v;
  }
}

function make(input: Input, data: Float64Array, backend: T.Backend, reference: boolean): Tensor {
  const kind = input.kind ?? 'normal';
  const dtype: DType = kind === 'index' || kind === 'int' ? 'int32' : kind === 'bool' ? 'bool' : reference ? 'float64' : (input.dtype ?? 'float32');
  return T.tensor(data, input.shape, { dtype, backend });
}

/**
 * Runs `fn` on the GPU (float32 inputs) and on the CPU in float64 from the same random values,
 * and compares. Outputs are poisoned before the kernels run (test-support/gpu.ts sets poisonOutputs).
 */
async function againstReference(
  backend: WebGPUBackend,
  fn: (...xs: Tensor[]) => Tensor,
  inputs: Input[],
  tol: Tolerance = TOLERANCES.float32,
  label = 'result',
): Promise<void> {
  const data = inputs.map((input, i) => values(input, 1000 + i * 17));
  const reference = T.noGrad(() => fn(...inputs.map((input, i) => make(input, data[i], cpuBackend, true))));
  const got = T.noGrad(() => fn(...inputs.map((input, i) => make(input, data[i], backend, false))));
  expect(got.shape).toEqual(reference.shape);
  assertClose(await got.data(), reference.dataSync(), tol, label);
  got.dispose();
}

const transcendental: Tolerance = { rtol: 2e-5, atol: 2e-6 };
/** Data movement: only the f32 rounding of the float64 reference. */
const exactF32: Tolerance = { rtol: 6e-8, atol: 0 };

describe('webgpu elementwise ops match the float64 CPU reference', () => {
  const shape = [3, 5, 67]; // 1005 elements: not a multiple of the 256-thread workgroup
  for (const op of ['neg', 'exp', 'tanh', 'sigmoid', 'silu', 'relu', 'erf', 'abs'] as const) {
    gpuIt(`${op}`, (b) => againstReference(b, T[op], [{ shape }], transcendental));
  }
  gpuIt('log, sqrt on positives', async (b) => {
    await againstReference(b, T.log, [{ shape, kind: 'positive' }], transcendental);
    await againstReference(b, T.sqrt, [{ shape, kind: 'positive' }], transcendental);
  });
  gpuIt('gelu exact and tanh', async (b) => {
    await againstReference(b, (x) => T.gelu(x), [{ shape }], transcendental);
    await againstReference(b, (x) => T.gelu(x, { approximate: 'tanh' }), [{ shape }], transcendental);
  });
  gpuIt('int32 neg, abs, relu are exact', async (b) => {
    for (const op of ['neg', 'abs', 'relu'] as const) await againstReference(b, T[op], [{ shape: [77], kind: 'int' }], { rtol: 0, atol: 0 });
  });
  for (const op of ['add', 'sub', 'mul', 'div', 'maximum'] as const) {
    gpuIt(`${op} with broadcasting both ways`, async (b) => {
      await againstReference(b, T[op], [{ shape: [4, 1, 33] }, { shape: [3, 1] }]);
      await againstReference(b, T[op], [{ shape: [129] }, { shape: [129] }]);
      await againstReference(b, (x) => T[op](x, 1.5), [{ shape: [2, 7] }]);
    });
  }
  gpuIt('pow with negative bases and integer exponents', async (b) => {
    await againstReference(b, T.pow, [{ shape: [5, 9], kind: 'positive' }, { shape: [9] }], transcendental);
    await againstReference(b, (x) => T.pow(x, 3), [{ shape: [31] }], transcendental);
  });
  gpuIt('comparisons, where, cast', async (b) => {
    for (const op of ['equal', 'greater', 'less'] as const)
      await againstReference(
        b,
        T[op],
        [
          { shape: [6, 11], kind: 'int' },
          { shape: [11], kind: 'int' },
        ],
        { rtol: 0, atol: 0 },
      );
    await againstReference(b, T.where, [{ shape: [5, 1], kind: 'bool' }, { shape: [5, 13] }, { shape: [13] }], exactF32);
    await againstReference(b, (x) => T.cast(x, 'int32'), [{ shape: [40] }], { rtol: 0, atol: 0 });
    await againstReference(b, (x) => T.cast(x, 'bool'), [{ shape: [40], kind: 'int' }], { rtol: 0, atol: 0 });
    await againstReference(b, (x) => T.cast(T.cast(x, 'bool'), 'float32'), [{ shape: [40], kind: 'int' }], { rtol: 0, atol: 0 });
  });
});

describe('webgpu reductions and softmax', () => {
  const shape = [6, 7, 45];
  const sumTol: Tolerance = { rtol: 1e-5, atol: 1e-5 };
  for (const axes of [undefined, 2, 1, 0, [0, 2]] as (number | number[] | undefined)[]) {
    gpuIt(`sum and max over ${JSON.stringify(axes) ?? 'all'} (keepDims both ways)`, async (b) => {
      await againstReference(b, (x) => T.sum(x, axes), [{ shape }], sumTol);
      await againstReference(b, (x) => T.sum(x, axes, true), [{ shape }], sumTol);
      await againstReference(b, (x) => T.max(x, axes), [{ shape }], exactF32);
      await againstReference(b, (x) => T.mean(x, axes), [{ shape }], sumTol);
    });
  }
  gpuIt('more rows than one grid dimension holds (70,000 rows folded into y)', (b) =>
    againstReference(b, (x) => T.sum(x, -1), [{ shape: [70000, 3] }], sumTol),
  );
  gpuIt('a row longer than the workgroup (1031)', (b) => againstReference(b, (x) => T.sum(x, -1), [{ shape: [3, 1031] }], sumTol));
  gpuIt('softmax and logSoftmax on the last and a middle axis', async (b) => {
    await againstReference(b, (x) => T.softmax(x), [{ shape }], transcendental);
    await againstReference(b, (x) => T.softmax(x, 1), [{ shape }], transcendental);
    await againstReference(b, (x) => T.logSoftmax(x), [{ shape: [9, 301] }], transcendental);
    await againstReference(b, (x) => T.logSoftmax(x, 0), [{ shape: [9, 31] }], transcendental);
  });
});

describe('webgpu optimizer step', () => {
  gpuIt('adamUpdate calls with different step values recorded back to back each see their own', async (b) => {
    // The step's lr and bias corrections live in one shared uniform rewritten in the batch's order.
    const run = (backend: T.Backend, dtype: DType) => {
      const t = (seed: number, positive = false) => T.tensor(values({ shape: [37], kind: positive ? 'positive' : 'normal' }, seed), [37], { dtype, backend });
      const steps = [
        { lr: 0.1, step: 1 },
        { lr: 0.01, step: 7 },
        { lr: 0.1, step: 1 },
      ];
      return steps.map(
        ({ lr, step }, i) =>
          T.adamUpdate(t(10 * i), t(10 * i + 1), t(10 * i + 2), t(10 * i + 3, true), {
            lr,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weightDecay: 0.1,
            decoupled: true,
            step,
          })[0],
      );
    };
    const want = run(cpuBackend, 'float64');
    const got = run(b, 'float32');
    for (const [i, g] of got.entries()) assertClose(await g.data(), want[i].dataSync(), transcendental, `call ${i}`);
  });
  for (const decoupled of [false, true]) {
    gpuIt(`adamUpdate (${decoupled ? 'AdamW' : 'Adam with L2'}) on awkward sizes, every output`, async (b) => {
      for (const shape of [[7, 33], [1031], [3, 1, 5]]) {
        for (const k of [0, 1, 2]) {
          const fn = (p: Tensor, g: Tensor, m: Tensor, v: Tensor) =>
            T.adamUpdate(p, g, m, v, { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05, decoupled, step: 3 })[k];
          await againstReference(b, fn, [{ shape }, { shape }, { shape }, { shape, kind: 'positive' }], transcendental, ['param', 'm', 'v'][k]);
        }
      }
    });
  }
});

describe('webgpu adamUpdateInPlace', () => {
  gpuIt('writes into the same buffers what adamUpdate returns, on awkward sizes', async (b) => {
    for (const shape of [[7, 33], [1031]]) {
      const n = shape.reduce((x, y) => x * y, 1);
      const vals = (seed: number, positive = false) =>
        Float64Array.from({ length: n }, (_, i) => (positive ? 0.05 + ((i * seed) % 13) / 13 : Math.sin(i * seed + 0.5)));
      const opts = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05, decoupled: false, step: 3 };
      const make = (backend: T.Backend, dtype: DType) => [vals(3), vals(5), vals(7), vals(11, true)].map((x) => T.tensor(x, shape, { dtype, backend }));
      const [rp, rg, rm, rv] = make(cpuBackend, 'float64');
      const want = T.adamUpdate(rp, rg, rm, rv, opts);
      const [p, g, m, v] = make(b, 'float32');
      const buffers = [p, m, v].map((t) => (t.ref('test').data as { buffer: unknown }).buffer);
      T.noGrad(() => T.adamUpdateInPlace(p, g, m, v, opts));
      for (const [i, t] of [p, m, v].entries()) {
        expect((t.ref('test').data as { buffer: unknown }).buffer).toBe(buffers[i]);
        assertClose(await t.data(), want[i].dataSync(), transcendental, `${['param', 'm', 'v'][i]} ${shape}`);
      }
      // With a schedule tensor the kernel reads the step's values from it, not from the options.
      const [sp, sg, sm, sv] = make(b, 'float32');
      const schedule = T.tensor(T.adamSchedule(opts), [4], { dtype: 'float32', backend: b });
      T.noGrad(() => T.adamUpdateInPlace(sp, sg, sm, sv, { ...opts, lr: 0.7, step: 1 }, undefined, schedule));
      for (const [i, t] of [sp, sm, sv].entries())
        assertClose(await t.data(), want[i].dataSync(), transcendental, `scheduled ${['param', 'm', 'v'][i]} ${shape}`);
    }
  });
});

describe('webgpu adamUpdateInPlace with a half copy (mixed precision)', () => {
  gpuIt('steps the f32 master from an f16 gradient and rounds the result into the f16 copy, in place, as the CPU does', async (b, ctx) => {
    if (!b.context.report.shaderF16) {
      ctx.skip('the adapter has no shader-f16');
      return;
    }
    for (const shape of [[7, 33], [1031]]) {
      const n = shape.reduce((x, y) => x * y, 1);
      const vals = (seed: number, positive = false) =>
        Float64Array.from({ length: n }, (_, i) => (positive ? 0.05 + ((i * seed) % 13) / 13 : Math.sin(i * seed + 0.5)));
      const opts = { lr: 0.01, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05, decoupled: true, step: 3 };
      const make = (backend: T.Backend) => [
        ...[vals(3), vals(7), vals(11, true)].map((x) => T.tensor(x, shape, { dtype: 'float32', backend })),
        T.tensor(vals(5), shape, { dtype: 'float16', backend }),
        T.tensor(vals(13), shape, { dtype: 'float16', backend }),
      ];
      const [rp, rm, rv, rg, rh] = make(cpuBackend);
      T.noGrad(() => T.adamUpdateInPlace(rp, rg, rm, rv, opts, rh));
      const [p, m, v, g, h] = make(b);
      const buffers = [p, m, v, h].map((t) => (t.ref('test').data as { buffer: unknown }).buffer);
      T.noGrad(() => T.adamUpdateInPlace(p, g, m, v, opts, h));
      for (const [i, t] of [p, m, v, h].entries()) {
        expect((t.ref('test').data as { buffer: unknown }).buffer).toBe(buffers[i]);
        const want = [rp, rm, rv, rh][i].dataSync();
        assertClose(await t.data(), want, i === 3 ? TOLERANCES.float16 : transcendental, `${['master', 'm', 'v', 'copy'][i]} ${shape}`);
      }
    }
  });
});

describe('webgpu fused cross-entropy', () => {
  // Rows longer than the workgroup, a vocabulary not a multiple of 4, ignored rows (weight 0)
  // whose target is out of range, and fractional weights; forward loss and backward dlogits.
  for (const [N, V] of [
    [5, 7],
    [3, 1031],
    [67, 300],
  ]) {
    gpuIt(`softmaxCrossEntropy and its gradient, [${N}, ${V}]`, async (b) => {
      const x = values({ shape: [N, V] }, 41).map((v) => 3 * v);
      const ids = Int32Array.from({ length: N }, (_, i) => (i % 4 === 3 ? -100 : (i * 7919 + 5) % V));
      const w = Float64Array.from({ length: N }, (_, i) => (i % 4 === 3 ? 0 : 0.5 + (i % 3)));
      const dy = values({ shape: [N] }, 43);
      const run = (backend: T.Backend, dtype: DType) => {
        const logits = T.tensor(x, [N, V], { dtype, backend, requiresGrad: true });
        const targets = T.tensor(ids, [N], { dtype: 'int32', backend });
        const loss = T.softmaxCrossEntropy(logits, targets, T.tensor(w, [N], { dtype, backend }));
        const [g] = T.grad(T.sum(T.mul(loss, T.tensor(dy, [N], { dtype, backend }))), [logits]);
        return { loss, g };
      };
      const want = run(cpuBackend, 'float64');
      const got = run(b, 'float32');
      assertClose(await got.loss.data(), want.loss.dataSync(), transcendental, 'loss');
      assertClose(await got.g.data(), want.g.dataSync(), transcendental, 'dlogits');
    });
  }
  gpuIt('linearCrossEntropy in chunks of 3 rows: value and gradient in h', async (b) => {
    const [N, V, D] = [8, 1031, 24];
    const W = values({ shape: [V, D] }, 71);
    const ids = Int32Array.from({ length: N }, (_, i) => (i === 5 ? -100 : (i * 131 + 7) % V));
    const w = Float64Array.from({ length: N }, (_, i) => (i === 5 ? 0 : 1 + (i % 2)));
    await valueAndGradsAgainstReference(
      b,
      (h) => {
        const opts = { dtype: h.dtype, backend: h.backend };
        const targets = T.tensor(ids, [N], { dtype: 'int32', backend: h.backend });
        return T.linearCrossEntropy(h, T.tensor(W, [V, D], opts), targets, T.tensor(w, [N], opts), { chunkRows: 3 });
      },
      [[N, D]],
      { rtol: 1e-4, atol: 1e-5 },
    );
  });
  gpuIt('a counted target outside the classes gives NaN; an ignored one 0', async (b) => {
    const logits = T.tensor(values({ shape: [2, 5] }, 3), [2, 5], { dtype: 'float32', backend: b });
    const loss = T.softmaxCrossEntropy(
      logits,
      T.tensor(Int32Array.from([5, -100]), [2], { dtype: 'int32', backend: b }),
      T.tensor([1, 0], [2], { backend: b }),
    );
    const v = await loss.data();
    expect(Number.isNaN(v[0])).toBe(true);
    expect(v[1]).toBe(0);
  });
});

/**
 * `fn`'s value and its gradients in every input, on the GPU (f32) and the CPU (f64), from the same
 * random inputs and output weights: outputs, then gradients, compared.
 */
async function valueAndGradsAgainstReference(
  b: WebGPUBackend,
  fn: (...xs: Tensor[]) => Tensor,
  shapes: number[][],
  tol: Tolerance,
  dtype: 'float32' | 'float16' = 'float32',
): Promise<void> {
  const data = shapes.map((shape, i) => values({ shape }, 500 + 7 * i));
  const run = (backend: T.Backend, dtype: DType) => {
    const xs = shapes.map((shape, i) => T.tensor(data[i], shape, { dtype, backend, requiresGrad: true }));
    const y = fn(...xs);
    const w = T.tensor(values({ shape: [...y.shape] }, 99), y.shape, { dtype, backend });
    return { y, grads: T.grad(T.sum(T.mul(y, w)), xs) };
  };
  const want = run(cpuBackend, 'float64');
  const got = run(b, dtype);
  assertClose(await got.y.data(), want.y.dataSync(), tol, 'value');
  for (const [i, g] of got.grads.entries()) assertClose(await g.data(), want.grads[i].dataSync(), tol, `gradient ${i}`);
}

describe('webgpu fused transformer-block ops', () => {
  const tol: Tolerance = { rtol: 1e-4, atol: 1e-5 };
  for (const offset of [false, true])
    gpuIt(`rmsNorm${offset ? ' (1 + weight)' : ''}: rows of 1031 and of 13, value and both gradients`, async (b) => {
      for (const [rows, d] of [
        [3, 1031],
        [37, 13],
      ])
        await valueAndGradsAgainstReference(b, (x, w) => T.rmsNorm(x, w, { eps: 1e-5, offset }), [[rows, d], [d]], tol);
    });
  for (const offset of [false, true])
    gpuIt(`addRmsNorm${offset ? ' (1 + weight)' : ''}: rows of 1031 and of 13, the sum and its norm`, async (b) => {
      for (const [rows, d] of [
        [3, 1031],
        [37, 13],
      ]) {
        const inputs = [{ shape: [rows, d] }, { shape: [rows, d] }, { shape: [d] }];
        await againstReference(b, (x, r, w) => T.addRmsNorm(x, r, w, { eps: 1e-5, offset }).sum, inputs, tol, 'sum');
        await againstReference(b, (x, r, w) => T.addRmsNorm(x, r, w, { eps: 1e-5, offset }).y, inputs, tol, 'y');
      }
    });
  gpuIt('rope: shared and per-sequence tables, full and partial rotary, forward and inverse', async (b) => {
    for (const [tables, x] of [
      [
        [5, 6],
        [2, 3, 5, 6],
      ],
      [
        [2, 1, 5, 4],
        [2, 3, 5, 7],
      ],
    ]) {
      const cos = values({ shape: tables }, 61);
      const sin = values({ shape: tables }, 62);
      for (const inverse of [false, true])
        await valueAndGradsAgainstReference(
          b,
          (v) => {
            const opts = { dtype: v.dtype, backend: v.backend };
            return T.rope(v, T.tensor(cos, tables, opts), T.tensor(sin, tables, opts), { inverse });
          },
          [x],
          tol,
        );
      // The projection's layout in ([B, T, H, Dh]), moved by the kernel; its gradient moved back.
      await valueAndGradsAgainstReference(
        b,
        (v) => {
          const opts = { dtype: v.dtype, backend: v.backend };
          return T.rope(v, T.tensor(cos, tables, opts), T.tensor(sin, tables, opts), { layout: 'bthd' });
        },
        [[x[0], x[2], x[1], x[3]]],
        tol,
      );
    }
  });
  gpuIt('maskedSoftmax: shared and per-sequence masks, rows longer than the workgroup, value and gradient', async (b) => {
    // Causal masks with -1e9 entries, as AttentionContext builds them.
    const causal = (B: number, T: number, S: number) =>
      Float64Array.from({ length: B * T * S }, (_, i) => (i % S > (Math.floor(i / S) % T) + S - T ? -1e9 : 0.1 * (i % 3)));
    for (const [x, maskShape] of [
      [
        [2, 3, 5, 7],
        [5, 7],
      ],
      [
        [5, 7],
        [5, 7],
      ],
      [
        [2, 5, 7],
        [2, 5, 7],
      ],
      [
        [2, 2, 3, 4, 300],
        [2, 1, 1, 4, 300],
      ],
    ]) {
      const mask = causal(maskShape.length === 2 ? 1 : maskShape[0], x[x.length - 2], x[x.length - 1]);
      await valueAndGradsAgainstReference(b, (v) => T.maskedSoftmax(v, T.tensor(mask, maskShape, { dtype: v.dtype, backend: v.backend }), 0.37), [x], tol);
    }
  });
  gpuIt('decodeAttention: shared and per-sequence masks, odd head sizes, more keys than one chunk', async (b) => {
    const causal = (B: number, T: number, S: number) =>
      Float64Array.from({ length: B * T * S }, (_, i) => (i % S > (Math.floor(i / S) % T) + S - T ? -1e9 : 0.1 * (i % 3)));
    for (const [B, H, R, S, D, steps, perSeq] of [
      [1, 3, 3, 37, 64, 1, false],
      [2, 3, 6, 37, 5, 2, true],
      [1, 2, 4, 1100, 96, 1, false],
      [2, 1, 1, 300, 256, 1, true],
    ] as const) {
      const mask = causal(perSeq ? B : 1, steps, S);
      const maskShape = perSeq ? [B, 1, 1, steps, S] : [steps, S];
      await againstReference(
        b,
        (q, k, v) => T.decodeAttention(q, k, v, T.tensor(mask, maskShape, { dtype: q.dtype, backend: q.backend }), 0.37),
        [{ shape: [B, H, R, D] }, { shape: [B, H, S, D] }, { shape: [B, H, S, D] }],
        tol,
        `B ${B} H ${H} R ${R} S ${S} D ${D}`,
      );
    }
    // A fixed-capacity cache: 150 of 400 slots written, the splits past them wholly masked; in f32 and f16.
    const cacheMask = Float64Array.from({ length: 400 }, (_, j) => (j >= 150 ? -1e9 : 0));
    for (const [dtype, tolerance] of [
      ['float32', tol],
      ['float16', { rtol: 2e-2, atol: 2e-3 }],
    ] as const)
      await againstReference(
        b,
        (q, k, v) => T.decodeAttention(q, k, v, T.tensor(cacheMask, [1, 400], { dtype: q.dtype, backend: q.backend }), 0.37),
        [
          { shape: [1, 3, 3, 48], dtype },
          { shape: [1, 3, 400, 48], dtype },
          { shape: [1, 3, 400, 48], dtype },
        ],
        tolerance,
        `a cache of 400 slots, 150 written, ${dtype}`,
      );
  });
  // An additive mask with −1e9 entries: past each position where `causal`, and scattered otherwise.
  const maskValues = (B: number, T: number, S: number, causal: boolean) =>
    Float64Array.from({ length: B * T * S }, (_, i) => ((causal ? i % S > (Math.floor(i / S) % T) + S - T : i % 7 === 5) ? -1e9 : 0.1 * (i % 3)));
  /** attention's value and gradients against the float64 reference for each [B, H, g, P, S, D, perSeq, causal]. */
  const attentionCases = async (b: WebGPUBackend, cases: readonly (readonly [number, number, number, number, number, number, boolean, boolean])[]) => {
    for (const [B, H, g, P, S, D, perSeq, causal] of cases) {
      const maskShape = perSeq ? [B, 1, 1, P, S] : [P, S];
      const mask = maskValues(perSeq ? B : 1, P, S, causal);
      await valueAndGradsAgainstReference(
        b,
        (q, k, v) => T.attention(q, k, v, T.tensor(mask, maskShape, { dtype: q.dtype, backend: q.backend }), 0.37, { causal }),
        [
          [B, H, g * P, D],
          [B, H, S, D],
          [B, H, S, D],
        ],
        { rtol: 2e-4, atol: 2e-5 },
      );
    }
  };
  // Two tests, each within the suite's timeout on CI's two cores with an empty shader cache (the
  // nine shapes in one test took 131–300 s there, most of it compiling).
  gpuIt('attention: value and the gradients of q, k and v; grouped rows, masks, causal, odd heads, more keys than rows', (b) =>
    attentionCases(b, [
      [1, 2, 3, 7, 7, 17, false, true],
      [2, 1, 2, 5, 37, 64, true, false],
      [1, 1, 1, 33, 40, 8, false, true],
      [2, 2, 1, 19, 19, 3, true, true],
      [1, 1, 2, 3, 5, 256, false, false],
    ]),
  );
  gpuIt('attention: value and the gradients of q, k and v over blocks of 32 rows and of keys, and wide heads', (b) =>
    attentionCases(b, [
      // Blocks of 32 rows that straddle the query heads of a group, several blocks of keys, and
      // heads whose vec4 count leaves lanes idle (D = 100: 25 vec4) or fills two per lane (128).
      [1, 1, 3, 45, 45, 100, false, true],
      [2, 1, 2, 40, 70, 128, true, true],
      [1, 2, 1, 66, 66, 64, false, false],
      // 32 blocks of keys in 32 heads: dk and dv in one pass over the rows (the others split them).
      [1, 32, 1, 40, 1024, 8, false, false],
    ]),
  );
  it('attention backward splits the rows for dk and dv only where few keys and heads leave the GPU idle', () => {
    // SmolLM2 at batch 4 × 512: 16 blocks of keys in 12 heads; 48 blocks of rows in 6 parts of 8.
    expect(attentionKeySplit(1536, 512, 12)).toEqual({ parts: 6, partRows: 256 });
    // Llama-3.2-1B: 16 × 32 blocks: 2 parts of the 64 blocks of rows.
    expect(attentionKeySplit(2048, 512, 32)).toEqual({ parts: 2, partRows: 1024 });
    // Enough blocks of keys, or a single block of rows: one part covering every row.
    expect(attentionKeySplit(4096, 2048, 16)).toEqual({ parts: 1, partRows: 4096 });
    expect(attentionKeySplit(20, 9, 1)).toEqual({ parts: 1, partRows: 32 });
    // Parts never outnumber the blocks of rows, and cover them all.
    for (const [R, S, H] of [
      [135, 45, 1],
      [1000, 3, 2],
      [33, 1, 1],
    ]) {
      const { parts, partRows } = attentionKeySplit(R, S, H);
      expect(parts).toBeLessThanOrEqual(Math.ceil(R / 32));
      expect(partRows % 32).toBe(0);
      expect(parts * partRows).toBeGreaterThanOrEqual(R);
      expect((parts - 1) * partRows).toBeLessThan(R);
    }
  });
  gpuIt('attention: causal over an open mask leaves out the keys past each position, with as many, more or fewer keys than positions', async (b) => {
    for (const [P, S] of [
      [9, 9],
      [9, 14],
      [9, 5],
    ]) {
      const mask = Float64Array.from(values({ shape: [P, S] }, 41));
      await valueAndGradsAgainstReference(
        b,
        (q, k, v) => T.attention(q, k, v, T.tensor(mask, [P, S], { dtype: q.dtype, backend: q.backend }), 0.45, { causal: true }),
        [
          [2, 2, 2 * P, 12],
          [2, 2, S, 12],
          [2, 2, S, 12],
        ],
        { rtol: 2e-4, atol: 2e-5 },
      );
    }
  });
  gpuIt('attention in float16: value and gradients (dk and dv summed over parts of the rows)', async (b) => {
    const mask = Float64Array.from({ length: 33 * 33 }, (_, i) => (i % 33 > Math.floor(i / 33) ? -1e9 : 0.1 * (i % 3)));
    await valueAndGradsAgainstReference(
      b,
      (q, k, v) => T.attention(q, k, v, T.tensor(mask, [33, 33], { dtype: q.dtype, backend: q.backend }), 0.3, { causal: true }),
      [
        [1, 2, 66, 24],
        [1, 2, 33, 24],
        [1, 2, 33, 24],
      ],
      { rtol: 3e-2, atol: 3e-2 },
      'float16',
    );
  });
  gpuIt('attention in float16, and a row that sees no key', async (b) => {
    const mask = Float64Array.from({ length: 9 * 9 }, (_, i) => (i % 9 > Math.floor(i / 9) ? -1e9 : 0));
    await againstReference(
      b,
      (q, k, v) => T.attention(q, k, v, T.tensor(mask, [9, 9], { dtype: q.dtype, backend: q.backend }), 0.25, { causal: true }),
      [
        { shape: [2, 2, 18, 40], dtype: 'float16' },
        { shape: [2, 2, 9, 40], dtype: 'float16' },
        { shape: [2, 2, 9, 40], dtype: 'float16' },
      ],
      { rtol: 2e-2, atol: 2e-3 },
      'float16',
    );
    const blind = T.tensor([-Infinity, -Infinity, -Infinity, 0, 1, 2], [2, 3], { dtype: 'float32', backend: b });
    const q = T.tensor(values({ shape: [1, 1, 2, 4] }, 3), [1, 1, 2, 4], { dtype: 'float32', backend: b });
    const k = T.tensor(values({ shape: [1, 1, 3, 4] }, 4), [1, 1, 3, 4], { dtype: 'float32', backend: b });
    const y = await T.attention(q, k, k, blind, 1).data();
    expect(Array.from(y.slice(0, 4))).toEqual([0, 0, 0, 0]);
    expect(Array.from(y.slice(4)).every((x) => Number.isFinite(x) && x !== 0)).toBe(true);
    // Its gradients: none for the blind row's q, finite ones elsewhere.
    const [qg, kg] = [
      [1, 1, 2, 4, 3],
      [1, 1, 3, 4, 4],
    ].map(([B, H, R, D, seed]) => T.tensor(values({ shape: [B, H, R, D] }, seed), [B, H, R, D], { dtype: 'float32', backend: b, requiresGrad: true }));
    const [dq, dk] = T.grad(T.sum(T.attention(qg, kg, kg, blind, 1)), [qg, kg]);
    const dqv = await dq.data();
    expect(Array.from(dqv.slice(0, 4))).toEqual([0, 0, 0, 0]);
    expect(Array.from(dqv.slice(4)).every(Number.isFinite)).toBe(true);
    expect(Array.from(await dk.data()).every(Number.isFinite)).toBe(true);
  });
  for (const activation of ['silu', 'gelu_tanh'] as const)
    gpuIt(`gatedActivation (${activation}) on 1031 elements: value and both gradients`, (b) =>
      valueAndGradsAgainstReference(b, (g, u) => T.gatedActivation(T.mul(g, 3), u, activation), [[1031], [1031]], tol),
    );
});

describe('webgpu layout and indexing', () => {
  gpuIt('transpose rank 2..4, broadcastTo', async (b) => {
    await againstReference(b, (x) => T.transpose(x), [{ shape: [33, 17] }], exactF32);
    await againstReference(b, (x) => T.transpose(x, [2, 0, 1]), [{ shape: [3, 5, 7] }], exactF32);
    await againstReference(b, (x) => T.transpose(x, [1, 3, 0, 2]), [{ shape: [2, 3, 4, 5] }], exactF32);
    await againstReference(b, (x) => T.broadcastTo(x, [4, 3, 5]), [{ shape: [3, 1] }], exactF32);
  });
  gpuIt('slice, pad, concat', async (b) => {
    await againstReference(b, (x) => T.slice(x, [1, 2, 0], [4, -1, 5]), [{ shape: [5, 9, 7] }], exactF32);
    await againstReference(
      b,
      (x) =>
        T.pad(
          x,
          [
            [1, 2],
            [0, 3],
          ],
          0.5,
        ),
      [{ shape: [3, 5] }],
      exactF32,
    );
    await againstReference(b, (x, y) => T.concat([x, y], 1), [{ shape: [3, 4, 2] }, { shape: [3, 7, 2] }], exactF32);
  });
  gpuIt('gather (axis 0 and 1) and scatterAdd', async (b) => {
    await againstReference(b, (t, i) => T.gather(t, i), [{ shape: [11, 6] }, { shape: [3, 4], kind: 'index', max: 11 }], exactF32);
    await againstReference(b, (t, i) => T.gather(t, i, 1), [{ shape: [2, 9, 3] }, { shape: [5], kind: 'index', max: 9 }], exactF32);
    await againstReference(b, (i, u) => T.scatterAdd(i, u, [7, 3]), [{ shape: [10], kind: 'index', max: 7 }, { shape: [10, 3] }]);
  });
});

describe('webgpu memory accounting', () => {
  gpuIt('live bytes return to the start after tensors are disposed; peak covers the step', async (backend) => {
    await backend.sync();
    const start = backend.memory().liveBytes;
    backend.resetPeak();
    const x = T.tensor(new Float32Array(1000).fill(1), [10, 100], { backend });
    const y = T.tidy(() => T.sum(T.exp(x), 1));
    expect(Array.from(await y.data())[0]).toBeCloseTo(100 * Math.E, 2);
    expect(backend.memory().peakBytes).toBeGreaterThanOrEqual(start + 2 * 4000);
    x.dispose();
    y.dispose();
    expect(backend.memory().liveBytes).toBe(start);
  });
  gpuIt('a full pool evicts its least recently released buffers, so a reused size stays pooled', async (backend) => {
    const saved = backend.maxPooledBytes;
    backend.releasePool();
    backend.maxPooledBytes = 64 * 1024;
    const held: GPUBuffer[] = [];
    try {
      const fillers = [0, 1, 2].map(() => backend.acquire(32 * 1024, 'filler'));
      for (const b of fillers) backend.release(b);
      // The third release evicted the first filler; the pool is at its budget.
      expect(backend.memory().pooledBytes).toBe(64 * 1024);
      const ws = backend.acquire(8 * 1024, 'workspace');
      backend.release(ws);
      // Room for the workspace came from the older of the two idle fillers.
      expect(backend.memory().pooledBytes).toBe(40 * 1024);
      for (let i = 0; i < 3; i++) {
        const again = backend.acquire(8 * 1024, 'workspace');
        expect(again).toBe(ws);
        backend.release(again);
      }
      held.push(backend.acquire(32 * 1024, 'filler'));
      expect(held[0]).toBe(fillers[2]);
      expect(backend.memory().pooledBytes).toBe(8 * 1024);
    } finally {
      for (const b of held) backend.release(b);
      backend.maxPooledBytes = saved;
    }
  });
});
