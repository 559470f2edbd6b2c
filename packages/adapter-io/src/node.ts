/**
 * Node file helpers (`@metal-lora/adapter-io/node`): lazy safetensors reading for large base
 * models, atomic writes, and adapter directories.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FormatError } from '@metal-lora/tensor';
import { type AdapterFiles, detectFormat, type LoraAdapter, MLX_CONFIG, MLX_WEIGHTS, PEFT_CONFIG, PEFT_WEIGHTS, parseMlxAdapter, parsePeftAdapter, serializeMlxAdapter, serializePeftAdapter } from './adapters';
import { checkHeaderLength, parseHeader, readSafetensors, type Safetensors, type SafetensorsEntry, type WriteEntry, writeSafetensors } from './safetensors';

export interface LazySafetensors {
  metadata: Record<string, string>;
  /** Names and layouts of every tensor, without their data. */
  info: Record<string, Omit<SafetensorsEntry, 'data'> & { byteLength: number }>;
  /** Reads one tensor's bytes from disk. */
  read(name: string): SafetensorsEntry;
  close(): void;
}

/**
 * Opens a safetensors file and reads only its header (validated as strictly as `readSafetensors`),
 * so single tensors of a large base model can be read on demand.
 */
export function openSafetensors(path: string): LazySafetensors {
  const fd = openSync(path, 'r');
  try {
    const size = statSync(path).size;
    const head = Buffer.alloc(8);
    if (size < 8 || readSync(fd, head, 0, 8, 0) !== 8) throw new FormatError('openSafetensors', 'file is shorter than its 8-byte header length', { offset: 0 }, 'at least 8 bytes', `${size}`);
    const headerLength = checkHeaderLength(head.readBigUInt64LE(0), size);
    const header = new Uint8Array(headerLength);
    readSync(fd, header, 0, headerLength, 8);
    const parsed = parseHeader(header, size - 8 - headerLength);
    const dataStart = 8 + headerLength;
    const info: LazySafetensors['info'] = {};
    const offsets: Record<string, number> = {};
    for (const e of parsed.entries) {
      info[e.key] = { dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin };
      offsets[e.key] = dataStart + e.begin;
    }
    let open = true;
    return {
      metadata: parsed.metadata,
      info,
      read(name: string): SafetensorsEntry {
        const i = info[name];
        if (!i) throw new FormatError('openSafetensors', 'no such tensor', { key: name }, Object.keys(info).slice(0, 5).join(', '), name);
        if (!open) throw new FormatError('openSafetensors', 'file was closed', { key: name });
        const data = new Uint8Array(i.byteLength);
        readSync(fd, data, 0, data.length, offsets[name]);
        return { dtype: i.dtype, shape: i.shape, data };
      },
      close(): void {
        if (open) closeSync(fd);
        open = false;
      },
    };
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

/** Reads a whole safetensors file. */
export function loadSafetensors(path: string): Safetensors {
  return readSafetensors(new Uint8Array(readFileSync(path)));
}

/**
 * Writes bytes atomically: to a temporary file in the same directory, flushed to disk, then
 * renamed over `path`, so a crash never leaves a half-written file where a good one was.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  const tmp = join(dirname(path), `.${Date.now()}-${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    let written = 0;
    while (written < data.length) written += writeSync(fd, data, written, data.length - written);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (error) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(tmp, { force: true });
    throw error;
  }
}

/** `writeSafetensors` to a file, atomically. */
export function saveSafetensors(path: string, tensors: Record<string, WriteEntry>, metadata?: Record<string, string> | null): void {
  writeFileAtomic(path, writeSafetensors(tensors, metadata));
}

/** mlx-lm's checkpoint file name for an iteration: `0000100_adapters.safetensors`. */
export function mlxCheckpointName(iteration: number): string {
  return `${String(iteration).padStart(7, '0')}_${MLX_WEIGHTS}`;
}

/**
 * Saves an adapter directory in MLX (`adapters.safetensors`) or PEFT (`adapter_model.safetensors`)
 * layout. With `checkpoint` (MLX), the weights also go to `0000100_adapters.safetensors`-style files.
 */
export async function saveAdapter(dir: string, adapter: LoraAdapter, options: { format: 'mlx' | 'peft'; baseModel?: string | null; checkpoint?: number } = { format: 'mlx' }): Promise<void> {
  await mkdir(dir, { recursive: true });
  const files = options.format === 'peft' ? serializePeftAdapter(adapter, options) : serializeMlxAdapter(adapter);
  writeFileAtomic(join(dir, options.format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS), files.weights);
  if (options.checkpoint !== undefined && options.format === 'mlx') writeFileAtomic(join(dir, mlxCheckpointName(options.checkpoint)), files.weights);
  writeFileAtomic(join(dir, options.format === 'peft' ? PEFT_CONFIG : MLX_CONFIG), files.config);
}

/**
 * Reads an adapter: a directory (format detected from its files), or one weights file such as an
 * mlx-lm checkpoint `0000100_adapters.safetensors`, with the `adapter_config.json` beside it.
 */
export function readAdapterFiles(path: string): { format: 'mlx' | 'peft'; files: AdapterFiles } {
  const isFile = statSync(path).isFile();
  const dir = isFile ? dirname(path) : path;
  const format = isFile ? (basename(path) === PEFT_WEIGHTS ? 'peft' : 'mlx') : detectFormat(readdirSync(dir));
  const weights = new Uint8Array(readFileSync(isFile ? path : join(dir, format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS)));
  const configPath = join(dir, format === 'peft' ? PEFT_CONFIG : MLX_CONFIG);
  if (!existsSync(configPath)) throw new FormatError('loadAdapter', 'adapter_config.json not found', { key: configPath }, 'the config beside the weights', 'nothing');
  const config = readFileSync(configPath, 'utf8');
  return { format, files: { weights, config } };
}

/** Loads an adapter (a directory or a weights file; see {@link readAdapterFiles}), detecting MLX or PEFT. */
export function loadAdapter(path: string): LoraAdapter & { format: 'mlx' | 'peft' } {
  const { format, files } = readAdapterFiles(path);
  return { ...(format === 'peft' ? parsePeftAdapter(files) : parseMlxAdapter(files)), format };
}
