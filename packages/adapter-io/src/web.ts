/**
 * Browser helpers (web APIs only): adapters from `File`s, `Blob`s or fetched URLs, and a
 * download of a saved adapter's files.
 */
import { FormatError } from '@metal-lora/tensor';
import { type AdapterFiles, detectFormat, MLX_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS } from './adapters';
import { checkHeaderLength, parseHeader, type SafetensorsEntry, type SafetensorsInfo } from './safetensors';

/** Anything with a name and bytes: a `File` from an `<input type=file multiple>` or a drop. */
export interface NamedBlob {
  name: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** The adapter files among `blobs` (format detected from their names), e.g. the files of a picked directory. */
export async function adapterFromBlobs(blobs: Iterable<NamedBlob>): Promise<{ format: 'mlx' | 'peft'; files: AdapterFiles }> {
  const byName = new Map<string, NamedBlob>();
  for (const b of blobs) byName.set(b.name.split('/').pop()!, b);
  const config = byName.get(MLX_CONFIG);
  const configText = config ? new TextDecoder().decode(await config.arrayBuffer()) : undefined;
  const format = detectFormat([...byName.keys()], configText);
  const weights = byName.get(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS)!;
  if (configText === undefined)
    throw new FormatError(
      'adapterFromBlobs',
      'adapter_config.json is missing',
      { key: MLX_CONFIG },
      'the config next to the weights',
      [...byName.keys()].join(', '),
    );
  return { format, files: { weights: new Uint8Array(await weights.arrayBuffer()), config: configText } };
}

/** What a `Blob` (or `File`) offers for reading part of it: its size and byte-range slices. */
export interface SliceableBlob {
  readonly size: number;
  slice(start?: number, end?: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

/** A safetensors file opened over a `Blob`: the header read, each tensor's bytes read when asked for. */
export interface BlobSafetensors {
  metadata: Record<string, string>;
  /** Names and layouts of every tensor, without their data. */
  info: SafetensorsInfo;
  /** Reads one tensor's bytes (a slice of the blob). */
  read(name: string): Promise<SafetensorsEntry>;
}

/**
 * Opens a safetensors file held in a `Blob` (a picked `File`, a fetched response's blob) and reads
 * only its header, validated as strictly as `readSafetensors`: a multi-gigabyte checkpoint is then
 * read one tensor at a time, never whole into memory.
 */
export async function openSafetensorsBlob(blob: SliceableBlob, name = 'the file'): Promise<BlobSafetensors> {
  const op = 'openSafetensorsBlob';
  const bytes = async (begin: number, end: number, key?: string) => {
    const data = new Uint8Array(await blob.slice(begin, end).arrayBuffer());
    if (data.byteLength !== end - begin)
      throw new FormatError(
        op,
        key === undefined ? `${name} ended inside its header (was it changed while read?)` : `${name} ended inside tensor ${key} (was it changed while read?)`,
        { key, offset: begin },
        `${end - begin} bytes`,
        `${data.byteLength}`,
      );
    return data;
  };
  if (blob.size < 8) throw new FormatError(op, `${name} is shorter than its 8-byte header length`, { offset: 0 }, 'at least 8 bytes', `${blob.size}`);
  const head = await bytes(0, 8);
  const headerLength = checkHeaderLength(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true), blob.size);
  const parsed = parseHeader(await bytes(8, 8 + headerLength), blob.size - 8 - headerLength);
  const dataStart = 8 + headerLength;
  const info: SafetensorsInfo = Object.create(null);
  const offsets: Record<string, number> = Object.create(null);
  for (const e of parsed.entries) {
    info[e.key] = { dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin };
    offsets[e.key] = dataStart + e.begin;
  }
  return {
    metadata: parsed.metadata,
    info,
    async read(key: string): Promise<SafetensorsEntry> {
      const i = Object.hasOwn(info, key) ? info[key] : undefined;
      if (!i)
        throw new FormatError(
          op,
          `${name} has no such tensor`,
          { key },
          `one of ${Object.keys(info).slice(0, 5).join(', ')}${Object.keys(info).length > 5 ? ', …' : ''}`,
          key,
        );
      return { dtype: i.dtype, shape: i.shape, data: await bytes(offsets[key], offsets[key] + i.byteLength, key) };
    },
  };
}

/** Fetches an adapter directory served over HTTP (`${base}/adapter_config.json` and its weights). */
export async function fetchAdapter(base: string, format: 'mlx' | 'peft' = 'mlx', fetchFn: typeof fetch = fetch): Promise<AdapterFiles> {
  const get = async (name: string) => {
    const response = await fetchFn(`${base.replace(/\/$/, '')}/${name}`);
    if (!response.ok) throw new FormatError('fetchAdapter', `could not fetch ${name}`, { key: name }, 'HTTP 200', `HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  };
  const weights = await get(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS);
  const config = new TextDecoder().decode(await get(MLX_CONFIG));
  return { weights, config };
}

/** Offers `bytes` as a file download (a temporary object URL on an `<a download>`). */
export function downloadFile(name: string, bytes: Uint8Array | string, type = 'application/octet-stream'): void {
  const blob = new Blob([typeof bytes === 'string' ? bytes : new Uint8Array(bytes)], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Downloads an adapter's two files (`adapters.safetensors` or `adapter_model.safetensors`, and the config). */
export function downloadAdapter(files: AdapterFiles, format: 'mlx' | 'peft' = 'mlx'): void {
  downloadFile(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS, files.weights);
  downloadFile(MLX_CONFIG, files.config, 'application/json');
}
