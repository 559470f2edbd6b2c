/**
 * Node file helpers (`@metal-lora/adapter-io/node`): lazy safetensors reading for large base
 * models, atomic writes, and adapter directories.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FormatError } from '@metal-lora/tensor';
import {
  type AdapterFiles,
  detectFormat,
  type LoraAdapter,
  MLX_CONFIG,
  MLX_WEIGHTS,
  PEFT_CONFIG,
  PEFT_WEIGHTS,
  type FullFineTune,
  mlxFineTuneType,
  parseMlxAdapter,
  parseMlxFullFineTune,
  parsePeftAdapter,
  serializeMlxAdapter,
  serializeMlxFullFineTune,
  serializePeftAdapter,
} from './adapters';
import { completedPendingPair, writeDurable, writePair } from './pair-files';
import {
  checkHeaderLength,
  parseHeader,
  readSafetensors,
  type Safetensors,
  type SafetensorsEntry,
  type SafetensorsInfo,
  type WriteEntry,
  writeSafetensors,
} from './safetensors';

export interface LazySafetensors {
  metadata: Record<string, string>;
  /** Names and layouts of every tensor, without their data. */
  info: SafetensorsInfo;
  /** Reads one tensor's bytes from disk. */
  read(name: string): SafetensorsEntry;
  close(): void;
}

/**
 * Opens a safetensors file and reads only its header (validated as strictly as `readSafetensors`),
 * so single tensors of a large base model can be read on demand.
 */
export function openSafetensors(path: string): LazySafetensors {
  const fd = fsCall('openSafetensors', path, () => openSync(path, 'r'));
  try {
    const size = statSync(path).size;
    const head = Buffer.alloc(8);
    if (size < 8 || readSync(fd, head, 0, 8, 0) !== 8)
      throw new FormatError('openSafetensors', 'file is shorter than its 8-byte header length', { offset: 0 }, 'at least 8 bytes', `${size}`);
    const headerLength = checkHeaderLength(head.readBigUInt64LE(0), size);
    const header = new Uint8Array(headerLength);
    readSync(fd, header, 0, headerLength, 8);
    const parsed = parseHeader(header, size - 8 - headerLength);
    const dataStart = 8 + headerLength;
    // Null prototypes: a tensor named `constructor` or `__proto__` is an ordinary entry, and a
    // name that is not in the file is never found on Object.prototype.
    const info: LazySafetensors['info'] = Object.create(null);
    const offsets: Record<string, number> = Object.create(null);
    for (const e of parsed.entries) {
      info[e.key] = { dtype: e.dtype, shape: e.shape, byteLength: e.end - e.begin };
      offsets[e.key] = dataStart + e.begin;
    }
    let open = true;
    return {
      metadata: parsed.metadata,
      info,
      read(name: string): SafetensorsEntry {
        const i = Object.hasOwn(info, name) ? info[name] : undefined;
        if (!i)
          throw new FormatError(
            'openSafetensors',
            'no such tensor',
            { key: name },
            `one of ${Object.keys(info).slice(0, 5).join(', ')}${Object.keys(info).length > 5 ? ', …' : ''}`,
            name,
          );
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
  return readSafetensors(new Uint8Array(fsCall('loadSafetensors', path, () => readFileSync(path))));
}

/**
 * Runs a file system call, turning the errors a user can cause (a missing file, a folder where a
 * file was expected, no permission) into a `FormatError` naming the path instead of a raw errno.
 */
export function fsCall<T>(op: string, path: string, call: () => T): T {
  try {
    return call();
  } catch (error) {
    const code = (error as { code?: string }).code;
    const what: Record<string, string> = {
      ENOENT: 'no such file or folder',
      EISDIR: 'a folder where a file was expected',
      ENOTDIR: 'a file where a folder was expected',
      EACCES: 'permission denied',
      EPERM: 'permission denied',
    };
    if (code && what[code]) throw new FormatError(op, `${what[code]}: ${path}`, { key: path }, 'a readable file', code);
    throw error;
  }
}

/**
 * Writes bytes atomically: to a temporary file in the same directory, flushed to disk, then
 * renamed over `path`, so a crash never leaves a half-written file where a good one was.
 */
export function writeFileAtomic(path: string, bytes: Uint8Array | string): void {
  writeDurable(path, bytes);
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
 *
 * The weights and `adapter_config.json` are replaced as one unit: a process killed at any point
 * leaves the old pair or the new one, which the next load reads whole (see `pair-files.ts`). One
 * process saves to a folder at a time (`.metal-lora.lock`): a second concurrent save fails with a
 * `StateError`, and a lock left by a dead process is taken over. Temporaries of dead saves are
 * removed by the next save.
 */
export async function saveAdapter(
  dir: string,
  adapter: LoraAdapter,
  options: { format: 'mlx' | 'peft'; baseModel?: string | null; checkpoint?: number } = { format: 'mlx' },
): Promise<void> {
  const files = options.format === 'peft' ? serializePeftAdapter(adapter, options) : serializeMlxAdapter(adapter);
  await fsCall('saveAdapter', dir, () => mkdir(dir, { recursive: true }));
  const weightsName = options.format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS;
  const extra: [string, Uint8Array][] =
    options.checkpoint !== undefined && options.format === 'mlx' ? [[mlxCheckpointName(options.checkpoint), files.weights]] : [];
  // The other format's weights, if the folder held them, would no longer match the config.
  const stale = options.format === 'peft' ? MLX_WEIGHTS : PEFT_WEIGHTS;
  writePair(
    'saveAdapter',
    dir,
    { weights: [weightsName, files.weights], config: [options.format === 'peft' ? PEFT_CONFIG : MLX_CONFIG, files.config] },
    extra,
    [stale],
  );
}

/**
 * Saves mlx-lm's `--fine-tune-type full` output in `dir` (`adapters.safetensors`: the tensors by
 * parameter name; `adapter_config.json`), the pair replaced as one unit as {@link saveAdapter} does;
 * with `checkpoint`, the weights also go to `0000100_adapters.safetensors`.
 */
export async function saveFullFineTune(dir: string, tensors: Record<string, WriteEntry>, options: { numLayers: number; checkpoint?: number }): Promise<void> {
  const files = serializeMlxFullFineTune(tensors, options.numLayers);
  await fsCall('saveFullFineTune', dir, () => mkdir(dir, { recursive: true }));
  const extra: [string, Uint8Array][] = options.checkpoint !== undefined ? [[mlxCheckpointName(options.checkpoint), files.weights]] : [];
  writePair('saveFullFineTune', dir, { weights: [MLX_WEIGHTS, files.weights], config: [MLX_CONFIG, files.config] }, extra, [PEFT_WEIGHTS]);
}

/** Reads a full fine-tune (a directory or one weights file, as {@link readAdapterFiles}). */
export function loadFullFineTune(path: string): FullFineTune {
  const { files } = readAdapterFiles(path);
  return parseMlxFullFineTune(files);
}

/** The fine-tune type of an adapter directory or weights file: `lora`, `full`, `dora`, … (PEFT adapters are `lora`). */
export function adapterFineTuneType(path: string): string {
  const { format, files } = readAdapterFiles(path);
  return format === 'peft' ? 'lora' : mlxFineTuneType(files.config);
}

/**
 * Reads an adapter: a directory (format detected from its files), or one weights file such as an
 * mlx-lm checkpoint `0000100_adapters.safetensors`, with the `adapter_config.json` beside it.
 */
export function readAdapterFiles(path: string): { format: 'mlx' | 'peft'; files: AdapterFiles } {
  const op = 'loadAdapter';
  const isFile = fsCall(op, path, () => statSync(path)).isFile();
  const dir = isFile ? dirname(path) : path;
  // A save that was interrupted after writing its complete pair is read as the new adapter.
  const pending = isFile ? undefined : completedPendingPair(dir, MLX_CONFIG);
  if (pending) {
    return {
      format: pending.weightsName === PEFT_WEIGHTS ? 'peft' : 'mlx',
      files: {
        weights: new Uint8Array(fsCall(op, pending.weights, () => readFileSync(pending.weights))),
        config: fsCall(op, pending.config, () => readFileSync(pending.config, 'utf8')),
      },
    };
  }
  // MLX and PEFT both name the config adapter_config.json.
  const configPath = join(dir, MLX_CONFIG);
  const names = isFile ? [] : fsCall(op, dir, () => readdirSync(dir));
  const format = isFile
    ? basename(path) === PEFT_WEIGHTS
      ? 'peft'
      : 'mlx'
    : detectFormat(names, existsSync(configPath) ? fsCall(op, configPath, () => readFileSync(configPath, 'utf8')) : undefined);
  const weightsPath = isFile ? path : join(dir, format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS);
  const weights = new Uint8Array(fsCall(op, weightsPath, () => readFileSync(weightsPath)));
  if (!existsSync(configPath))
    throw new FormatError('loadAdapter', 'adapter_config.json not found', { key: configPath }, 'the config beside the weights', 'nothing');
  const config = fsCall(op, configPath, () => readFileSync(configPath, 'utf8'));
  return { format, files: { weights, config } };
}

/** Loads an adapter (a directory or a weights file; see {@link readAdapterFiles}), detecting MLX or PEFT. */
export function loadAdapter(path: string): LoraAdapter & { format: 'mlx' | 'peft' } {
  const { format, files } = readAdapterFiles(path);
  return { ...(format === 'peft' ? parsePeftAdapter(files) : parseMlxAdapter(files)), format };
}
