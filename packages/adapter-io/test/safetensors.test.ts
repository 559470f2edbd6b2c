import { readFileSync } from 'node:fs';
import { FormatError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import {
  float32ToBFloat16Bits,
  fromNumbers,
  openSafetensorsBlob,
  readSafetensors,
  type SafetensorsDType,
  toFloat32,
  toFloat64,
  writeSafetensors,
} from '../src/index';

const fixture = (name: string) => new Uint8Array(readFileSync(new URL(`./fixtures/${name}`, import.meta.url)));
// Python's json writes Infinity for inf; 1e999 parses to it.
const reference = JSON.parse(readFileSync(new URL('./fixtures/reference.json', import.meta.url), 'utf8').replace(/\bInfinity\b/g, '1e999')) as {
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: SafetensorsDType; shape: number[]; values: number[] }>;
};

/** Builds a file from a header object and a data length (for malformed-input tests). */
function file(header: unknown, data = 0, rawHeader?: string): Uint8Array {
  const text = rawHeader ?? JSON.stringify(header);
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + bytes.length + data);
  new DataView(out.buffer).setBigUint64(0, BigInt(bytes.length), true);
  out.set(bytes, 8);
  return out;
}

function formatError(fn: () => unknown): FormatError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FormatError);
    return e as FormatError;
  }
  throw new Error('expected a FormatError, got none');
}

describe('readSafetensors on a file written by the reference Python writer', () => {
  const st = readSafetensors(fixture('reference.safetensors'));
  it('reads metadata, names, dtypes and shapes', () => {
    expect({ ...st.metadata }).toEqual(reference.metadata);
    expect(Object.keys(st.tensors).sort()).toEqual(Object.keys(reference.tensors).sort());
    for (const [name, t] of Object.entries(reference.tensors)) {
      expect(st.tensors[name].dtype).toBe(t.dtype);
      expect(st.tensors[name].shape).toEqual(t.shape);
    }
  });
  it('decodes every dtype to exactly the values torch reports', () => {
    for (const [name, t] of Object.entries(reference.tensors)) {
      expect(Array.from(toFloat64(st.tensors[name])), name).toEqual(t.values);
    }
    expect(Array.from(toFloat32(st.tensors.bias_f16))).toEqual(reference.tensors.bias_f16.values.map(Math.fround));
  });
  it('data are zero-copy views into the input', () => {
    const bytes = fixture('reference.safetensors');
    const again = readSafetensors(bytes);
    expect(again.tensors.weight.data.buffer).toBe(bytes.buffer);
  });
  it('writing the same tensors and metadata reproduces the reference bytes exactly', () => {
    const bytes = fixture('reference.safetensors');
    const copy = Object.fromEntries(Object.entries(st.tensors).map(([k, e]) => [k, { dtype: e.dtype, shape: e.shape, data: e.data.slice() }]));
    expect(Buffer.from(writeSafetensors(copy, { ...st.metadata })).equals(Buffer.from(bytes))).toBe(true);
  });
});

describe('the reference implementation test vectors', () => {
  const valid = () => file({ test: { dtype: 'I32', shape: [2, 2], data_offsets: [0, 16] } }, 16);
  it('accepts the 84-byte example and reads its tensor', () => {
    const bytes = valid();
    expect(bytes.length).toBe(84);
    expect(readSafetensors(bytes).tensors.test.shape).toEqual([2, 2]);
  });
  it('refuses trailing bytes and truncation', () => {
    const long = new Uint8Array(85);
    long.set(valid());
    expect(formatError(() => readSafetensors(long)).message).toMatch(/trailing bytes/);
    expect(formatError(() => readSafetensors(valid().subarray(0, 82))).message).toMatch(/truncated/);
  });
  it('header too large, too small, past the end, not UTF-8, not JSON', () => {
    const big = new Uint8Array(16);
    new DataView(big.buffer).setBigUint64(0, 0xffffffffffn, true);
    expect(formatError(() => readSafetensors(big)).message).toMatch(/header is too large/);
    expect(formatError(() => readSafetensors(new Uint8Array(0))).offset).toBe(0);
    const past = new Uint8Array(8);
    new DataView(past.buffer).setBigUint64(0, 60n, true);
    expect(formatError(() => readSafetensors(past)).message).toMatch(/past the end/);
    expect(formatError(() => readSafetensors(file(null, 0, '\xff'.repeat(1)).map((b, i) => (i === 8 ? 0xff : b)))).message).toMatch(/UTF-8/);
    expect(formatError(() => readSafetensors(file(null, 0, '{'))).message).toMatch(/not valid JSON/);
  });
  it('refuses overlapping offsets (the JSON attack) and gaps', () => {
    const attack = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`t${i}`, { dtype: 'I32', shape: [2, 2], data_offsets: [0, 16] }]));
    expect(formatError(() => readSafetensors(file(attack, 16))).message).toMatch(/overlap/);
    const gap = { a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: { dtype: 'U8', shape: [2], data_offsets: [3, 5] } };
    const e = formatError(() => readSafetensors(file(gap, 5)));
    expect(e.message).toMatch(/gap/);
    expect(e.key).toBe('b');
  });
});

describe('strict validation with typed errors naming the key', () => {
  const cases: [string, unknown, number, RegExp, string?][] = [
    ['unknown dtype', { x: { dtype: 'F12', shape: [1], data_offsets: [0, 2] } }, 2, /unknown dtype/, 'x'],
    ['size mismatch', { x: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4, /does not match dtype and shape/, 'x'],
    ['negative dim', { x: { dtype: 'U8', shape: [-1], data_offsets: [0, 0] } }, 0, /invalid shape/, 'x'],
    ['fractional dim', { x: { dtype: 'U8', shape: [1.5], data_offsets: [0, 1] } }, 1, /invalid shape/, 'x'],
    ['offsets reversed', { x: { dtype: 'U8', shape: [0], data_offsets: [2, 1] } }, 2, /end before they begin/, 'x'],
    ['non-string metadata', { __metadata__: { a: 1 } }, 0, /metadata value is not a string/, 'a'],
    ['metadata array', { __metadata__: [] }, 0, /__metadata__ is not an object/],
    ['sub-byte tensor', { x: { dtype: 'F4', shape: [3], data_offsets: [0, 1] } }, 1, /whole bytes/, 'x'],
    ['header array', [], 0, /not a JSON object/],
  ];
  it.each(cases)('%s', (_name, header, data, pattern, key) => {
    const e = formatError(() => readSafetensors(file(header, data)));
    expect(e.message).toMatch(pattern);
    expect(e.message.startsWith('readSafetensors: ')).toBe(true);
    if (key) expect(e.key).toBe(key);
  });
  it('repeated keys as the reference: a tensor name keeps its last entry, a repeated field is refused', () => {
    const dup = '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    expect(formatError(() => readSafetensors(file(null, 2, dup))).message).toMatch(/gap before tensor data/);
    const field = '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
    expect(formatError(() => readSafetensors(file(null, 1, field))).message).toMatch(
      /^readSafetensors: header is not valid JSON \(duplicate key "dtype" at character \d+\)/,
    );
    const proto = '{"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}';
    expect(Object.keys(readSafetensors(file(null, 1, proto)).tensors)).toEqual(['__proto__']);
  });
  it('refuses a header nested thousands deep with a FormatError, not a stack overflow', () => {
    const deep = `{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}}`;
    expect(formatError(() => readSafetensors(file(null, 1, deep))).message).toMatch(/nested deeper than 128 levels/);
  });
  it('reads a 10 MB header of 200,000 empty tensors (a parse that is not linear would time out)', () => {
    const n = 200_000;
    const parts = Array.from({ length: n }, (_, i) => `"t${i}":{"dtype":"F32","shape":[0,${i}],"data_offsets":[0,0]}`);
    const header = `{${parts.join(',')}}`;
    const { tensors } = readSafetensors(file(null, 0, header));
    expect(Object.keys(tensors)).toHaveLength(n);
    expect(tensors.t199999.shape).toEqual([0, 199999]);
  });
  it('accepts __metadata__ absent, {} and null, empty tensors and scalars', () => {
    for (const meta of [undefined, {}, null]) {
      const header = {
        ...(meta === undefined ? {} : { __metadata__: meta }),
        e: { dtype: 'F32', shape: [0, 3], data_offsets: [0, 0] },
        s: { dtype: 'F32', shape: [], data_offsets: [0, 4] },
      };
      const st = readSafetensors(file(header, 4));
      expect({ ...st.metadata }).toEqual({});
      expect(st.tensors.s.shape).toEqual([]);
    }
  });
  it('refuses decoding dtypes that have no numeric decoder', () => {
    const st = readSafetensors(file({ x: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, 8));
    expect(() => toFloat32(st.tensors.x)).toThrow(/cannot be decoded/);
  });
});

describe('writer', () => {
  it('is deterministic, pads the header to 8 bytes with spaces, orders data by dtype then name', () => {
    const tensors = { b: fromNumbers([1, 2], [2], 'F16'), a: fromNumbers([3], [1], 'F32'), c: fromNumbers([4, 5, 6], [3], 'F64') };
    const one = writeSafetensors(tensors);
    expect(Buffer.from(one).equals(Buffer.from(writeSafetensors(tensors)))).toBe(true);
    const n = Number(new DataView(one.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(one.subarray(8, 8 + n)));
    expect(Object.keys(header)).toEqual(['c', 'a', 'b']);
    expect(header.c.data_offsets).toEqual([0, 24]);
    const back = readSafetensors(one);
    expect(Array.from(toFloat64(back.tensors.c))).toEqual([4, 5, 6]);
  });
  it('round-trips f32 through F16 and BF16 with round-to-nearest-even', () => {
    expect(float32ToBFloat16Bits(1)).toBe(0x3f80);
    expect(float32ToBFloat16Bits(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(float32ToBFloat16Bits(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie → even (up)
    const st = readSafetensors(writeSafetensors({ h: fromNumbers([0.1], [1], 'F16'), b: fromNumbers([0.1], [1], 'BF16') }));
    expect(toFloat32(st.tensors.h)[0]).toBeCloseTo(0.0999755859375, 10);
    expect(toFloat32(st.tensors.b)[0]).toBeCloseTo(0.10009765625, 10);
  });
  it('refuses data that does not match the shape, and bad metadata', () => {
    expect(() => writeSafetensors({ x: { dtype: 'F32', shape: [3], data: new Float32Array(2) } })).toThrow(/data size does not match/);
    expect(() => writeSafetensors({}, { a: 1 as unknown as string })).toThrow(FormatError);
  });
});

describe('openSafetensorsBlob: a file in a Blob, read one tensor at a time', () => {
  const bytes = fixture('reference.safetensors');
  it('reads the header and each tensor as readSafetensors does, slicing only what it reads', async () => {
    const whole = readSafetensors(bytes);
    const read: number[] = [];
    const blob = new Blob([bytes]);
    const spy = {
      size: blob.size,
      slice: (a?: number, b?: number) => {
        read.push((b ?? blob.size) - (a ?? 0));
        return blob.slice(a, b);
      },
    };
    const lazy = await openSafetensorsBlob(spy, 'reference.safetensors');
    expect({ ...lazy.metadata }).toEqual({ ...whole.metadata });
    const headerBytes = read.reduce((a, b) => a + b, 0);
    expect(headerBytes).toBeLessThan(bytes.length);
    const [first, second] = Object.keys(whole.tensors);
    const entry = await lazy.read(first);
    expect(entry.dtype).toBe(whole.tensors[first].dtype);
    expect(entry.shape).toEqual(whole.tensors[first].shape);
    expect(Array.from(entry.data)).toEqual(Array.from(whole.tensors[first].data));
    // One slice of exactly the tensor's bytes.
    expect(read.at(-1)).toBe(whole.tensors[first].data.byteLength);
    expect(lazy.info[second].byteLength).toBe(whole.tensors[second].data.byteLength);
    await expect(lazy.read('constructor')).rejects.toThrow('openSafetensorsBlob: reference.safetensors has no such tensor');
  });
  it('refuses a truncated file and a blob that shrank after its header was read', async () => {
    await expect(openSafetensorsBlob(new Blob([bytes.slice(0, 5)]), 'short')).rejects.toThrow(
      'openSafetensorsBlob: short is shorter than its 8-byte header length; expected at least 8 bytes, got 5',
    );
    await expect(openSafetensorsBlob(new Blob([bytes.slice(0, bytes.length - 1)]))).rejects.toBeInstanceOf(FormatError);
    const blob = new Blob([bytes]);
    const shrinking = { size: blob.size, slice: (a?: number, b?: number) => blob.slice(a, Math.min(b ?? blob.size, blob.size - 4)) };
    const lazy = await openSafetensorsBlob(shrinking);
    // The tensors whose bytes reach into the lost tail are refused, naming the tensor.
    const errors = await Promise.all(
      Object.keys(lazy.info).map((k) =>
        lazy.read(k).then(
          () => null,
          (e: Error) => e.message,
        ),
      ),
    );
    expect(errors.filter(Boolean).length).toBeGreaterThan(0);
    expect(errors.find(Boolean)).toMatch(/the file ended inside tensor /);
  });
});
