import * as T from '@metal-lora/tensor';
import { captureGraph, cpuBackend, type DType } from '@metal-lora/tensor';
import { assertClose, randomValues, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect } from 'vitest';
import type { DispatchGraph } from '../src/graph';
import { gpuIt, withDispatchLabels } from '../../../test-support/gpu';

const SHAPES: [shape: number[], axis: number, span: number, start: number][] = [
  [[3, 5, 7], 1, 2, 3],
  [[2, 3, 9, 5], 2, 4, 5],
  [[7, 3], 0, 7, 0],
  [[4, 6], -1, 1, 5],
];

describe('webgpu writeSlice and write', () => {
  gpuIt('writeSlice writes what the CPU writes, on awkward shapes, in f32 and int32', async (b) => {
    for (const [shape, axis, span, start] of SHAPES)
      for (const dtype of ['float32', 'int32'] as DType[]) {
        const a = (axis + shape.length) % shape.length;
        const n = shape.reduce((x, y) => x * y, 1);
        const valuesShape = shape.map((d, j) => (j === a ? span : d));
        const round = (v: Float64Array) => (dtype === 'int32' ? v.map((x) => Math.round(x * 100)) : v);
        const targetValues = round(randomValues(n, 1));
        const values = round(
          randomValues(
            valuesShape.reduce((x, y) => x * y, 1),
            2,
          ),
        );
        const results = [];
        for (const backend of [b, cpuBackend]) {
          const target = T.tensor(targetValues, shape, { dtype, backend });
          T.writeSlice(target, T.tensor(values, valuesShape, { dtype, backend }), T.tensor([start], [1], { dtype: 'int32', backend }), axis);
          results.push(Array.from(await target.data()));
        }
        expect(results[0], `${shape} axis ${axis} ${dtype}`).toEqual(results[1]);
      }
  });

  gpuIt('writeKV writes what the CPU writes: rotary or not, shared or per-sequence tables, awkward heads', async (b) => {
    for (const [B, L, H, S, D, tables, start] of [
      [1, 1, 3, 9, 7, null, 5],
      [2, 3, 2, 7, 10, [3, 10], 4],
      [2, 1, 5, 5, 33, [2, 1, 1, 18], 2],
      [1, 3, 1, 4, 4, [3, 2], 3], // the last slots do not fit: the GPU writes those that do
    ] as const) {
      const kv = [randomValues(B * L * H * D, 11), randomValues(B * L * H * D, 12)];
      const cache = [randomValues(B * H * S * D, 13), randomValues(B * H * S * D, 14)];
      const tableValues = tables
        ? [
            randomValues(
              (tables as readonly number[]).reduce((x, y) => x * y, 1),
              15,
            ),
            randomValues(
              (tables as readonly number[]).reduce((x, y) => x * y, 1),
              16,
            ),
          ]
        : null;
      const run = (backend: T.Backend, dtype: DType, slots: number) => {
        const opts = { dtype, backend };
        // The cache's values in its first S slots (a longer cache has zeros past them).
        const padded = cache.map((c) => {
          const out = new Float64Array(B * H * slots * D);
          for (let bh = 0; bh < B * H; bh++) out.set(c.subarray(bh * S * D, (bh + 1) * S * D), bh * slots * D);
          return T.tensor(out, [B, H, slots, D], opts);
        });
        const [k, v] = kv.map((x) => T.tensor(x, [B, L, H, D], opts));
        const rotary = tableValues ? { cos: T.tensor(tableValues[0], [...tables!], opts), sin: T.tensor(tableValues[1], [...tables!], opts) } : undefined;
        T.writeKV(padded[0], padded[1], k, v, T.tensor([start], [1], { dtype: 'int32', backend }), rotary);
        return padded;
      };
      const got = run(b, 'float32', S);
      // The CPU refuses a start past the end: its reference writes into a cache long enough, cut to S slots.
      const want = run(cpuBackend, 'float64', Math.max(S, start + L)).map((t) => (t.shape[2] === S ? t : T.slice(t, [0, 0, 0, 0], [B, H, S, D])).dataSync());
      assertClose(await got[0].data(), want[0], { rtol: 1e-5, atol: 1e-6 }, `keys ${[B, L, H, S, D]}`);
      assertClose(await got[1].data(), want[1], { rtol: 1e-6, atol: 0 }, `values ${[B, L, H, S, D]}`);
    }
  });

  gpuIt('a start past the end writes only the rows that fit, a negative one nothing', async (b) => {
    const base = [...Array(24).keys()];
    for (const [start, want] of [
      [3, [0, 1, 2, -1]],
      [-1, [0, 1, 2, 3]],
      [9, [0, 1, 2, 3]],
    ] as const) {
      const target = T.tensor(base, [2, 4, 3], { backend: b });
      T.writeSlice(target, T.full([2, 2, 3], -1, { backend: b }), T.tensor([start], [1], { dtype: 'int32', backend: b }), 1);
      const got = Array.from(await target.data());
      const rows = [0, 1, 2, 3].map((r) => (got[r * 3] === -1 ? -1 : r));
      expect(rows, `start ${start}`).toEqual(want);
      expect(got.slice(12, 12 + 9).map((v, i) => v === -1 || v === 12 + i)).toEqual(new Array(9).fill(true));
    }
  });

  gpuIt('write lands in order with the work recorded around it, small and over 1 MiB', async (b) => {
    for (const n of [5, 300_000]) {
      const x = T.tensor(randomValues(n, 3), [n], { dtype: 'float32', backend: b });
      const before = T.mul(x, 2);
      const fresh = randomValues(n, 4);
      x.write(fresh);
      const after = T.mul(x, 2);
      assertClose(
        await before.data(),
        randomValues(n, 3).map((v) => 2 * v),
        { atol: 1e-6, rtol: 1e-6 },
      );
      assertClose(
        await after.data(),
        fresh.map((v) => 2 * v),
        { atol: 1e-6, rtol: 1e-6 },
      );
      for (const t of [x, before, after]) t.dispose();
    }
  });
});

describe('webgpu captured graphs', () => {
  gpuIt('a replay runs the step again on the inputs written since, without the ops', async (b) => {
    const live = b.memory().liveBytes;
    const w = T.randn([37, 29], { seed: 1, backend: b });
    const bias = T.randn([29], { seed: 2, backend: b });
    const x = T.tensor(randomValues(5 * 37, 3), [5, 37], { dtype: 'float32', backend: b });
    // Scalars, constants and intermediates made inside the step, released inside it.
    const step = () => T.tidy(() => T.softmax(T.mul(T.add(T.matmul(x, w), bias), T.tensor([0.5], [1], { backend: b })), -1));
    const run = captureGraph(step, b);
    if (!run) throw new Error('the webgpu backend captures');
    const { result: y, graph } = run;
    expect(graph.dispatches).toBeGreaterThan(2);
    for (let i = 0; i < 4; i++) {
      if (i > 0) {
        // Odd replays were encoded ahead, before the input changed: they still read it at submit.
        if (i % 2 === 1) graph.prepare();
        x.write(randomValues(5 * 37, 10 + i));
        const before = b.stats.dispatches;
        const { labels } = await withDispatchLabels(b, () => graph.replay());
        expect(labels).toEqual([]);
        expect(b.stats.dispatches - before).toBe(graph.dispatches);
      }
      const fresh = step();
      assertClose(await y.data(), await fresh.data(), { atol: 0, rtol: 0 }, `replay ${i}`);
      fresh.dispose();
    }
    y.dispose();
    graph.dispose();
    graph.dispose();
    for (const t of [w, bias, x]) t.dispose();
    expect(b.memory().liveBytes).toBe(live);
    expect(() => graph.replay()).toThrow('replay: the graph was disposed');
    expect(() => graph.prepare()).toThrow('prepare: the graph was disposed');
  });

  gpuIt('a live graph keeps the buffers it used out of the pool; disposing it gives them back', async (b) => {
    const x = T.randn([64, 64], { seed: 1, backend: b });
    const run = captureGraph(() => T.tidy(() => T.sum(T.exp(T.exp(x)), 1)), b)!;
    const graph = run.graph as DispatchGraph;
    expect(graph.held.length).toBeGreaterThan(0);
    const taken = Array.from({ length: 8 }, () => b.acquire(64 * 64 * 4, 'other work'));
    expect(taken.filter((buffer) => graph.acquired.has(buffer))).toEqual([]);
    for (const buffer of taken) b.release(buffer);
    const held = [...graph.held];
    run.result.dispose();
    graph.dispose();
    const again = Array.from({ length: 8 }, () => b.acquire(64 * 64 * 4, 'other work'));
    expect(again.some((buffer) => held.includes(buffer))).toBe(true);
    for (const buffer of again) b.release(buffer);
    x.dispose();
  });

  gpuIt('a step takes again the buffers it released, so the graph holds its peak, not all it allocated', async (b) => {
    const x = T.tensor(randomValues(4096, 1), [4096], { dtype: 'float32', backend: b });
    const step = () => {
      let y = T.add(x, 1);
      for (let i = 0; i < 20; i++) {
        const z = T.add(y, 1);
        y.dispose();
        y = z;
      }
      return y;
    };
    const live = b.memory().liveBytes;
    const { result: y, graph } = captureGraph(step, b)! as { result: T.Tensor; graph: DispatchGraph };
    // 21 results made in two buffers in turn, and one for the scalar each add uploads (without
    // taking released buffers again: 42).
    expect(graph.acquired.size).toBeLessThanOrEqual(3);
    expect(b.memory().liveBytes - live).toBeLessThanOrEqual(2 * 4096 * 4 + 256);
    for (let i = 0; i < 3; i++) {
      if (i > 0) {
        x.write(randomValues(4096, 7 + i));
        graph.replay();
      }
      const xv = await x.data();
      assertClose(
        await y.data(),
        Float64Array.from(xv, (v) => v + 21),
        TOLERANCES.float32,
        `replay ${i}`,
      );
    }
    y.dispose();
    graph.dispose();
    expect(b.memory().liveBytes).toBe(live);
    x.dispose();
  });

  gpuIt('writes of over 1 MiB inside the step are replayed in their place', async (b) => {
    const n = 300_000;
    const x = T.tensor(randomValues(n, 1), [n], { dtype: 'float32', backend: b });
    const a = randomValues(n, 2);
    const c = randomValues(n, 3);
    // y = (x + a) + (x + c), with one buffer holding a, then c: only right if each write is replayed before its add.
    const step = () =>
      T.tidy(() => {
        const k = T.tensor(a, [n], { dtype: 'float32', backend: b });
        const first = T.add(x, k);
        k.write(c);
        return T.add(first, T.add(x, k));
      });
    const { result: y, graph } = captureGraph(step, b)!;
    for (let i = 0; i < 3; i++) {
      if (i > 0) {
        x.write(randomValues(n, 5 + i));
        graph.replay();
      }
      const xv = await x.data();
      assertClose(
        await y.data(),
        Float64Array.from(xv, (v, j) => 2 * v + a[j] + c[j]),
        { atol: 1e-5, rtol: 1e-5 },
        `replay ${i}`,
      );
    }
    y.dispose();
    graph.dispose();
    x.dispose();
  });

  gpuIt('refuses read-backs, promises, nested captures; a step that throws leaves nothing held', async (b) => {
    const live = b.memory().liveBytes;
    const x = T.randn([8], { seed: 1, backend: b });
    expect(() => captureGraph(() => x.data(), b)).toThrow('capture: the step must be synchronous');
    let inner: Promise<unknown> | undefined;
    expect(() =>
      captureGraph(() => {
        inner = b.read(b.data(x.ref('test')), 'float32', 8);
        return 1;
      }, b),
    ).not.toThrow();
    await expect(inner).rejects.toThrow('read: a step being captured cannot read data back');
    expect(() => captureGraph(() => captureGraph(() => 1, b), b)).toThrow('capture: a step being captured cannot capture a second graph inside one');
    expect(() =>
      captureGraph(
        () =>
          T.tidy(() => {
            T.exp(x);
            throw new Error('boom');
          }),
        b,
      ),
    ).toThrow('boom');
    x.dispose();
    expect(b.memory().liveBytes).toBe(live);
  });
});
