import { FormatError } from '@metal-lora/tensor';
import { DECODABLE, decode, dtypeRank, encode, isSafetensorsDType, SAFETENSORS_DTYPES, type SafetensorsDType } from './dtypes';
import { type DuplicatePolicy, JsonFloat, JsonSyntaxError, type JsonValue, parseStrictJson } from './strict-json';

/** One tensor of a safetensors file: raw little-endian bytes (a view into the file when read). */
export interface SafetensorsEntry {
  dtype: SafetensorsDType;
  shape: number[];
  data: Uint8Array;
}

/** Names and layouts of a file's tensors, without their data (a lazily opened file's header). */
export type SafetensorsInfo = Record<string, Omit<SafetensorsEntry, 'data'> & { byteLength: number }>;

export interface Safetensors {
  /** `__metadata__` (string → string); `{}` when the file has none or `null`. */
  metadata: Record<string, string>;
  tensors: Record<string, SafetensorsEntry>;
}

/** The reference implementation's cap on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;
/** Dimensions above 2^53 are refused: a JavaScript number cannot hold them exactly (the reference takes any u64). */
const MAX_DIM = Number.MAX_SAFE_INTEGER;

const op = 'readSafetensors';

function fail(problem: string, where: { offset?: number; key?: string }, expected?: string, got?: string): never {
  throw new FormatError(op, problem, where, expected, got);
}

/** Bytes a tensor of `shape` and `dtype` occupies (checks that the bit count is whole bytes). */
export function byteLength(dtype: SafetensorsDType, shape: readonly number[], key?: string): number {
  let count = 1;
  for (const d of shape) {
    count *= d;
    if (!Number.isSafeInteger(count)) fail('tensor size overflows', { key }, 'a size below 2^53 elements', `shape [${shape.join(', ')}]`);
  }
  const bits = count * SAFETENSORS_DTYPES[dtype];
  if (bits % 8 !== 0) fail('tensor does not fill whole bytes', { key }, 'elements × bits divisible by 8', `${count} × ${SAFETENSORS_DTYPES[dtype]} bits`);
  return bits / 8;
}

/**
 * Parses a safetensors file with the reference reader's checks: header length against the file,
 * the 100 MB header cap, well-formed UTF-8 JSON, string-only metadata (absent, `{}` or `null`
 * accepted), known dtypes, integer shapes, offsets that exactly tile the data buffer (no gap, no
 * overlap, no trailing bytes), sizes matching dtype × shape, no duplicate or prototype-polluting
 * names. Tensor data are zero-copy views into `bytes`. Every failure is a `FormatError` carrying
 * the byte offset or the tensor name.
 *
 * @example
 * const { metadata, tensors } = readSafetensors(new Uint8Array(await file.arrayBuffer()));
 */
export function readSafetensors(bytes: Uint8Array): Safetensors {
  if (!(bytes instanceof Uint8Array)) fail('input is not bytes', {}, 'a Uint8Array', typeof bytes);
  if (bytes.length < 8) fail('file is shorter than its 8-byte header length', { offset: 0 }, 'at least 8 bytes', `${bytes.length}`);
  const headerLength = checkHeaderLength(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getBigUint64(0, true), bytes.length);
  const { metadata, entries } = parseHeader(bytes.subarray(8, 8 + headerLength), bytes.length - 8 - headerLength);
  const dataStart = 8 + headerLength;
  const tensors: Record<string, SafetensorsEntry> = Object.create(null);
  for (const e of entries) tensors[e.key] = { dtype: e.dtype, shape: e.shape, data: bytes.subarray(dataStart + e.begin, dataStart + e.end) };
  return { metadata, tensors };
}

/** Validates the 8-byte header length against the cap and the file size; returns it as a number. */
export function checkHeaderLength(n: bigint, fileLength: number): number {
  if (n > BigInt(MAX_HEADER_BYTES)) fail('header is too large', { offset: 0 }, `at most ${MAX_HEADER_BYTES} bytes`, `${n} bytes`);
  const headerLength = Number(n);
  if (8 + headerLength > fileLength) fail('header length runs past the end of the file', { offset: 0 }, `at most ${fileLength - 8} bytes`, `${headerLength}`);
  return headerLength;
}

/** A validated header entry: offsets are relative to the data buffer. */
export interface HeaderEntry {
  key: string;
  dtype: SafetensorsDType;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * The reference reader's rule for repeated keys: a repeated field of a tensor entry or a second
 * `__metadata__` is refused; a repeated tensor name or metadata key keeps its last value.
 */
const headerDuplicates: DuplicatePolicy = (path, key) => {
  if (path.length === 0) return key !== '__metadata__';
  if (path.length === 1 && path[0] !== '__metadata__') return !TENSOR_FIELDS.has(key);
  return true;
};
const TENSOR_FIELDS = new Set(['dtype', 'shape', 'data_offsets']);

/**
 * Parses and validates a header (the bytes after the length) for a data buffer of `dataLength`
 * bytes: everything `readSafetensors` checks, without needing the data itself.
 */
export function parseHeader(headerBytes: Uint8Array, dataLength: number): { metadata: Record<string, string>; entries: HeaderEntry[] } {
  let text: string;
  try {
    // ignoreBOM keeps a byte-order mark in the text, where the parser refuses it as the reference does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    fail('header is not valid UTF-8', { offset: 8 });
  }
  let header: JsonValue;
  try {
    header = parseStrictJson(text, headerDuplicates);
  } catch (error) {
    if (!(error instanceof JsonSyntaxError)) throw error;
    fail(`header is not valid JSON (${error.message})`, { offset: 8 });
  }
  if (!(header instanceof Map)) fail('header is not a JSON object', { offset: 8 }, 'an object', Array.isArray(header) ? 'an array' : String(header));
  const metadata: Record<string, string> = Object.create(null);
  const entries: HeaderEntry[] = [];
  const isCount = (v: JsonValue, max: number) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;
  const show = (v: JsonValue | undefined) =>
    JSON.stringify(v, (_k, x) => (x instanceof Map ? Object.fromEntries(x) : x instanceof JsonFloat ? x.value : x)) ?? 'nothing';
  for (const [key, value] of header) {
    if (key === '__metadata__') {
      if (value === null) continue;
      if (!(value instanceof Map)) fail('__metadata__ is not an object', { key }, 'a string → string map', show(value));
      for (const [mk, mv] of value) {
        if (typeof mv !== 'string') fail('metadata value is not a string', { key: mk }, 'a string', show(mv));
        metadata[mk] = mv;
      }
      continue;
    }
    if (!(value instanceof Map)) fail('tensor entry is not an object', { key }, '{ dtype, shape, data_offsets }', show(value));
    const dtype = value.get('dtype');
    if (!isSafetensorsDType(dtype)) fail('unknown dtype', { key }, Object.keys(SAFETENSORS_DTYPES).join(' | '), show(dtype));
    const shape = value.get('shape');
    if (!Array.isArray(shape) || !shape.every((d) => isCount(d, MAX_DIM))) fail('invalid shape', { key }, 'an array of non-negative integers', show(shape));
    const offsets = value.get('data_offsets');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => isCount(o, Number.MAX_SAFE_INTEGER)))
      fail('invalid data_offsets', { key }, '[begin, end] non-negative integers', show(offsets));
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail('data_offsets end before they begin', { key }, 'begin <= end', `[${begin}, ${end}]`);
    const expected = byteLength(dtype, shape as number[], key);
    if (end - begin !== expected)
      fail('data size does not match dtype and shape', { key }, `${expected} bytes for ${dtype} [${(shape as number[]).join(', ')}]`, `${end - begin}`);
    entries.push({ key, dtype, shape: shape as number[], begin, end });
  }
  const dataStart = 8 + headerBytes.length;
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = 0;
  for (const e of entries) {
    if (e.begin !== cursor)
      fail(
        e.begin > cursor ? 'gap before tensor data' : 'tensor data overlap',
        { key: e.key, offset: dataStart + e.begin },
        `data starting at ${cursor}`,
        `${e.begin}`,
      );
    cursor = e.end;
  }
  if (cursor !== dataLength)
    fail(
      cursor < dataLength ? 'trailing bytes after the last tensor' : 'file is truncated',
      { offset: dataStart + cursor },
      `${cursor} data bytes`,
      `${dataLength}`,
    );
  return { metadata, entries };
}

/** Anything a writer accepts as tensor data: raw bytes, or a typed array of the dtype's width. */
export type TensorData =
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

export interface WriteEntry {
  dtype: SafetensorsDType;
  shape: readonly number[];
  data: TensorData;
}

/**
 * Serializes tensors like the reference writer: data ordered by dtype alignment (descending) then
 * name, contiguous from offset 0; header JSON with `__metadata__` first (only when given), then
 * tensors in data order, padded with spaces to a multiple of 8 bytes. Same input, same bytes.
 */
export function writeSafetensors(tensors: Record<string, WriteEntry>, metadata?: Record<string, string> | null): Uint8Array {
  const wop = 'writeSafetensors';
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name];
    if (name === '__metadata__') throw new FormatError(wop, 'reserved tensor name', { key: name }, 'any name but __metadata__', name);
    if (!isSafetensorsDType(t.dtype)) throw new FormatError(wop, 'unknown dtype', { key: name }, Object.keys(SAFETENSORS_DTYPES).join(' | '), String(t.dtype));
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0))
      throw new FormatError(wop, 'invalid shape', { key: name }, 'non-negative integers', JSON.stringify(t.shape));
    const expected = byteLength(t.dtype, t.shape, name);
    if (t.data.byteLength !== expected)
      throw new FormatError(wop, 'data size does not match dtype and shape', { key: name }, `${expected} bytes`, `${t.data.byteLength}`);
  }
  if (metadata) {
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new FormatError(wop, 'metadata value is not a string', { key: k }, 'a string', typeof v);
  }
  names.sort((a, b) => dtypeRank(tensors[b].dtype) - dtypeRank(tensors[a].dtype) || (a < b ? -1 : a > b ? 1 : 0));
  // Null prototypes: a tensor or metadata key such as `__proto__` is an ordinary property here.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata) header.__metadata__ = Object.assign(Object.create(null), metadata);
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    header[name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  const headerBytes = new TextEncoder().encode(json);
  const padded = Math.ceil(headerBytes.length / 8) * 8;
  json += ' '.repeat(padded - headerBytes.length);
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(new TextEncoder().encode(json), 8);
  let cursor = 8 + padded;
  for (const name of names) {
    const d = tensors[name].data;
    out.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength), cursor);
    cursor += d.byteLength;
  }
  return out;
}

function decodeEntry(entry: SafetensorsEntry, out: Float32Array | Float64Array, fn: string): void {
  if (!DECODABLE.includes(entry.dtype))
    throw new FormatError(fn, `dtype ${entry.dtype} cannot be decoded to numbers`, {}, `one of ${DECODABLE.join(', ')}`, entry.dtype);
  decode(entry.dtype, entry.data, out.length, out, fn);
}

function elementCount(entry: SafetensorsEntry): number {
  return entry.shape.reduce((a, b) => a * b, 1);
}

/** Decodes any float or integer entry to float32 (F64/I64 round to nearest f32). */
export function toFloat32(entry: SafetensorsEntry): Float32Array {
  const out = new Float32Array(elementCount(entry));
  decodeEntry(entry, out, 'toFloat32');
  return out;
}

/** Decodes any float or integer entry to float64 (exact for every dtype but I64/U64 beyond 2^53). */
export function toFloat64(entry: SafetensorsEntry): Float64Array {
  const out = new Float64Array(elementCount(entry));
  decodeEntry(entry, out, 'toFloat64');
  return out;
}

/** An entry from numbers, encoded as `dtype` (F16 and BF16 round to nearest even). */
export function fromNumbers(values: ArrayLike<number>, shape: readonly number[], dtype: SafetensorsDType = 'F32'): WriteEntry {
  return { dtype, shape: [...shape], data: encode(dtype, values, 'fromNumbers') };
}
