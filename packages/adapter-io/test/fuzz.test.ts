import { readFileSync } from 'node:fs';
import { FormatError, mix32 } from '@metal-lora/tensor';
import { expect, it } from 'vitest';
import { mlxToPeft, parseMlxAdapter, parsePeftAdapter, readSafetensors, serializeMlxAdapter, toFloat64 } from '../src/index';
import { versionedAdapter } from './helpers/versions';

/** How many mutations each test tries: small in CI, large with `pnpm -F @metal-lora/adapter-io fuzz`. */
const COUNT = Number(process.env.METAL_LORA_FUZZ_COUNT ?? 6000);

const seedFile = new Uint8Array(readFileSync(new URL('./fixtures/reference.safetensors', import.meta.url)));
const peftFile = new Uint8Array(readFileSync(new URL('./fixtures/peft-lora/adapter_model.safetensors', import.meta.url)));

/** Deterministic mutations: byte flips, header-length edits, truncations, insertions, splices. */
function mutate(src: Uint8Array, i: number): Uint8Array {
  const r = (k: number) => mix32((i * 7919 + k) >>> 0);
  const out = Uint8Array.from(src);
  switch (i % 7) {
    case 6: {
      // Nest the header deeper than any parser should recurse.
      const n = Number(new DataView(out.buffer).getBigUint64(0, true));
      const at = 8 + 1 + (r(7) % Math.max(1, n - 2));
      const depth = 100 + (r(8) % 20_000);
      const deep = new Uint8Array(out.length + depth);
      deep.set(out.subarray(0, at));
      deep.fill(0x5b, at, at + depth);
      deep.set(out.subarray(at), at + depth);
      new DataView(deep.buffer).setBigUint64(0, BigInt(n + depth), true);
      return deep;
    }
    case 0: {
      const flips = 1 + (r(1) % 8);
      for (let f = 0; f < flips; f++) out[r(10 + f) % out.length] = r(20 + f) & 0xff;
      return out;
    }
    case 1:
      return out.subarray(0, r(1) % out.length);
    case 2: {
      // Rewrite the header length.
      new DataView(out.buffer).setBigUint64(0, BigInt(r(2) % (out.length + 64)) * (r(3) % 5 === 0 ? 1n << 40n : 1n), true);
      return out;
    }
    case 3: {
      // Flip bytes inside the JSON header only (digits, quotes, brackets).
      const n = Number(new DataView(out.buffer).getBigUint64(0, true));
      for (let f = 0; f < 3; f++) out[8 + (r(30 + f) % n)] = '0123456789{}[]",:-eE.'.charCodeAt(r(40 + f) % 21);
      return out;
    }
    case 4: {
      const extra = new Uint8Array(out.length + 1 + (r(5) % 16));
      extra.set(out);
      return extra;
    }
    default: {
      const cut = r(6) % out.length;
      const joined = new Uint8Array(out.length);
      joined.set(out.subarray(cut));
      joined.set(out.subarray(0, cut), out.length - cut);
      return joined;
    }
  }
}

it('thousands of mutated and truncated files give only typed errors (no crash, no hang)', () => {
  const started = performance.now();
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < COUNT; i++) {
    const bytes = mutate(i % 2 ? seedFile : peftFile, i);
    try {
      const st = readSafetensors(bytes);
      // Whatever parses must also decode (or refuse with a typed error).
      for (const e of Object.values(st.tensors)) {
        try {
          toFloat64(e);
        } catch (error) {
          expect(error).toBeInstanceOf(FormatError);
        }
      }
      accepted++;
    } catch (error) {
      if (!(error instanceof FormatError)) throw new Error(`mutation ${i} threw ${(error as Error)?.constructor?.name}: ${(error as Error)?.message}`);
      refused++;
    }
  }
  expect(refused).toBeGreaterThan(COUNT * 0.6);
  expect(accepted + refused).toBe(COUNT);
  expect(performance.now() - started).toBeLessThan(30_000 * (COUNT / 6000));
});

/** JSON-aware mutations of an adapter config: values replaced by other types, keys dropped, text flipped. */
function mutateConfig(text: string, i: number): string {
  const r = (k: number) => mix32((i * 104729 + k) >>> 0);
  const odd: unknown[] = [null, 0, -1, 1e308, Number.NaN, 'x', '', [], {}, [1, 'a'], true, 5, 0.5, -0, 2 ** 53, '__proto__'];
  switch (i % 4) {
    case 0:
    case 1: {
      const config = JSON.parse(text) as Record<string, unknown>;
      const paths: [Record<string, unknown>, string][] = [];
      const walk = (o: Record<string, unknown>) => {
        for (const k of Object.keys(o)) {
          paths.push([o, k]);
          if (o[k] && typeof o[k] === 'object' && !Array.isArray(o[k])) walk(o[k] as Record<string, unknown>);
        }
      };
      walk(config);
      const [o, k] = paths[r(1) % paths.length];
      if (i % 4 === 0) o[k] = odd[r(2) % odd.length];
      else delete o[k];
      return JSON.stringify(config);
    }
    case 2:
      return text.slice(0, r(3) % text.length);
    default: {
      const chars = [...text];
      chars[r(4) % chars.length] = '{}[]",:0-9ae'[r(5) % 13] ?? '"';
      return chars.join('');
    }
  }
}

it('mutated adapter configs and weights give only typed errors, with memory bounded', () => {
  const mlx = serializeMlxAdapter(versionedAdapter(1));
  const peft = mlxToPeft(mlx);
  const before = process.memoryUsage().heapUsed;
  let refused = 0;
  for (let i = 0; i < Math.ceil(COUNT / 10); i++) {
    for (const [files, parse] of [
      [mlx, parseMlxAdapter],
      [peft, parsePeftAdapter],
    ] as const) {
      const mutated =
        i % 3 === 2 ? { weights: mutate(files.weights, i), config: files.config } : { weights: files.weights, config: mutateConfig(files.config, i) };
      try {
        const adapter = parse(mutated);
        // Whatever is accepted is an adapter that computes: finite, positive rank, dropout in range.
        expect(Number.isInteger(adapter.rank) && adapter.rank > 0 && Number.isFinite(adapter.scale) && adapter.dropout >= 0 && adapter.dropout < 1).toBe(true);
      } catch (error) {
        if (!(error instanceof FormatError)) throw new Error(`mutation ${i} threw ${(error as Error)?.constructor?.name}: ${(error as Error)?.message}`);
        refused++;
      }
    }
  }
  expect(refused).toBeGreaterThan(0);
  // Parsed adapters are garbage once dropped: the heap does not grow with the count.
  expect(process.memoryUsage().heapUsed - before).toBeLessThan(512 * 1024 * 1024);
});
