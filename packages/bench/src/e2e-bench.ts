/**
 * `metal-lora-bench e2e`: a whole LoRA fine-tuning step as a user runs it — forward, cross-entropy
 * loss, backward, AdamW — on published model shapes with random weights and tokens, against
 * PyTorch + transformers + PEFT (f32, TF32 off, SDPA attention) in the same run where `torch` with
 * CUDA exists.
 *
 *   metal-lora-bench e2e [--backend webgpu|cpu] [--models smollm2-135m,llama-3.2-1b,qwen2.5-0.5b]
 *                        [--batch 4] [--seq 512] [--rank 8] [--steps 5] [--warmup 2] [--json out.json] [--no-peers] [--separate-passes]
 *                        [--grad-checkpoint] [--keep-attention] [--fused-attention|--composed-attention] [--dtype float32|float16] [--subgroup-matrix] [--no-capture] [--quantize BITS]
 *                        [--steps-per-report N]
 *
 * LoRA rank `--rank` (alpha 16) on all seven linear layers of every block, as mlx-lm and PEFT users
 * commonly train. Per step: wall time (by default the loss is read back every step and a step is
 * timed alone, median of `--steps`; with `--steps-per-report N` the losses are read back every N
 * steps, as `metal-lora train` reports every 10, and a step is the timed steps' mean, on both sides),
 * the host time spent recording it, tokens/s, the allocator's peak, the GPU's busy
 * share (NVIDIA: `nvidia-smi` sampled during the timed steps) and the backend's dispatches, submits
 * and buffer creations per step. The CPU backend times the embedded model (`pnpm start`'s).
 *
 * The step's forward and backward are captured and replayed (`valueAndGrad(..., { capture: true })`,
 * as `metal-lora train` runs them); `--no-capture` records every op every step.
 *
 * `--dtype float16` is mixed precision: the model in f16 (f32 accumulation in every GEMM and
 * reduction, AdamW's master weights and moments in f32) against PyTorch's base in bf16; the GPU is
 * requested with Dawn's f16 toggle for NVIDIA. `--subgroup-matrix` lets big products use the
 * subgroup-matrix GEMM where the adapter offers a configuration for them.
 *
 * `--quantize BITS` is QLoRA: the base quantized (MLX affine, groups of 64; `quantizeModel`) before
 * LoRA is added; the row reports the base's bytes as held, and no PyTorch peer runs.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createWebGPUBackend, subgroupMatrixPath, WebGPUBackend } from '@metal-lora/metal-kernels';
import { AdamW, type LlamaConfig, LlamaForCausalLM, linearToLoRALayers, quantizeModel, valueAndGrad } from '@metal-lora/nn';
import * as T from '@metal-lora/tensor';
import { loadModel } from 'metal-lora';
import { MODEL_SHAPES } from './shapes';
import { median } from './timing';

/** The shapes `e2e` knows besides the published ones: `tiny` (CI's reduced run on lavapipe). */
export const E2E_SHAPES: Record<string, LlamaConfig> = {
  ...MODEL_SHAPES,
  tiny: {
    model_type: 'llama',
    vocab_size: 512,
    hidden_size: 64,
    intermediate_size: 176,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    rms_norm_eps: 1e-5,
    tie_word_embeddings: true,
  },
};

export interface E2EOptions {
  models: string[];
  batch: number;
  seq: number;
  rank: number;
  steps: number;
  warmup: number;
  /** Recompute each block in backward (ours: `model.gradientCheckpointing`; PyTorch: `gradient_checkpointing_enable`). */
  gradCheckpoint?: boolean;
  /** Keep attention's probabilities from forward to backward (ours: `model.recomputeAttention = false`). */
  keepAttention?: boolean;
  /** Ours: attention as one fused op (`model.fusedAttention`: true, false, or `'auto'`, the default: fused on webgpu). */
  fusedAttention?: boolean | 'auto';
  /**
   * The model's dtype. `float16`: ours holds the base (and the adapter) in f16, AdamW keeping f32
   * master weights and moments; PyTorch holds the base in bf16 (PEFT keeps the adapter in f32).
   */
  dtype?: 'float32' | 'float16';
  /** Replay the step's forward and backward (`valueAndGrad(..., { capture: true })`, as `metal-lora train` does); default true. */
  capture?: boolean;
  /** QLoRA: quantize the base to this many bits (MLX affine, groups of 64) before adding LoRA; ours only (no peer). */
  quantize?: number;
  /**
   * Read the losses back every this many steps (default 1: every step, each step timed alone). Above
   * 1 the host records the next steps while the GPU runs, as `metal-lora train` does between its
   * reports, and a step's time is the mean over the timed steps (PyTorch: the same).
   */
  stepsPerReport?: number;
}

export interface E2ERow {
  model: string;
  parameters: number;
  /** The model's weights as held before LoRA (f32: 4 bytes each, f16: 2; quantized: the packed words, scales and biases). */
  weightBytes: number;
  trainable: number;
  /** Wall time of a step, ms: the median with the loss read back each step, else the mean (`stepsPerReport`). */
  stepMs: number;
  /** Host time recording a step (before waiting for the loss), ms: median, or mean as `stepMs`. */
  hostMs: number;
  tokensPerSecond: number;
  /** The allocator's peak during the timed steps (live tensors and workspaces; not the idle pool). */
  peakBytes: number;
  /** GPU busy share during the timed steps (0..1), where `nvidia-smi` exists. */
  gpuBusy?: number;
  /** GPU time of one step's kernels (webgpu with timestamps: every dispatch timed), ms, and the largest shares by kernel. */
  kernelMs?: number;
  topKernels?: { label: string; count: number; ms: number }[];
  /** Per step (webgpu). */
  dispatches?: number;
  submits?: number;
  buffersCreated?: number;
  bindGroupsCreated?: number;
  losses: number[];
  torch?: TorchRow | string;
}

export interface TorchRow {
  stepMs: number;
  tokensPerSecond: number;
  peakBytes: number;
  gpuBusy?: number;
  losses: number[];
}

/** Samples `nvidia-smi`'s utilization every 100 ms until stopped; undefined where there is none. */
function busySampler(): { stop: () => Promise<number | undefined> } {
  let child: ChildProcess | undefined;
  let text = '';
  try {
    child = spawn('nvidia-smi', ['--query-gpu=utilization.gpu', '--format=csv,noheader,nounits', '-lms', '100', '-i', '0'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    child.on('error', () => {
      child = undefined;
    });
    child.stdout?.on('data', (d) => {
      text += d;
    });
  } catch {
    child = undefined;
  }
  return {
    stop: async () => {
      if (!child) return undefined;
      const done = new Promise((resolve) => child!.on('close', resolve));
      child.kill();
      await done;
      // The first sample may predate the steps: drop it.
      const samples = text
        .trim()
        .split('\n')
        .map(Number)
        .filter((v) => Number.isFinite(v))
        .slice(1);
      return samples.length ? samples.reduce((a, b) => a + b, 0) / samples.length / 100 : undefined;
    },
  };
}

/** Seeded token ids in `[0, vocab)` (xorshift), so every run and PyTorch see the same data. */
export function randomTokens(count: number, vocab: number, seed: number): Int32Array {
  let s = seed >>> 0 || 1;
  return Int32Array.from({ length: count }, () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) % vocab;
  });
}

/** Times `options.steps` LoRA training steps of one model on the current backend. */
export async function timeTrainingSteps(name: string, options: E2EOptions): Promise<E2ERow> {
  const backend = T.getBackend();
  const gpu = backend instanceof WebGPUBackend ? backend : null;
  const model =
    name === 'embedded'
      ? loadModel(fileURLToPath(new URL('../../metal-lora/assets/base', import.meta.url))).model
      : new LlamaForCausalLM(E2E_SHAPES[name] ?? unknownModel(name), { seed: 1, dtype: options.dtype ?? 'float32' });
  const vocab = model.config.vocab_size;
  const parameters = model.namedParameters().reduce((n, [, p]) => n + p.size, 0);
  if (options.quantize) await quantizeModel(model, { bits: options.quantize, groupSize: 64 });
  // The base's bytes as held (packed words at 4 bytes each, halves at 2).
  const weightBytes = model.namedParameters().reduce((n, [, p]) => n + p.size * T.bytesPerElement(p.dtype), 0);
  linearToLoRALayers(model, { rank: options.rank, alpha: 16, seed: 7 });
  model.gradientCheckpointing = options.gradCheckpoint === true;
  model.recomputeAttention = options.keepAttention !== true;
  model.fusedAttention = options.fusedAttention ?? 'auto';
  const trainable = model.trainableParameters().reduce((n, [, p]) => n + p.size, 0);
  model.train();
  const optimizer = new AdamW(model, { lr: 1e-4 });
  const { batch: B, seq: L } = options;
  const tokens = randomTokens(B * (L + 1), vocab, 1234);
  const inputs = T.tensor(
    Int32Array.from({ length: B * L }, (_, i) => tokens[Math.floor(i / L) * (L + 1) + (i % L)]),
    [B, L],
    { dtype: 'int32' },
  );
  const targets = T.tensor(
    Int32Array.from({ length: B * L }, (_, i) => tokens[Math.floor(i / L) * (L + 1) + (i % L) + 1]),
    [B, L],
    { dtype: 'int32' },
  );
  const lossFn = (x: T.Tensor, y: T.Tensor) => model.loss(x, y);
  const step = valueAndGrad(model, lossFn, { capture: options.capture !== false });
  // The profiled step runs the ops (a replay's kernels are not timed one by one).
  const plainStep = valueAndGrad(model, lossFn);
  const losses: number[] = [];
  /** Records one step; its loss (a copy: a replay overwrites the captured one) is read later. */
  const record = (plain = false): T.Tensor =>
    T.tidy(() => {
      const [l, grads] = (plain ? plainStep : step)(inputs, targets);
      optimizer.update(model, grads);
      return T.mul(l, 1);
    });
  const report = async (pending: T.Tensor[]) => {
    for (const l of pending) {
      losses.push(await l.item());
      l.dispose();
    }
    pending.length = 0;
  };
  const once = async (plain = false): Promise<{ wall: number; host: number }> => {
    const t0 = performance.now();
    const loss = record(plain);
    const host = performance.now() - t0;
    await report([loss]);
    return { wall: performance.now() - t0, host };
  };
  /** `count` steps with the losses read every `every`: the mean wall and host time of a step. */
  const run = async (count: number, every: number): Promise<{ wall: number; host: number }> => {
    const pending: T.Tensor[] = [];
    let host = 0;
    const t0 = performance.now();
    for (let i = 1; i <= count; i++) {
      const h0 = performance.now();
      pending.push(record());
      host += performance.now() - h0;
      if (i % every === 0 || i === count) await report(pending);
    }
    return { wall: (performance.now() - t0) / count, host: host / count };
  };
  const every = options.stepsPerReport ?? 1;
  /** `count` steps, timed each alone (the loss read every step), or as one mean (read every `every`). */
  const timed = async (count: number): Promise<{ wall: number; host: number }[]> => {
    if (every > 1) return [await run(count, every)];
    const times: { wall: number; host: number }[] = [];
    for (let i = 0; i < count; i++) times.push(await once());
    return times;
  };
  await timed(options.warmup);
  backend.resetPeak();
  const before = gpu ? { ...gpu.stats } : null;
  const sampler = gpu ? busySampler() : null;
  const times = await timed(options.steps);
  const gpuBusy = await sampler?.stop();
  const after = gpu ? { ...gpu.stats } : null;
  // Before the profiled step, which runs the ops beside a captured step's buffers.
  const peakBytes = backend.memory().peakBytes;
  let profile: Map<string, { count: number; ms: number }> | undefined;
  if (gpu?.context.report.timestampQuery) {
    // One more step with every dispatch timed: where the GPU's time goes.
    gpu.startProfile();
    await once(true);
    profile = await gpu.stopProfile();
    losses.pop();
  }
  const per = (k: keyof WebGPUBackend['stats']) => (after && before ? Math.round((after[k] - before[k]) / options.steps) : undefined);
  const stepMs = median(times.map((t) => t.wall));
  const row: E2ERow = {
    model: name,
    parameters,
    weightBytes,
    trainable,
    stepMs,
    hostMs: median(times.map((t) => t.host)),
    tokensPerSecond: (B * L) / (stepMs / 1000),
    peakBytes,
    gpuBusy,
    kernelMs: profile ? [...profile.values()].reduce((a, k) => a + k.ms, 0) : undefined,
    topKernels: profile
      ? [...profile]
          .map(([label, k]) => ({ label, ...k }))
          .sort((a, b) => b.ms - a.ms)
          .slice(0, 12)
      : undefined,
    dispatches: per('dispatches'),
    submits: per('submits'),
    buffersCreated: per('buffersCreated'),
    bindGroupsCreated: per('bindGroupsCreated'),
    losses,
  };
  for (const t of [inputs, targets]) t.dispose();
  optimizer.dispose();
  step.dispose();
  for (const [, p] of model.namedParameters()) p.dispose();
  gpu?.releasePool();
  return row;
}

function unknownModel(name: string): never {
  throw new T.ValueError('metal-lora-bench e2e', `unknown model shape '${name}'`, `one of ${Object.keys(E2E_SHAPES).join(', ')}, embedded`, name);
}

function torchSteps(names: string[], options: E2EOptions): Map<string, TorchRow> | string {
  const probe = spawnSync('python3', ['-c', 'import torch, transformers, peft; print(torch.cuda.is_available())'], { encoding: 'utf8' });
  if (probe.status !== 0) return 'pytorch: python3 with torch, transformers and peft is not available here';
  if (probe.stdout.trim() !== 'True') return 'pytorch: torch has no CUDA device here';
  const script = fileURLToPath(new URL(process.env.METAL_LORA_TORCH_E2E ?? '../python/torch_e2e.py', import.meta.url));
  const shapes = Object.fromEntries(names.map((n) => [n, E2E_SHAPES[n]]));
  const run = spawnSync('python3', [script, JSON.stringify({ shapes, ...options, seed: 1234 })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) return `pytorch: the script failed (${run.stderr.trim().split('\n').pop()})`;
  const json = JSON.parse(run.stdout) as { device: string; results: Record<string, TorchRow> };
  return new Map(Object.entries(json.results));
}

const gb = (bytes: number) => (bytes / 1e9).toFixed(2);
const pct = (v: number | undefined) => (v === undefined ? '–' : `${Math.round(v * 100)}%`);

/** The markdown table of a run: ours and PyTorch side by side, with the ratios. */
export function e2eTable(rows: E2ERow[], device: string, options: E2EOptions, date: string): string {
  const lines = [
    `LoRA training step on ${device}, ${date}: batch ${options.batch} × ${options.seq} tokens, rank ${options.rank} on all linear layers, AdamW, ${options.dtype === 'float16' ? 'mixed precision (ours: f16 model, f32 master weights; PyTorch: bf16 base, f32 adapter)' : 'f32'}${options.gradCheckpoint ? ', gradient checkpointing on both sides' : ''}${options.fusedAttention === true ? ', ours with fused attention' : options.fusedAttention === false ? ', ours with composed attention' : ''}; ${(options.stepsPerReport ?? 1) > 1 ? `losses read every ${options.stepsPerReport} steps, mean of ${options.steps} steps` : `median of ${options.steps} steps`} after ${options.warmup}.`,
    '',
    '| model | ours: step (ms) | host (ms) | tokens/s | peak (GB) | GPU busy | dispatches/step | PyTorch+PEFT: step (ms) | tokens/s | peak (GB) | GPU busy | speed ours/PyTorch | memory ours/PyTorch |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => {
      const t = typeof r.torch === 'object' ? r.torch : undefined;
      return [
        r.model,
        r.stepMs.toFixed(1),
        r.hostMs.toFixed(1),
        Math.round(r.tokensPerSecond).toLocaleString('en-US'),
        gb(r.peakBytes),
        pct(r.gpuBusy),
        r.dispatches ?? '–',
        t ? t.stepMs.toFixed(1) : '–',
        t ? Math.round(t.tokensPerSecond).toLocaleString('en-US') : '–',
        t ? gb(t.peakBytes) : '–',
        pct(t?.gpuBusy),
        t ? `${(r.tokensPerSecond / t.tokensPerSecond).toFixed(2)}×` : '–',
        t ? `${(r.peakBytes / t.peakBytes).toFixed(2)}×` : '–',
      ]
        .join(' | ')
        .replace(/^/, '| ')
        .concat(' |');
    }),
  ];
  const notes = [...new Set(rows.filter((r) => typeof r.torch === 'string').map((r) => r.torch as string))];
  return `${lines.join('\n')}${notes.length ? `\n\n${notes.join('\n')}` : ''}`;
}

export async function runE2EBench(argv: string[]): Promise<{ rows: E2ERow[]; table: string }> {
  const { values } = parseArgs({
    args: argv,
    options: {
      backend: { type: 'string', default: 'webgpu' },
      models: { type: 'string' },
      batch: { type: 'string' },
      seq: { type: 'string' },
      rank: { type: 'string', default: '8' },
      steps: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '2' },
      json: { type: 'string' },
      'no-peers': { type: 'boolean', default: false },
      'separate-passes': { type: 'boolean', default: false },
      'grad-checkpoint': { type: 'boolean', default: false },
      'keep-attention': { type: 'boolean', default: false },
      'fused-attention': { type: 'boolean', default: false },
      'composed-attention': { type: 'boolean', default: false },
      dtype: { type: 'string', default: 'float32' },
      'subgroup-matrix': { type: 'boolean', default: false },
      'no-subgroup-matrix': { type: 'boolean', default: false },
      'no-capture': { type: 'boolean', default: false },
      quantize: { type: 'string' },
      'steps-per-report': { type: 'string', default: '1' },
    },
    strict: true,
  });
  const cpu = values.backend === 'cpu';
  if (values.backend !== 'cpu' && values.backend !== 'webgpu')
    throw new T.ValueError('metal-lora-bench e2e', 'unknown --backend', 'webgpu or cpu', String(values.backend));
  const int = (flag: string, v: string | undefined, fallback: number) => {
    const n = v === undefined ? fallback : Number(v);
    if (!Number.isInteger(n) || n < 1) throw new T.ValueError('metal-lora-bench e2e', `--${flag} must be a positive integer`, 'e.g. 4', String(v));
    return n;
  };
  if (values.dtype !== 'float32' && values.dtype !== 'float16')
    throw new T.ValueError('metal-lora-bench e2e', 'unknown --dtype', 'float32 or float16', String(values.dtype));
  if (values['fused-attention'] && values['composed-attention'])
    throw new T.ValueError('metal-lora-bench e2e', '--fused-attention and --composed-attention ask for both kinds of attention', 'at most one', 'both');
  const options: E2EOptions = {
    models: (values.models ?? (cpu ? 'embedded' : 'smollm2-135m,qwen2.5-0.5b,llama-3.2-1b')).split(','),
    batch: int('batch', values.batch, 4),
    seq: int('seq', values.seq, cpu ? 64 : 512),
    rank: int('rank', values.rank, 8),
    steps: int('steps', values.steps, 5),
    warmup: int('warmup', values.warmup, 2),
    gradCheckpoint: values['grad-checkpoint'] === true,
    keepAttention: values['keep-attention'] === true,
    fusedAttention: values['fused-attention'] ? true : values['composed-attention'] ? false : 'auto',
    dtype: values.dtype,
    capture: values['no-capture'] !== true,
    quantize: values.quantize === undefined ? undefined : int('quantize', values.quantize, 4),
    stepsPerReport: int('steps-per-report', values['steps-per-report'], 1),
  };
  for (const m of options.models) if (m !== 'embedded' && !E2E_SHAPES[m]) unknownModel(m);
  let device: string;
  if (cpu) {
    T.setBackendSync(T.cpuBackend);
    device = 'CPU backend (JavaScript, one thread)';
  } else {
    const gpu = await createWebGPUBackend({ preciseTimestamps: true, f16OnNvidia: options.dtype === 'float16' });
    if (options.dtype === 'float16' && !gpu.context.report.shaderF16)
      throw new T.ValueError(
        'metal-lora-bench e2e',
        '--dtype float16 needs shader-f16',
        'an adapter with shader-f16',
        gpu.context.report.precisionNotes.join('; '),
      );
    gpu.sharePasses = !values['separate-passes'];
    if (values['subgroup-matrix'] && values['no-subgroup-matrix'])
      throw new T.ValueError('metal-lora-bench e2e', '--subgroup-matrix and --no-subgroup-matrix exclude each other', 'at most one', 'both');
    gpu.subgroupMatrix = values['subgroup-matrix'] ? true : values['no-subgroup-matrix'] ? false : 'auto';
    T.setBackendSync(gpu);
    const r = gpu.context.report;
    const path = subgroupMatrixPath(gpu, options.dtype === 'float16' ? 'float16' : 'float32');
    device =
      `${r.vendor} ${r.device || r.architecture} ${r.description} (WebGPU via ${r.runtime}${path === 'portable' ? '' : `, subgroup matrices on (${path})`})`.replace(
        /\s+/g,
        ' ',
      );
  }
  console.log(`e2e bench on ${device}: ${options.models.join(', ')}; batch ${options.batch} × ${options.seq}, rank ${options.rank}`);
  // PyTorch's peer would time a float base: a quantized run has none.
  const { rows, table } = await measureE2E(options, device, !values['no-peers'] && !options.quantize);
  if (values.json) writeFileSync(values.json, JSON.stringify({ device, date: new Date().toISOString(), options, rows }, null, 2));
  const backend = T.getBackend();
  if (backend instanceof WebGPUBackend) {
    await backend.sync();
    backend.context.device.destroy();
  }
  return { rows, table };
}

/**
 * Times every model of `options` on the current backend (a line each as it goes), adds
 * PyTorch's row where `peers` and it exists, and prints the table (also `pnpm bench`'s e2e part).
 */
export async function measureE2E(options: E2EOptions, device: string, peers: boolean): Promise<{ rows: E2ERow[]; table: string }> {
  const rows: E2ERow[] = [];
  for (const name of options.models) {
    const row = await timeTrainingSteps(name, options);
    console.log(
      `${name}: ${row.stepMs.toFixed(1)} ms/step (host ${row.hostMs.toFixed(1)} ms), ${Math.round(row.tokensPerSecond)} tokens/s, weights ${gb(row.weightBytes)} GB, peak ${gb(row.peakBytes)} GB` +
        (row.dispatches !== undefined
          ? `, ${row.dispatches} dispatches, ${row.submits} submits, ${row.buffersCreated} buffers and ${row.bindGroupsCreated} bind groups created per step`
          : '') +
        (row.gpuBusy !== undefined ? `, GPU busy ${pct(row.gpuBusy)}` : '') +
        (row.kernelMs !== undefined ? `, kernels ${row.kernelMs.toFixed(1)} ms of GPU time` : '') +
        `; losses ${row.losses.map((l) => l.toFixed(3)).join(' ')}`,
    );
    if (row.topKernels) console.log(`  GPU time by kernel: ${row.topKernels.map((k) => `${k.label} ${k.ms.toFixed(1)} ms (${k.count}×)`).join(', ')}`);
    rows.push(row);
  }
  const named = options.models.filter((n) => n in E2E_SHAPES);
  if (peers && named.length > 0) {
    console.log('peer: PyTorch + transformers + PEFT …');
    const torch = torchSteps(named, options);
    for (const row of rows) row.torch = typeof torch === 'string' ? torch : torch.get(row.model);
  }
  const table = e2eTable(rows, device, options, new Date().toISOString().slice(0, 10));
  console.log(`\n${table}\n`);
  return { rows, table };
}

if (process.argv[1]?.match(/e2e-bench\.(ts|mjs|js)$/)) await runE2EBench(process.argv.slice(2));
