/**
 * The fine-tuning page: a model folder picked from disk (or fetched from a URL), a dataset, LoRA
 * training with live loss and tokens/s that can be stopped and resumed (the run's state kept in
 * IndexedDB), a chat with and without the adapter, and the adapter as MLX or PEFT files. Every
 * step is the library's own code (`openModelFolder`, `datasetFromJsonl`, `train`, `generate`,
 * `adapterFiles`); the page only wires it to the form. `window.__finetune` publishes what the
 * browser test checks.
 */
import {
  adapterFiles,
  type Dataset,
  datasetFromJsonl,
  describeSplit,
  downloadAdapter,
  fetchModelFolder,
  type FolderFile,
  generate,
  type LoadedModel,
  LoRALinear,
  linearToLoRALayers,
  type ModelFolder,
  type ModelFolderInfo,
  openModelFolder,
  readSafetensors,
  setAdapterEnabled,
  shipsLog,
  type TrainingStore,
  train,
  writeSafetensors,
} from 'metal-lora/browser';
import * as T from '@metal-lora/tensor';
import { escapeHtml } from '../src/report';
import { gemmWords, startWebGPU } from './device';
import { clearRun, loadRun, type SavedRun, saveRun } from './run-store';

interface PageState {
  ready: boolean;
  model?: ModelFolderInfo & { name: string };
  data?: { train: number; valid: number };
  losses: number[];
  valLosses: { step: number; loss: number }[];
  step: number;
  /** 'idle' | 'training' | 'stopped' | 'done' */
  run: string;
  /** The iteration the last run resumed from (undefined: it started afresh). */
  resumedFrom?: number;
  reply?: { withAdapter: boolean; text: string };
  error?: string;
}
const page: PageState = { ready: false, losses: [], valLosses: [], step: 0, run: 'idle' };
(window as unknown as { __finetune: PageState }).__finetune = page;

const $ = <E extends HTMLElement>(id: string) => document.getElementById(id) as E;
const button = (id: string) => $<HTMLButtonElement>(id);
const number = (id: string) => Number($<HTMLInputElement>(id).value);
const dtype = () => $<HTMLSelectElement>('dtype').value as 'float32' | 'float16';

let limits: GPUSupportedLimits | undefined;
/** The precision path the kernels take on this adapter (the summary's words). */
let kernelPath = '';
/** The path f16 products take here (`subgroupMatrixPath`). */
let f16Gemm = 'portable';
let folder: ModelFolder | undefined;
let loaded: (LoadedModel & { name: string; key: string }) | undefined;
let dataText: { text: string; name: string } | undefined;
let controller: AbortController | undefined;
/** The LoRA settings the model's adapter was made with (null: no adapter yet). */
let adapter: SavedRun['settings'] | null = null;
/** Said after loads and runs when the browser's storage failed (Resume then unavailable). */
let storeNote = '';

/** The run saved for a model, or null; storage that fails leaves a note instead of an error. */
async function savedRun(key: string): Promise<SavedRun | null> {
  try {
    storeNote = '';
    return await loadRun(key);
  } catch (error) {
    storeNote = ` This browser's storage is unavailable (${(error as Error).message}): Stop ends a run without saving it.`;
    return null;
  }
}

function showError(error: unknown): void {
  const message = error instanceof Error ? error.message : String(error);
  page.error = message;
  const box = $('error');
  box.textContent = message;
  box.style.display = 'block';
}

function clearError(): void {
  page.error = undefined;
  $('error').style.display = 'none';
}

/** Whether an action is running: one at a time, every other control disabled meanwhile (Stop excepted). */
let busy = false;

/** Runs a control's action alone, with its errors shown on the page (never only in the console). */
function action(fn: () => Promise<void>): () => void {
  return () => {
    if (busy) return;
    busy = true;
    clearError();
    updateButtons();
    fn()
      .catch(showError)
      .finally(() => {
        busy = false;
        updateButtons();
      });
  };
}

const megabytes = (bytes: number) => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);

function updateButtons(): void {
  button('train').disabled = busy || !loaded;
  button('stop').disabled = page.run !== 'training';
  button('resume').disabled = busy || !loaded;
  button('generate').disabled = busy || !loaded;
  for (const id of ['download-mlx', 'download-peft']) button(id).disabled = busy || !loaded || adapter === null;
  for (const id of ['model-folder', 'model-url-load', 'model-embedded', 'dtype', 'data-file', 'data-sample']) $<HTMLInputElement>(id).disabled = busy;
}

// ---- 1. model ------------------------------------------------------------------------------

/** An estimate of a training step's memory: weights, the adapter with its gradients and Adam's moments, activations. */
function trainingMemory(config: Record<string, unknown>, info: ModelFolderInfo): { total: number; parts: string } {
  const h = info.hiddenSize;
  const inter = Number(config.intermediate_size);
  const heads = Number(config.num_attention_heads);
  const headDim = Number(config.head_dim ?? h / heads);
  const kv = Number(config.num_key_value_heads ?? heads) * headDim;
  const rank = number('rank');
  const layers = Math.min(number('layers'), info.layers);
  const tokens = number('batch') * number('max-length');
  const perBlock = [
    [h, heads * headDim],
    [h, kv],
    [h, kv],
    [heads * headDim, h],
    [h, inter],
    [h, inter],
    [inter, h],
  ].reduce((n, [i, o]) => n + rank * (i + o), 0);
  const adapterBytes = perBlock * layers * 4 * 4;
  // What backward keeps per block (inputs of the norms, projections, attention and MLP) and the
  // attention probabilities; the loss reads the head in chunks.
  const bytes = dtype() === 'float16' ? 2 : 4;
  const activations = (tokens * info.layers * (10 * h + 4 * inter) + number('batch') * heads * number('max-length') ** 2 * info.layers) * bytes;
  const total = info.heldBytes + adapterBytes + activations;
  return {
    total,
    parts: `weights ${megabytes(info.heldBytes)} + adapter, gradients and optimizer ${megabytes(adapterBytes)} + activations ≈ ${megabytes(activations)}`,
  };
}

function showMemory(): void {
  if (!folder) return;
  const { total, parts } = trainingMemory(folder.config, folder.info);
  $('memory').textContent = `Training needs about ${megabytes(total)} of GPU memory (${parts}), estimated from the settings above.`;
}

function showModelInfo(name: string, info: ModelFolderInfo, live?: number): void {
  const q = info.quantization ? `${info.quantization.bits}-bit, groups of ${info.quantization.groupSize} (MLX affine)` : 'none';
  const rows: [string, string][] = [
    ['model', name],
    ['architecture', `${info.architecture} (${info.modelType}), ${info.layers} layers, hidden ${info.hiddenSize}, vocabulary ${info.vocabSize}`],
    ['parameters', info.parameters >= 1e6 ? `${(info.parameters / 1e6).toFixed(1)} M` : info.parameters.toLocaleString('en-US')],
    ['stored as', `${info.storedDtypes.join(', ')} in ${info.weightFiles.join(', ')} (${megabytes(info.fileBytes)})`],
    ['quantization', q],
    ['held on the GPU as', `${dtype() === 'float16' ? 'f16' : 'f32'}${info.quantization ? ' (quantized layers packed)' : ''}: ${megabytes(info.heldBytes)}`],
    ['kernel path', dtype() === 'float16' ? `f16 storage, f32 accumulation, ${gemmWords(f16Gemm)} (LoRA factors stepped in f32 by Adam)` : kernelPath],
  ];
  if (live !== undefined) rows.push(['GPU memory now', megabytes(live)]);
  $('model-info').innerHTML = `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join('')}</table>`;
}

function disposeModel(): void {
  if (!loaded) return;
  for (const p of loaded.model.parameters()) p.dispose();
  loaded = undefined;
  adapter = null;
}

async function openFolder(files: FolderFile[], name: string): Promise<void> {
  disposeModel();
  page.model = undefined;
  page.run = 'idle';
  page.losses = [];
  page.valLosses = [];
  updateButtons();
  $('model-info').innerHTML = '';
  const status = $('model-status');
  status.textContent = `reading ${name}…`;
  folder = undefined;
  try {
    // A tensor larger than one buffer of this adapter is refused from the headers, before any weight is read.
    const opened = await openModelFolder(files, { dtype: dtype(), maxTensorBytes: limits?.maxStorageBufferBindingSize });
    const info = opened.info;
    showModelInfo(name, info);
    folder = opened;
    showMemory();
    status.textContent = `loading ${megabytes(info.heldBytes)} of weights, one tensor at a time…`;
    const started = performance.now();
    const model = await opened.load();
    const key = `${name}|${info.architecture}|${info.parameters}|${info.fileBytes}`;
    loaded = { ...model, name, key };
    page.model = { ...info, name };
    showModelInfo(name, info, T.getBackend().memory().liveBytes);
    $<HTMLInputElement>('layers').value = String(Math.min(number('layers'), info.layers));
    $<HTMLInputElement>('use-template').checked = 'hasChatTemplate' in model.tokenizer && model.tokenizer.hasChatTemplate === true;
    const saved = await savedRun(key);
    // A saved run's settings fill the form, so that Resume continues it as it was set up.
    if (saved) {
      const ids: [string, keyof SavedRun['settings']][] = [
        ['rank', 'rank'],
        ['layers', 'layers'],
        ['scale', 'scale'],
        ['iters', 'iters'],
        ['batch', 'batch'],
        ['max-length', 'maxLength'],
        ['lr', 'lr'],
        ['eval-every', 'evalEvery'],
      ];
      for (const [id, k] of ids) $<HTMLInputElement>(id).value = String(saved.settings[k]);
      showMemory();
    }
    const note = !saved
      ? ''
      : saved.finished
        ? ` A finished run of this model (${saved.step} iterations) is saved in this browser: raise the iterations and Resume to train it further.`
        : ` A stopped run of this model (step ${saved.step}) is saved in this browser: Resume continues it.`;
    status.textContent = `loaded ${name} in ${((performance.now() - started) / 1000).toFixed(1)} s.${note}${storeNote}`;
  } catch (error) {
    status.textContent = '';
    folder = undefined;
    throw error;
  } finally {
    updateButtons();
  }
}

// ---- 2. data ---------------------------------------------------------------------------------

/** Pasted or picked text as JSON lines: JSON lines as they are, plain text one example per paragraph. */
function asJsonl(text: string): string {
  const first = text.split('\n').find((l) => l.trim());
  if (first?.trim().startsWith('{')) return text;
  const paragraphs = text.split(/\n\s*\n/).some((p, i) => i > 0 && p.trim()) ? text.split(/\n\s*\n/) : text.split('\n');
  return paragraphs
    .map((p) => p.trim())
    .filter(Boolean)
    .map((p) => JSON.stringify({ text: p }))
    .join('\n');
}

function buildDataset(maxLength = number('max-length')): Dataset {
  if (!loaded) throw new Error('Load a model first: the data is tokenized with its tokenizer.');
  const source = dataText ?? { text: $<HTMLTextAreaElement>('data-text').value, name: 'the pasted text' };
  if (!source.text.trim()) throw new Error('No training data: choose a .jsonl file, paste text, or use the sample data.');
  const data = datasetFromJsonl({ train: asJsonl(source.text) }, loaded.tokenizer, { maxSeqLength: maxLength }, { train: source.name });
  page.data = { train: data.train!.examples.length, valid: data.valid?.examples.length ?? 0 };
  $('data-info').textContent =
    `${describeSplit(data.train!)}; ${data.valid ? `${describeSplit(data.valid)} (the last tenth, held out)` : 'no validation split'}`;
  return data;
}

// ---- 3. train --------------------------------------------------------------------------------

function drawLoss(): void {
  const canvas = $<HTMLCanvasElement>('loss');
  const ctx = canvas.getContext('2d')!;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const losses = page.losses;
  const known = [...losses.filter(Number.isFinite), ...page.valLosses.map((v) => v.loss)];
  if (!known.length) return;
  const max = Math.max(...known);
  const left = 44;
  // Iteration i (0 = before training) along the axis.
  const x = (i: number) => left + (i / Math.max(1, number('iters'))) * (canvas.width - left - 10);
  const y = (l: number) => canvas.height - 20 - (l / max) * (canvas.height - 42);
  ctx.fillStyle = '#555';
  ctx.font = '11px system-ui';
  for (const v of [0, max / 2, max]) ctx.fillText(v.toFixed(2), 4, y(v) + 4);
  ctx.fillText('loss', 4, 10);
  ctx.fillText('iteration', canvas.width - 60, canvas.height - 4);
  ctx.strokeStyle = '#2f80ed';
  ctx.beginPath();
  let started = false;
  losses.forEach((l, i) => {
    if (!Number.isFinite(l)) return;
    if (started) ctx.lineTo(x(i + 1), y(l));
    else ctx.moveTo(x(i + 1), y(l));
    started = true;
  });
  ctx.stroke();
  ctx.fillStyle = '#e07b00';
  for (const v of page.valLosses) ctx.fillRect(x(v.step) - 3, y(v.loss) - 3, 6, 6);
  ctx.fillText('■ validation loss', canvas.width - 110, 12);
  ctx.fillStyle = '#2f80ed';
  ctx.fillText('— training loss', canvas.width - 210, 12);
}

/** The run's state kept in IndexedDB under the model's key: what Resume continues from. */
function browserStore(key: string, settings: SavedRun['settings']): TrainingStore {
  return {
    async save(at, _numbered, { state }) {
      try {
        await saveRun(key, {
          step: at,
          finished: at >= settings.iters,
          settings,
          state: writeSafetensors(state.entries, state.metadata),
          losses: page.losses.slice(0, at),
          valLosses: page.valLosses.filter((v) => v.step <= at),
        });
        return `IndexedDB (${key})`;
      } catch (error) {
        // Training goes on without a saved state; Resume is then unavailable.
        storeNote = ` Not saved in this browser (${(error as Error).message}): Resume is unavailable.`;
        return 'nowhere';
      }
    },
    async load() {
      const saved = await loadRun(key);
      return saved ? readSafetensors(saved.state) : null;
    },
  };
}

function currentSettings(): SavedRun['settings'] {
  return {
    rank: number('rank'),
    layers: number('layers'),
    scale: number('scale'),
    iters: number('iters'),
    batch: number('batch'),
    maxLength: number('max-length'),
    lr: number('lr'),
    evalEvery: number('eval-every'),
  };
}

async function runTraining(resume: boolean): Promise<void> {
  if (!loaded) throw new Error('Load a model first.');
  const current = loaded;
  const saved = resume ? await loadRun(current.key) : null;
  if (resume && !saved) throw new Error('Nothing to resume: no stopped run of this model is saved in this browser. Train starts one.');
  if (saved && number('iters') <= saved.step)
    throw new T.ValueError(
      'resume',
      `the saved run is at iteration ${saved.step}; raise the iterations to train it further`,
      `iterations > ${saved.step}`,
      String(number('iters')),
    );
  // A resumed run keeps its adapter's shape and the data's batching (its maximum length too, which
  // decides how examples are cut); only the iterations may change.
  const settings = saved ? { ...saved.settings, iters: number('iters') } : currentSettings();
  const dataset = buildDataset(settings.maxLength);
  if (!resume) await clearRun(current.key).catch(() => undefined);
  if (adapter && (!resume || JSON.stringify({ ...adapter, iters: 0 }) !== JSON.stringify({ ...settings, iters: 0 }))) {
    // A new run (or another adapter shape) starts from a fresh model: the old adapter's layers removed.
    if (!folder) throw new Error('Load the model again: its folder could not be read.');
    await openFolder([...folder.files.values()], current.name);
  }
  if (!loaded) throw new Error('Load the model again.');
  const model = loaded.model;
  if (!adapter) {
    linearToLoRALayers(model, { numLayers: settings.layers, rank: settings.rank, scale: settings.scale, seed: 1 });
    adapter = settings;
  }
  setAdapterEnabled(model, true);
  controller = new AbortController();
  page.run = 'training';
  page.losses = saved ? saved.losses.slice(0, saved.step) : [];
  page.valLosses = saved ? saved.valLosses.slice() : [];
  drawLoss();
  $('model-status').textContent = `loaded ${current.name}.`;
  updateButtons();
  const status = $('train-status');
  page.resumedFrom = saved?.step;
  status.textContent = resume ? `resuming at iteration ${saved!.step}…` : 'starting (the first steps compile the GPU kernels)…';
  let peak = 0;
  try {
    const result = await train(model, dataset, {
      iters: settings.iters,
      batchSize: settings.batch,
      maxSeqLength: settings.maxLength,
      learningRate: settings.lr,
      stepsPerReport: 1,
      stepsPerEval: settings.evalEvery,
      valBatches: 4,
      saveEvery: 0,
      store: browserStore(loaded.key, settings),
      resume,
      signal: controller.signal,
      onReport: (r) => {
        page.step = r.step;
        page.losses[r.step - 1] = r.loss;
        peak = r.peakMemory;
        status.textContent = `iteration ${r.step}/${settings.iters}: loss ${r.loss.toFixed(3)}, ${r.tokensPerSecond.toFixed(0)} tokens/s, peak GPU memory ${megabytes(r.peakMemory)}`;
        drawLoss();
      },
      onEval: (r) => {
        page.valLosses.push({ step: r.step, loss: r.valLoss });
        drawLoss();
      },
    });
    page.run = result.stopped === 'interrupted' ? 'stopped' : 'done';
    const val = result.valLoss === undefined ? '' : `, validation loss ${result.valLoss.toFixed(3)}`;
    status.textContent =
      page.run === 'stopped'
        ? `stopped at iteration ${result.steps}: saved in this browser; Resume continues from it (also after a reload).${storeNote}`
        : `done: ${result.steps} iterations, loss ${result.loss.toFixed(3)}${val}, peak GPU memory ${megabytes(peak)}.${storeNote}`;
  } catch (error) {
    page.run = 'idle';
    status.textContent = '';
    throw error;
  } finally {
    controller = undefined;
    updateButtons();
  }
}

// ---- 4. chat ---------------------------------------------------------------------------------

async function chat(): Promise<void> {
  if (!loaded) throw new Error('Load a model first.');
  const current = loaded;
  const withAdapter = $<HTMLInputElement>('use-adapter').checked && adapter !== null;
  const text = $<HTMLTextAreaElement>('prompt').value;
  const asChat = $<HTMLInputElement>('use-template').checked;
  const reply = $('reply');
  reply.textContent = '';
  setAdapterEnabled(current.model, withAdapter);
  current.model.eval();
  try {
    const result = await generate(current.model, current.tokenizer, asChat ? [{ role: 'user', content: text }] : text, {
      maxTokens: number('max-tokens'),
      temperature: 0,
      eosTokenIds: current.generation.eosTokenIds,
      onText: (piece) => {
        reply.textContent += piece;
      },
    });
    page.reply = { withAdapter, text: result.text };
    $('generate-status').textContent =
      `${result.tokens.length} tokens ${withAdapter ? 'with' : 'without'} the adapter, ${result.tokensPerSecond.toFixed(1)} tokens/s (${result.finishReason}).`;
  } finally {
    setAdapterEnabled(current.model, true);
  }
}

// ---- 5. download -----------------------------------------------------------------------------

async function download(format: 'mlx' | 'peft'): Promise<void> {
  if (!loaded || !adapter) throw new Error('Train an adapter first.');
  const layers = loaded.model.namedModules().filter(([, m]) => m instanceof LoRALinear).length;
  if (layers === 0) throw new Error('The model has no adapter to download.');
  const files = await adapterFiles(loaded.model, { format, numLayers: adapter.layers, baseModel: loaded.name });
  downloadAdapter(files, format);
  // The files as links too: a browser may hold back the second of two downloads from one click.
  const box = $('downloads');
  box.querySelectorAll('a').forEach((a) => {
    URL.revokeObjectURL(a.href);
  });
  box.textContent = `${format === 'mlx' ? 'MLX' : 'PEFT'} adapter: `;
  const weightsName = format === 'mlx' ? 'adapters.safetensors' : 'adapter_model.safetensors';
  for (const [name, data, type] of [
    [weightsName, new Uint8Array(files.weights), 'application/octet-stream'],
    ['adapter_config.json', files.config, 'application/json'],
  ] as const) {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([data], { type }));
    a.download = name;
    a.textContent = name;
    box.append(a, ' ');
  }
}

/** A readable name for a model URL: the Hub's repository id, else the last path segment. */
function urlName(url: string): string {
  const hub = /huggingface\.co\/([^/]+\/[^/]+)\/resolve\//.exec(url);
  return hub ? hub[1] : url.replace(/\/+$/, '').split('/').pop() || url;
}

// ---- wiring ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  try {
    const gpu = await startWebGPU();
    ({ limits, path: kernelPath, f16Gemm } = gpu);
    const f16 = $<HTMLSelectElement>('dtype').options[1];
    f16.disabled = !gpu.report.shaderF16;
    if (!gpu.report.shaderF16) f16.textContent = 'f16 (this adapter has no shader-f16)';
  } catch (error) {
    $('summary').textContent = 'No WebGPU adapter: this page needs Safari 26+, Chrome 113+ or Edge with WebGPU enabled.';
    showError(error);
    return;
  }
  const folderInput = $<HTMLInputElement>('model-folder');
  folderInput.onchange = action(async () => {
    const files = Array.from(folderInput.files ?? []);
    const name = files[0]?.webkitRelativePath.split('/')[0] || 'the picked folder';
    await openFolder(files, name);
  });
  $<HTMLSelectElement>('dtype').onchange = action(async () => {
    // Another precision: the folder read again, its weights held in it.
    if (folder && loaded) await openFolder([...folder.files.values()], loaded.name);
  });
  button('model-url-load').onclick = action(async () => {
    const url = $<HTMLInputElement>('model-url').value.trim();
    if (!url) throw new Error('Give the URL of a model folder (the address under which config.json is served).');
    $('model-status').textContent = `fetching ${url}…`;
    await openFolder(await fetchModelFolder(new URL(url, location.href).href), urlName(url));
  });
  button('model-embedded').onclick = action(async () => {
    await openFolder(await fetchModelFolder(new URL('./base', location.href).href), 'the embedded tiny model');
  });
  const dataInput = $<HTMLInputElement>('data-file');
  dataInput.onchange = action(async () => {
    const file = dataInput.files?.[0];
    dataText = file ? { text: await file.text(), name: file.name } : undefined;
    $('data-info').textContent = file ? `${file.name}: ${megabytes(file.size)}, read when training starts.` : '';
    if (loaded && dataText) buildDataset();
  });
  button('data-sample').onclick = action(async () => {
    dataText = undefined;
    dataInput.value = '';
    $<HTMLTextAreaElement>('data-text').value = shipsLog(200)
      .map((text) => JSON.stringify({ text }))
      .join('\n');
    if (loaded) buildDataset();
  });
  $<HTMLTextAreaElement>('data-text').oninput = () => {
    dataText = undefined;
    dataInput.value = '';
  };
  for (const id of ['rank', 'layers', 'batch', 'max-length']) $<HTMLInputElement>(id).oninput = showMemory;
  button('train').onclick = action(() => runTraining(false));
  button('resume').onclick = action(() => runTraining(true));
  button('stop').onclick = () => controller?.abort();
  button('generate').onclick = action(chat);
  button('download-mlx').onclick = action(() => download('mlx'));
  button('download-peft').onclick = action(() => download('peft'));
  page.ready = true;
  updateButtons();
}

void main();
