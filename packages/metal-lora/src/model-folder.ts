/**
 * A model folder from `Blob`s (browser and Node): the files of an `<input webkitdirectory>`, a
 * File System Access directory, or responses fetched from a URL. Headers are read first, so a page
 * can show what the checkpoint is (and refuse what the device cannot hold) before any weight is
 * read; `load()` then reads one tensor at a time, never the whole checkpoint into memory.
 */
import { openSafetensorsBlob, type SliceableBlob, toFloat32 } from '@metal-lora/adapter-io';
import { FormatError, type QuantSpec, ValueError } from '@metal-lora/tensor';
import { parseJsonObject } from './json';
import {
  type AsyncCheckpointTensor,
  buildModelAsync,
  checkedConfig,
  INDEX_FILE,
  indexWeightMap,
  isMlxWeightFile,
  type LoadedModel,
  type LoadOptions,
  loadDType,
  quantizedLayers,
} from './model-bytes';

/** One file of a model folder: a `File` (its `webkitRelativePath` places it) or any named blob. */
export interface FolderFile extends SliceableBlob {
  readonly name: string;
  /** `folder/config.json` for a file picked with its directory; files below the top level are ignored. */
  readonly webkitRelativePath?: string;
  text(): Promise<string>;
}

/** What a checkpoint is, from its config and weight headers (nothing read beyond them). */
export interface ModelFolderInfo {
  /** `architectures[0]` of config.json, or its `model_type`. */
  architecture: string;
  modelType: string;
  layers: number;
  hiddenSize: number;
  vocabSize: number;
  /** Weights of the model (a quantized layer's packed values counted one each). */
  parameters: number;
  /** The dtypes the weight files store, e.g. `['BF16']`. */
  storedDtypes: string[];
  /** MLX affine quantization where the folder is quantized. */
  quantization: QuantSpec | null;
  weightFiles: string[];
  /** Bytes of the weight files. */
  fileBytes: number;
  /** Bytes the weights take once loaded with `dtype` (packed layers as stored). */
  heldBytes: number;
  /** The largest single tensor once loaded (a GPU's storage-binding limit applies to it). */
  largestTensor: { name: string; bytes: number };
}

export interface OpenOptions extends LoadOptions {
  /**
   * The largest tensor the device can hold in one buffer (WebGPU: the device's
   * `limits.maxStorageBufferBindingSize`): a checkpoint with a larger one is refused from its
   * headers, before anything is read. Default: no limit.
   */
  maxTensorBytes?: number;
}

export interface ModelFolder {
  /** The top-level files by name. */
  files: Map<string, FolderFile>;
  config: Record<string, unknown>;
  info: ModelFolderInfo;
  /** Reads the weights (one tensor at a time) into a model on the current backend. */
  load(): Promise<LoadedModel>;
}

const op = 'openModelFolder';
const EXPECTED = 'a model folder: config.json, tokenizer.json and model.safetensors (or its shards)';

/** The top-level files by name (a picked directory's own files; nested folders' files left out). */
function topLevel(files: Iterable<FolderFile>): Map<string, FolderFile> {
  const byName = new Map<string, FolderFile>();
  for (const file of files) {
    const relative = file.webkitRelativePath ? file.webkitRelativePath.split('/').slice(1).join('/') : file.name;
    if (relative && !relative.includes('/')) byName.set(relative, file);
  }
  return byName;
}

/** The weight files: the shards an index names, `model.safetensors`, or MLX's `model*` / `weights*` files. */
async function weightFileNames(files: Map<string, FolderFile>): Promise<string[]> {
  const index = files.get(INDEX_FILE);
  if (index) {
    const shards = new Set<string>();
    for (const [name, file] of Object.entries(indexWeightMap(op, await index.text()))) {
      if (typeof file !== 'string' || !files.has(file))
        throw new FormatError(op, `the shard of '${name}' is not a file of the folder`, { key: name }, 'a file next to the index', JSON.stringify(file));
      shards.add(file);
    }
    return [...shards];
  }
  if (files.has('model.safetensors')) return ['model.safetensors'];
  const names = [...files.keys()].filter(isMlxWeightFile).sort();
  if (names.length === 0)
    throw new FormatError(op, 'the folder has no weights', {}, 'model.safetensors, its index and shards, or MLX weights files', listed(files));
  return names;
}

function listed(files: Map<string, FolderFile>): string {
  const names = [...files.keys()];
  return names.length ? names.slice(0, 8).join(', ') + (names.length > 8 ? ', …' : '') : 'no files';
}

const product = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Opens a model folder given as blobs: reads config.json (checked), the tokenizer files and the
 * weight files' headers. Missing files, an unsupported architecture or quantization, and broken
 * headers are `FormatError`s naming the file, raised here before anything is allocated.
 */
export async function openModelFolder(input: Iterable<FolderFile>, options: OpenOptions = {}): Promise<ModelFolder> {
  const dtype = loadDType(op, options);
  const maxTensorBytes = options.maxTensorBytes ?? Number.POSITIVE_INFINITY;
  if (!(maxTensorBytes > 0)) throw new ValueError(op, 'maxTensorBytes must be a positive number', 'bytes > 0', String(options.maxTensorBytes));
  const files = topLevel(input);
  const configFile = files.get('config.json');
  if (!configFile) throw new FormatError(op, 'config.json not found', { key: 'config.json' }, EXPECTED, listed(files));
  const config = parseJsonObject(op, await configFile.text(), 'config.json');
  // Architecture and sizes are checked now, before any weight file is opened.
  const llama = checkedConfig(op, config);
  if (!files.has('tokenizer.json')) throw new FormatError(op, 'tokenizer.json not found', { key: 'tokenizer.json' }, EXPECTED, listed(files));
  const weightFiles = await weightFileNames(files);
  const tensors: AsyncCheckpointTensor[] = [];
  const stored = new Set<string>();
  let fileBytes = 0;
  for (const name of weightFiles) {
    const file = files.get(name)!;
    fileBytes += file.size;
    const st = await openSafetensorsBlob(file, name);
    for (const [key, info] of Object.entries(st.info)) {
      stored.add(info.dtype);
      tensors.push({
        name: key,
        shape: info.shape,
        dtype: info.dtype,
        read: async () => toFloat32(await st.read(key)),
        readRaw: async () => (await st.read(key)).data,
      });
    }
  }
  const quantized = quantizedLayers(
    op,
    llama,
    tensors.map((t) => t.name),
  );
  let parameters = 0;
  let heldBytes = 0;
  let largestTensor = { name: '', bytes: 0 };
  let quantization: QuantSpec | null = null;
  for (const t of tensors) {
    const spec = quantized?.(t.name.replace(/\.(weight|scales|biases)$/, ''));
    quantization ??= spec ?? null;
    if (t.name.includes('rotary_emb') || (llama.tie_word_embeddings && t.name.startsWith('lm_head.'))) continue;
    const packed = spec && t.name.endsWith('.weight');
    const count = product(t.shape);
    if (!spec || packed) parameters += packed ? (count * 32) / spec.bits : count;
    const bytes = packed ? count * 4 : count * (dtype === 'float16' ? 2 : 4);
    heldBytes += bytes;
    if (bytes > largestTensor.bytes) largestTensor = { name: t.name, bytes };
  }
  const info: ModelFolderInfo = {
    architecture: Array.isArray(config.architectures) && typeof config.architectures[0] === 'string' ? config.architectures[0] : String(config.model_type),
    modelType: String(config.model_type),
    layers: llama.num_hidden_layers,
    hiddenSize: llama.hidden_size,
    vocabSize: llama.vocab_size,
    parameters,
    storedDtypes: [...stored].sort(),
    quantization,
    weightFiles,
    fileBytes,
    heldBytes,
    largestTensor,
  };
  // What the device cannot hold is refused now, before any weight is read.
  if (largestTensor.bytes > maxTensorBytes)
    throw new ValueError(
      op,
      `${largestTensor.name} (${(largestTensor.bytes / 2 ** 20).toFixed(1)} MiB held as ${dtype}) is larger than one buffer of this device may be; choose a smaller or a quantized model`,
      `at most ${maxTensorBytes} bytes (maxTensorBytes)`,
      `${largestTensor.bytes} bytes`,
    );
  const text = async (name: string) => (files.has(name) ? files.get(name)!.text() : undefined);
  return {
    files,
    config,
    info,
    async load() {
      const tokenizerFiles = {
        tokenizer: (await text('tokenizer.json'))!,
        tokenizerConfig: await text('tokenizer_config.json'),
        chatTemplate: await text('chat_template.jinja'),
      };
      return buildModelAsync('openModelFolder', config, tokenizerFiles, tensors, await text('generation_config.json'), { dtype });
    },
  };
}

/** Loads a model folder given as blobs (see `openModelFolder`): `(await openModelFolder(files)).load()`. */
export async function modelFromBlobs(files: Iterable<FolderFile>, options: LoadOptions = {}): Promise<LoadedModel> {
  return (await openModelFolder(files, options)).load();
}

const FETCH = 'fetchModelFolder';

async function request(fetchFn: typeof fetch, url: string, key: string, init?: RequestInit): Promise<Response> {
  try {
    return await fetchFn(url, init);
  } catch (error) {
    throw new FormatError(FETCH, `could not fetch ${url} (${(error as Error).message})`, { key }, 'a reachable URL', 'a network error');
  }
}

function refused(url: string, key: string, response: Response): FormatError {
  return new FormatError(FETCH, `could not fetch ${url}`, { key }, 'HTTP 200', `HTTP ${response.status}`);
}

const isHtml = (response: Response) => (response.headers.get('content-type') ?? '').includes('text/html');
/** What a server answers for a file it does not have: 404 or 410, or the HTML page a single-page app sends for any path. */
const absent = (response: Response) => response.status === 404 || response.status === 410 || (response.ok && isHtml(response));

/** A file fetched whole (the small JSON files; weights where the server gives no length). */
function wholeFile(name: string, blob: Blob): FolderFile {
  return { name, size: blob.size, text: () => blob.text(), slice: (start?: number, end?: number) => blob.slice(start, end) };
}

/**
 * A served weight file read by byte ranges (HTTP `Range`), so a checkpoint is downloaded one
 * tensor at a time and never held whole; a server that ignores ranges, or gives no length, is
 * read once, whole. Undefined where the server does not have the file.
 */
async function rangedFile(fetchFn: typeof fetch, url: string, name: string): Promise<FolderFile | undefined> {
  const head = await request(fetchFn, url, name, { method: 'HEAD' });
  if (absent(head)) return undefined;
  let whole: Promise<Blob> | undefined;
  const fetchWhole = (): Promise<Blob> => {
    whole ??= request(fetchFn, url, name)
      .then((r) => {
        if (!r.ok) throw refused(url, name, r);
        return r.blob();
      })
      .catch((error: unknown) => {
        // A failed download is tried again by the next read, not remembered.
        whole = undefined;
        throw error;
      });
    return whole;
  };
  // A server that refuses HEAD (some signed URLs) may still answer GET.
  const size = head.ok ? Number(head.headers.get('content-length') ?? Number.NaN) : Number.NaN;
  if (!Number.isSafeInteger(size) || size < 0) return wholeFile(name, await fetchWhole());
  return {
    name,
    size,
    text: async () => (await fetchWhole()).text(),
    slice: (start = 0, end = size) => ({
      async arrayBuffer(): Promise<ArrayBuffer> {
        if (end <= start) return new ArrayBuffer(0);
        if (whole) return (await whole).slice(start, end).arrayBuffer();
        const r = await request(fetchFn, url, name, { headers: { Range: `bytes=${start}-${end - 1}` } });
        if (r.status === 206) {
          const bytes = await r.arrayBuffer();
          if (bytes.byteLength !== end - start)
            throw new FormatError(
              FETCH,
              `the server sent another length for bytes ${start}–${end} of ${url}`,
              { key: name },
              `${end - start} bytes`,
              `${bytes.byteLength}`,
            );
          return bytes;
        }
        if (r.ok) {
          // The server sent the whole file: kept for the other reads.
          whole = r.blob();
          return (await whole).slice(start, end).arrayBuffer();
        }
        throw new FormatError(FETCH, `could not read bytes ${start}–${end} of ${url}`, { key: name }, 'HTTP 206', `HTTP ${r.status}`);
      },
    }),
  };
}

/** A shard name an index may give: one plain file name (no path, query or escape). */
const SHARD_NAME = /^\w[\w.-]*\.safetensors$/;

/**
 * The files of a model folder served over HTTP (`${base}/config.json`, …), for `openModelFolder`:
 * the optional files where the server has them, the weights that the index names, or
 * `model.safetensors` (MLX: `weights.safetensors`), read by byte ranges where the server offers
 * them (the Hugging Face Hub does: `https://huggingface.co/<repo>/resolve/main`). A failed request
 * is a `FormatError` naming the URL.
 */
export async function fetchModelFolder(base: string, fetchFn: typeof fetch = fetch): Promise<FolderFile[]> {
  const root = base.replace(/\/+$/, '');
  const get = async (name: string, required: boolean): Promise<FolderFile | undefined> => {
    const url = `${root}/${name}`;
    const response = await request(fetchFn, url, name);
    if (response.ok && !isHtml(response)) return wholeFile(name, await response.blob());
    if (!required && absent(response)) return undefined;
    if (response.ok) throw new FormatError(FETCH, `${url} is an HTML page, not ${name} (is this the folder's address?)`, { key: name }, name, 'text/html');
    throw refused(url, name, response);
  };
  const files: FolderFile[] = [];
  for (const name of ['config.json', 'tokenizer.json']) files.push((await get(name, true))!);
  for (const name of ['tokenizer_config.json', 'chat_template.jinja', 'generation_config.json']) {
    const file = await get(name, false);
    if (file) files.push(file);
  }
  const index = await get(INDEX_FILE, false);
  if (index) {
    files.push(index);
    for (const shard of new Set(Object.values(indexWeightMap(FETCH, await index.text())))) {
      if (typeof shard !== 'string' || !SHARD_NAME.test(shard))
        throw new FormatError(
          FETCH,
          'a shard named in the index is not a plain file name',
          { key: 'weight_map' },
          'a name like model-00001-of-00002.safetensors',
          JSON.stringify(shard),
        );
      const file = await rangedFile(fetchFn, `${root}/${shard}`, shard);
      if (!file) throw new FormatError(FETCH, `could not fetch ${root}/${shard}`, { key: shard }, 'the shard the index names', 'no such file');
      files.push(file);
    }
    return files;
  }
  for (const name of ['model.safetensors', 'weights.safetensors']) {
    const file = await rangedFile(fetchFn, `${root}/${name}`, name);
    if (file) return [...files, file];
  }
  throw new FormatError(FETCH, `no weights at ${root}`, { key: 'model.safetensors' }, 'model.safetensors, its index, or weights.safetensors', 'none of them');
}
