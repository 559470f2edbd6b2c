import { readFileSync } from 'node:fs';
import { FormatError, mix32 } from '@metal-lora/tensor';
import { expect, it } from 'vitest';
import { readSafetensors, toFloat64 } from '../src/index';

const seedFile = new Uint8Array(readFileSync(new URL('./fixtures/reference.safetensors', import.meta.url)));
const peftFile = new Uint8Array(readFileSync(new URL('./fixtures/peft-lora/adapter_model.safetensors', import.meta.url)));

/** Deterministic mutations: byte flips, header-length edits, truncations, insertions, splices. */
function mutate(src: Uint8Array, i: number): Uint8Array {
  const r = (k: number) => mix32((i * 7919 + k) >>> 0);
  const out = Uint8Array.from(src);
  switch (i % 6) {
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
  for (let i = 0; i < 6000; i++) {
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
  expect(refused).toBeGreaterThan(4000);
  expect(accepted + refused).toBe(6000);
  expect(performance.now() - started).toBeLessThan(30_000);
});
