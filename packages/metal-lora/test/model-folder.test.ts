import { copyFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '@metal-lora/adapter-io';
import { linearToLoRALayers } from '@metal-lora/nn';
import * as T from '@metal-lora/tensor';
import { beforeAll, describe, expect, it } from 'vitest';
import { adapterFiles, type FolderFile, fetchModelFolder, loadModel, modelFromBlobs, openModelFolder } from '../src/index';
import { cli } from './run-cli';

const fixtures = new URL('./fixtures/models/', import.meta.url).pathname;

/** A folder's files as a directory picker gives them (`webkitRelativePath` = `folder/name`), counting the bytes read. */
function picked(dir: string, folder = 'model', reads: number[] = []): FolderFile[] {
  return readdirSync(dir).map((name) => {
    const blob = new Blob([readFileSync(join(dir, name))]);
    return {
      name,
      webkitRelativePath: `${folder}/${name}`,
      size: blob.size,
      text: () => blob.text(),
      slice: (a?: number, b?: number) => {
        reads.push((b ?? blob.size) - (a ?? 0));
        return blob.slice(a, b);
      },
    };
  });
}

const probe = () =>
  T.tensor(
    Int32Array.from({ length: 20 }, (_, i) => (i * 11 + 5) % 97),
    [2, 10],
    { dtype: 'int32' },
  );
const logits = async (model: { eval(): unknown; forward(x: T.Tensor): T.Tensor }) => {
  model.eval();
  return Float32Array.from(await model.forward(probe()).data());
};

describe('a model folder from blobs (a directory picker, a URL)', () => {
  beforeAll(async () => {
    await T.setBackend('cpu');
  });

  it.each(['llama', 'qwen2', 'gemma3'])('%s: header info first, then the weights one tensor at a time; the logits loadModel gives', async (name) => {
    const dir = join(fixtures, name);
    const reads: number[] = [];
    const folder = await openModelFolder(picked(dir, name, reads));
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    const reference = loadModel(dir);
    const params = reference.model.parameters().reduce((n, p) => n + p.size, 0);
    expect(folder.info).toMatchObject({
      architecture: config.architectures[0],
      modelType: config.model_type,
      layers: config.num_hidden_layers,
      hiddenSize: config.hidden_size,
      vocabSize: config.vocab_size,
      parameters: params,
      quantization: null,
      weightFiles: ['model.safetensors'],
      heldBytes: params * 4,
    });
    expect(folder.info.fileBytes).toBe(readFileSync(join(dir, 'model.safetensors')).length);
    expect(folder.info.storedDtypes.length).toBeGreaterThan(0);
    // Opening read the header only.
    const header = reads.reduce((a, b) => a + b, 0);
    expect(header).toBeLessThan(folder.info.fileBytes / 4);
    const loaded = await folder.load();
    // No read larger than the largest tensor: the checkpoint is never read whole.
    expect(Math.max(...reads)).toBeLessThanOrEqual(folder.info.largestTensor.bytes);
    expect(Array.from(await logits(loaded.model))).toEqual(Array.from(await logits(reference.model)));
    expect(loaded.tokenizer.encode('hello there')).toEqual(reference.tokenizer.encode('hello there'));
    expect(loaded.generation.eosTokenIds).toEqual(reference.generation.eosTokenIds);
  });

  it('a quantized folder: its bits and group size, weights counted unpacked, the logits loadModel gives', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'metal-lora-blobs-q-')), 'q4');
    const run = await cli([
      'convert',
      '--model',
      join(fixtures, 'llama'),
      '--save-path',
      out,
      '-q',
      '--q-bits',
      '4',
      '--q-group-size',
      '32',
      '--backend',
      'cpu',
    ]);
    expect(run.code, run.err).toBe(0);
    const folder = await openModelFolder(picked(out));
    const float = loadModel(join(fixtures, 'llama'));
    expect(folder.info.quantization).toEqual({ bits: 4, groupSize: 32 });
    expect(folder.info.parameters).toBe(float.model.parameters().reduce((n, p) => n + p.size, 0));
    expect(folder.info.storedDtypes).toContain('U32');
    expect(folder.info.heldBytes).toBeLessThan(folder.info.parameters * 4 * 0.5);
    const loaded = await folder.load();
    expect(Array.from(await logits(loaded.model))).toEqual(Array.from(await logits(loadModel(out).model)));
  });

  it('sharded weights through model.safetensors.index.json; files of nested folders are ignored', async () => {
    const src = join(fixtures, 'llama');
    const dir = mkdtempSync(join(tmpdir(), 'metal-lora-blobs-shards-'));
    for (const f of readdirSync(src)) if (f !== 'model.safetensors') copyFileSync(join(src, f), join(dir, f));
    const { tensors, metadata } = readSafetensors(new Uint8Array(readFileSync(join(src, 'model.safetensors'))));
    const names = Object.keys(tensors);
    const half = Math.ceil(names.length / 2);
    const shard = (part: string[]) => writeSafetensors(Object.fromEntries(part.map((n) => [n, tensors[n]])), metadata);
    writeFileSync(join(dir, 'model-00001-of-00002.safetensors'), shard(names.slice(0, half)));
    writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), shard(names.slice(half)));
    const map = Object.fromEntries(names.map((n, i) => [n, i < half ? 'model-00001-of-00002.safetensors' : 'model-00002-of-00002.safetensors']));
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: map }));
    const stray = { ...picked(src)[0], webkitRelativePath: 'model/sub/config.json', name: 'config.json', text: async () => '{ not json' };
    const files = [...picked(dir), stray];
    const loaded = await modelFromBlobs(files);
    expect((await openModelFolder(files)).info.weightFiles).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(Array.from(await logits(loaded.model))).toEqual(Array.from(await logits(loadModel(src).model)));
  });

  it('what is wrong with a folder is one FormatError naming the file, raised before any weight is read', async () => {
    const files = picked(join(fixtures, 'llama'));
    const without = (name: string) => files.filter((f) => f.name !== name);
    await expect(openModelFolder(without('config.json'))).rejects.toThrow(
      /^openModelFolder: config\.json not found; expected a model folder: config\.json, tokenizer\.json and model\.safetensors \(or its shards\), got /,
    );
    await expect(openModelFolder(without('tokenizer.json'))).rejects.toThrow(/openModelFolder: tokenizer\.json not found/);
    await expect(openModelFolder(without('model.safetensors'))).rejects.toThrow(/openModelFolder: the folder has no weights/);
    await expect(openModelFolder([])).rejects.toThrow(/config\.json not found; .*, got no files$/);
    const replace = (name: string, text: string): FolderFile[] => {
      const blob = new Blob([text]);
      return [...without(name), { name, size: blob.size, text: () => blob.text(), slice: (a, b) => blob.slice(a, b) }];
    };
    await expect(openModelFolder(replace('config.json', '{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}'))).rejects.toThrow(/gpt2/);
    await expect(openModelFolder(replace('config.json', '{"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}'))).rejects.toBeInstanceOf(
      T.MetalLoRAError,
    );
    // Sizes are checked with the architecture, before any weight file is opened.
    const config = JSON.parse(readFileSync(join(fixtures, 'llama', 'config.json'), 'utf8'));
    delete config.num_hidden_layers;
    await expect(openModelFolder(replace('config.json', JSON.stringify(config)))).rejects.toThrow(/config\.json lacks num_hidden_layers/);
    await expect(openModelFolder(replace('config.json', '[1, 2'))).rejects.toThrow(/openModelFolder: config\.json is not valid JSON/);
    await expect(openModelFolder(replace('model.safetensors', 'short'))).rejects.toThrow(/model\.safetensors is shorter than its 8-byte header length/);
    await expect(openModelFolder([...files, ...replace('model.safetensors.index.json', '{"weight_map": {"x": "../secret.safetensors"}}')])).rejects.toThrow(
      /openModelFolder: the shard of 'x' is not a file of the folder/,
    );
    await expect(openModelFolder(files, { dtype: 'int8' as 'float32' })).rejects.toThrow(/dtype must be float32 or float16/);
    // A tensor larger than one buffer of the device: refused from the headers, nothing read.
    const reads: number[] = [];
    const embedding = 600 * 64 * 4;
    await expect(openModelFolder(picked(join(fixtures, 'llama'), 'llama', reads), { maxTensorBytes: embedding - 1 })).rejects.toThrow(
      new RegExp(
        `^openModelFolder: (lm_head|model\\.embed_tokens)\\.weight \\(0\\.1 MiB held as float32\\) is larger than one buffer of this device may be; choose a smaller or a quantized model; expected at most ${embedding - 1} bytes \\(maxTensorBytes\\), got ${embedding} bytes$`,
      ),
    );
    expect(reads.reduce((a, b) => a + b, 0)).toBeLessThan(embedding);
    await expect(openModelFolder(files, { maxTensorBytes: embedding, dtype: 'float16' })).resolves.toBeDefined();
    await expect(openModelFolder(files, { maxTensorBytes: 0 })).rejects.toThrow(/maxTensorBytes must be a positive number/);
  });

  it('fetchModelFolder: the files a server has, the weights by byte ranges (whole once where ranges are ignored); a missing file names its URL', async () => {
    const dir = join(fixtures, 'llama');
    const requests: { name: string; method: string; range: string | null }[] = [];
    const serve = (skip: string[], ranges: boolean) =>
      (async (url: string, init: RequestInit = {}) => {
        const name = url.split('/').pop()!;
        const range = new Headers(init.headers).get('range');
        requests.push({ name, method: init.method ?? 'GET', range });
        if (skip.includes(name) || !readdirSync(dir).includes(name)) return new Response('not found', { status: 404 });
        const bytes = readFileSync(join(dir, name));
        if (init.method === 'HEAD') return new Response(null, { headers: { 'content-length': String(bytes.length) } });
        const m = range && ranges ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
        if (m) return new Response(bytes.subarray(Number(m[1]), Number(m[2]) + 1), { status: 206 });
        return new Response(bytes);
      }) as unknown as typeof fetch;
    const reference = Array.from(await logits(loadModel(dir).model));
    const files = await fetchModelFolder('https://example.test/llama/', serve(['chat_template.jinja'], true));
    expect(files.map((f) => f.name).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(Array.from(await logits((await modelFromBlobs(files)).model))).toEqual(reference);
    const weightReads = requests.filter((r) => r.name === 'model.safetensors' && r.method === 'GET');
    expect(weightReads.length).toBeGreaterThan(3);
    expect(weightReads.every((r) => r.range !== null)).toBe(true);
    // A server that answers ranges with the whole file: read once, then sliced.
    requests.length = 0;
    const plain = await fetchModelFolder('https://example.test/llama', serve([], false));
    expect(Array.from(await logits((await modelFromBlobs(plain)).model))).toEqual(reference);
    expect(requests.filter((r) => r.name === 'model.safetensors' && r.method === 'GET')).toHaveLength(1);
    await expect(fetchModelFolder('https://example.test/llama', serve(['tokenizer.json'], true))).rejects.toThrow(
      'fetchModelFolder: could not fetch https://example.test/llama/tokenizer.json; expected HTTP 200, got HTTP 404',
    );
    await expect(fetchModelFolder('https://example.test/llama', serve(['model.safetensors'], true))).rejects.toThrow(
      'fetchModelFolder: no weights at https://example.test/llama; expected model.safetensors, its index, or weights.safetensors, got none of them',
    );
    // A single-page app's server answers every missing path with its HTML page: those files are absent.
    const spa = (async (url: string, init: RequestInit = {}) => {
      const name = url.split('/').pop()!;
      if (!readdirSync(dir).includes(name) || name === 'generation_config.json')
        return new Response('<!doctype html><html></html>', { headers: { 'content-type': 'text/html' } });
      return serve([], true)(url, init);
    }) as unknown as typeof fetch;
    const fromSpa = await fetchModelFolder('https://example.test/llama', spa);
    expect(fromSpa.map((f) => f.name).sort()).toEqual(['chat_template.jinja', 'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const hostileIndex = (async (url: string, init: RequestInit = {}) =>
      url.endsWith('model.safetensors.index.json')
        ? new Response(JSON.stringify({ weight_map: { 'model.norm.weight': '../../secret.safetensors' } }))
        : serve([], true)(url, init)) as unknown as typeof fetch;
    await expect(fetchModelFolder('https://example.test/llama', hostileIndex)).rejects.toThrow(
      'fetchModelFolder: a shard named in the index is not a plain file name; expected a name like model-00001-of-00002.safetensors, got "../../secret.safetensors"',
    );
    const offline = (async () => {
      throw new TypeError('Failed to fetch');
    }) as unknown as typeof fetch;
    await expect(fetchModelFolder('https://example.test/llama', offline)).rejects.toThrow(
      'fetchModelFolder: could not fetch https://example.test/llama/config.json (Failed to fetch); expected a reachable URL, got a network error',
    );
  });

  it('adapterFiles: a trained model adapter as MLX or PEFT files', async () => {
    const { model } = loadModel(join(fixtures, 'llama'));
    linearToLoRALayers(model, { numLayers: 1, rank: 4, scale: 2, seed: 3 });
    const mlx = await adapterFiles(model, { numLayers: 1 });
    expect(JSON.parse(mlx.config)).toMatchObject({ num_layers: 1, lora_parameters: { rank: 4, scale: 2 } });
    expect(Object.keys(readSafetensors(mlx.weights).tensors).every((k) => k.startsWith('model.layers.1.'))).toBe(true);
    const peft = await adapterFiles(model, { format: 'peft', numLayers: 1 });
    expect(JSON.parse(peft.config)).toMatchObject({ peft_type: 'LORA', r: 4 });
    await expect(adapterFiles(loadModel(join(fixtures, 'llama')).model)).rejects.toThrow('adapterFiles: the model has no LoRA layers');
  });
});
