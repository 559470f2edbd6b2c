/**
 * `train(model, dataset, options)`: the fine-tuning loop of the CLI as a library call, with
 * mlx-lm's meanings (iterations, batch size, gradient accumulation, learning-rate schedules with
 * warm-up, reports, validation, checkpoints) and, beyond mlx-lm, gradient clipping, packing, and
 * checkpoints that hold the optimizer state so that `resume` continues the same run exactly.
 *
 * This module runs anywhere (Node and browsers): what a run writes goes through a
 * {@link TrainingStore}. The Node entry's `train` (training-files.ts) gives it one over the
 * adapter folder: `adapters.safetensors` + `adapter_config.json` (or PEFT's pair),
 * `0000100_adapters.safetensors` every `saveEvery` steps, and `training_state.safetensors` (the
 * trainable weights, the optimizer's moments and the step, in one atomically written file).
 */
import { type SafetensorsEntry, toFloat32, type WriteEntry } from '@metal-lora/adapter-io';
import { Adam, AdamW, type LlamaForCausalLM, LoRALinear, type Optimizer, SGD, valueAndGrad } from '@metal-lora/nn';
import {
  add,
  div,
  getBackend,
  keep,
  manualSeed,
  maximum,
  mix32,
  mul,
  noGrad,
  sqrt,
  StateError,
  sum,
  type Tensor,
  tensor,
  tidy,
  ValueError,
} from '@metal-lora/tensor';
import { type Batch, BatchPlan } from './batching';
import type { Dataset, DatasetSplit } from './dataset';

/** mlx-lm's `lr_schedule`: a schedule of MLX's by name, its arguments, and an optional linear warm-up. */
export interface LrSchedule {
  name: 'cosine_decay' | 'linear_schedule' | 'exponential_decay' | 'step_decay';
  /** MLX's arguments: cosine_decay(init, decay_steps, end = 0), linear_schedule(init, end, steps), exponential_decay(init, rate), step_decay(init, rate, step_size). */
  arguments: number[];
  /** Warm-up steps from `warmup_init` to the schedule's first value (default 0). */
  warmup?: number;
  warmup_init?: number;
}

export type OptimizerName = 'adam' | 'adamw' | 'sgd';

export interface TrainingOptions {
  /** Optimizer steps. */
  iters: number;
  batchSize: number;
  /** Default 2048, as mlx-lm. */
  maxSeqLength?: number;
  /** Default 1e-5, as mlx-lm (ignored when `lrSchedule` is given: its first argument is the peak). */
  learningRate?: number;
  lrSchedule?: LrSchedule | null;
  optimizer?: OptimizerName;
  /** Options of the optimizer, with mlx-lm's names: adam/adamw `betas`, `eps`, `weight_decay`; sgd `momentum`, `weight_decay`, `dampening`, `nesterov`. */
  optimizerConfig?: Record<string, unknown>;
  /** Micro-batches per optimizer step, their gradients averaged (default 1). */
  gradAccumulationSteps?: number;
  /** Scale the gradients down to this global L2 norm when above it (default: no clipping). */
  maxGradNorm?: number | null;
  /** Default 10. */
  stepsPerReport?: number;
  /** Default 200. */
  stepsPerEval?: number;
  /** Validation batches per evaluation; -1 = the whole split (default 25). */
  valBatches?: number;
  /** Checkpoint every N steps (default 100); 0 = only at the end. */
  saveEvery?: number;
  /** Batch order and dropout masks (default 0). */
  seed?: number;
  /** Recompute each decoder block in backward instead of keeping its activations (default false). */
  gradCheckpoint?: boolean;
  /** Attention as one fused op, holding no `[B, heads, T, T]` scores (`LlamaModel.fusedAttention`: true, false or `'auto'`, fused on GPU backends; default: the model's setting). */
  fusedAttention?: boolean | 'auto';
  /**
   * Replay each batch shape's forward and backward once captured (`valueAndGrad`'s `capture`):
   * the ops' JavaScript runs only until a shape has been seen twice in a row. Default true; it
   * applies on WebGPU to unpacked batches without dropout.
   */
  captureSteps?: boolean;
  /** Examples laid end to end with per-document attention instead of padded (default false). */
  pack?: boolean;
  /**
   * Where adapters and checkpoints are written (the Node entry's `train`: a folder); without it
   * (and without `store`) nothing is written.
   */
  adapterPath?: string;
  /** Where the run's adapter, checkpoints, state and metrics go (what `adapterPath` and `metricsFile` make in Node). */
  store?: TrainingStore;
  /** How the adapter is saved (default MLX) and what its config records. */
  adapter?: { format?: 'mlx' | 'peft'; numLayers?: number; keys?: string[] | null; fineTuneType?: 'lora' | 'full' };
  /** Continue the run whose state is in the store (`training_state.safetensors` in `adapterPath`). */
  resume?: boolean;
  /** Appends one JSON line per report, evaluation and checkpoint. */
  metricsFile?: string;
  /** Stops after the step in progress and saves a checkpoint (the CLI's Ctrl-C). */
  signal?: AbortSignal;
  onReport?: (report: TrainReport) => void;
  onEval?: (report: EvalReport) => void;
  onSave?: (report: { step: number; path: string }) => void;
}

export interface TrainReport {
  step: number;
  /** Mean training loss of the steps since the last report. */
  loss: number;
  learningRate: number;
  iterationsPerSecond: number;
  tokensPerSecond: number;
  /** Targets counted in the loss since the start of the run. */
  trainedTokens: number;
  /** The allocator's peak since the start, in bytes. */
  peakMemory: number;
}

export interface EvalReport {
  step: number;
  valLoss: number;
  seconds: number;
}

export interface TrainResult {
  steps: number;
  /** The last reported training loss. */
  loss: number;
  /** The last validation loss, where a validation split was given. */
  valLoss?: number;
  stopped: 'done' | 'interrupted';
}

/** The file of a run's state in an adapter folder. */
export const STATE_FILE = 'training_state.safetensors';

/** A learning rate per step (0-based) from mlx-lm's options. */
export function learningRateSchedule(learningRate: number, schedule?: LrSchedule | null): (step: number) => number {
  const op = 'train';
  if (!schedule) return () => learningRate;
  const a = schedule.arguments;
  if (!Array.isArray(a) || !a.every((v) => typeof v === 'number' && Number.isFinite(v)))
    throw new ValueError(op, 'lr_schedule.arguments must be a list of numbers', '[init, ...]', JSON.stringify(a));
  const need = { cosine_decay: [2, 3], linear_schedule: [3, 3], exponential_decay: [2, 2], step_decay: [3, 3] }[schedule.name];
  if (!need)
    throw new ValueError(op, 'unknown lr_schedule name', 'cosine_decay, linear_schedule, exponential_decay or step_decay', JSON.stringify(schedule.name));
  if (a.length < need[0] || a.length > need[1])
    throw new ValueError(
      op,
      `lr_schedule ${schedule.name} takes ${need[0] === need[1] ? need[0] : `${need[0]} or ${need[1]}`} arguments`,
      String(need[0]),
      String(a.length),
    );
  let main: (step: number) => number;
  if (schedule.name === 'cosine_decay') {
    const [init, steps, end = 0] = a;
    main = (s) => (s >= steps ? end : end + 0.5 * (init - end) * (1 + Math.cos((Math.PI * s) / steps)));
  } else if (schedule.name === 'linear_schedule') {
    const [init, end, steps] = a;
    main = (s) => init + ((end - init) * Math.min(s, steps)) / steps;
  } else if (schedule.name === 'exponential_decay') main = (s) => a[0] * a[1] ** s;
  else main = (s) => a[0] * a[1] ** Math.floor(s / a[2]);
  const warmup = schedule.warmup ?? 0;
  if (!Number.isSafeInteger(warmup) || warmup < 0)
    throw new ValueError(op, 'lr_schedule.warmup must be a non-negative integer', 'an integer ≥ 0', String(warmup));
  if (warmup === 0) return main;
  const from = schedule.warmup_init ?? 0;
  // mlx-lm joins linear_schedule(warmup_init, init, warmup) and the schedule at step warmup + 1.
  return (s) => (s <= warmup ? from + ((a[0] - from) * s) / warmup : main(s - warmup - 1));
}

function makeOptimizer(model: LlamaForCausalLM, name: OptimizerName, lr: (step: number) => number, config: Record<string, unknown>): Optimizer {
  const op = 'train';
  const known = name === 'sgd' ? ['momentum', 'weight_decay', 'dampening', 'nesterov'] : ['betas', 'eps', 'weight_decay', 'bias_correction'];
  for (const key of Object.keys(config))
    if (!known.includes(key)) throw new ValueError(op, `optimizer_config.${name} has an unknown key '${key}'`, known.join(', '), key);
  const num = (key: string) => {
    const v = config[key];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v)))
      throw new ValueError(op, `optimizer_config.${name}.${key} must be a number`, 'a number', JSON.stringify(v));
    return v as number | undefined;
  };
  if (name === 'sgd') {
    const nesterov = config.nesterov;
    if (nesterov !== undefined && typeof nesterov !== 'boolean')
      throw new ValueError(op, 'optimizer_config.sgd.nesterov must be true or false', 'a boolean', JSON.stringify(nesterov));
    return new SGD(model, { lr, momentum: num('momentum'), weightDecay: num('weight_decay'), dampening: num('dampening'), nesterov });
  }
  if (config.bias_correction === false)
    throw new ValueError(
      op,
      "Adam without bias correction (MLX's default) is not available: this library's Adam corrects as PyTorch's does",
      'bias_correction: true or absent',
      'false',
    );
  const betas = config.betas;
  if (betas !== undefined && !(Array.isArray(betas) && betas.length === 2 && betas.every((b) => typeof b === 'number')))
    throw new ValueError(op, `optimizer_config.${name}.betas must be two numbers`, '[0.9, 0.999]', JSON.stringify(betas));
  const options = { lr, betas: betas as [number, number] | undefined, eps: num('eps'), weightDecay: num('weight_decay') };
  return name === 'adamw' ? new AdamW(model, options) : new Adam(model, options);
}

/** Token-weighted mean loss over `batches` batches of a split (-1: all), in order, without gradients. */
export async function evaluateLoss(
  model: LlamaForCausalLM,
  split: DatasetSplit,
  options: { batchSize: number; maxSeqLength?: number; batches?: number; pack?: boolean },
): Promise<number> {
  const plan = new BatchPlan(split.examples, { batchSize: options.batchSize, maxSeqLength: options.maxSeqLength, shuffle: false, pack: options.pack });
  return planLoss(model, plan, options.batches ?? -1);
}

async function planLoss(model: LlamaForCausalLM, plan: BatchPlan, batches: number): Promise<number> {
  const n = batches < 0 ? plan.count : Math.min(batches, plan.count);
  const wasTraining = model.training;
  model.eval();
  let total = 0;
  let tokens = 0;
  try {
    for (let i = 0; i < n; i++) {
      const batch = plan.at(i);
      const loss = noGrad(() => tidy(() => lossOf(model, batch)));
      total += (await loss.item()) * batch.trainedTokens;
      await turnOfEventLoop();
      tokens += batch.trainedTokens;
      loss.dispose();
    }
  } finally {
    model.train(wasTraining);
  }
  return total / tokens;
}

function lossOf(model: LlamaForCausalLM, batch: Batch): Tensor {
  const backend = getBackend();
  const shape = [batch.rows, batch.length];
  const inputs = tensor(batch.inputs, shape, { dtype: 'int32', backend });
  const targets = tensor(batch.targets, shape, { dtype: 'int32', backend });
  return model.loss(inputs, targets, { segments: batch.segments });
}

/**
 * What a run writes, and reads back to resume (each part optional). `save` writes the adapter (or the full fine-tune's
 * weights) and the run's state (`runStateFile`) after step `at`, also as a numbered checkpoint
 * when `numbered`, and returns where it went; `load` returns the state file `save` wrote (null
 * where there is none); `metrics` takes one record per report, evaluation and save.
 */
export interface TrainingStore {
  save?(
    at: number,
    numbered: boolean,
    run: { model: LlamaForCausalLM; state: { entries: Record<string, WriteEntry>; metadata: Record<string, string> } },
  ): Promise<string>;
  load?(): Promise<{ metadata: Record<string, string>; tensors: Record<string, SafetensorsEntry> } | null>;
  metrics?(record: Record<string, unknown>): void;
}

interface RunState {
  /** Batches trained so far. */
  iteration: number;
  trainedTokens: number;
  /** Gradients summed over the batches of an optimizer step not yet taken. */
  pending: { grads: Record<string, Tensor>; batches: number } | null;
}

async function entry(t: Tensor): Promise<WriteEntry> {
  return { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(await t.data()) };
}

/** The trainable weights, the optimizer's state and the run's position, as the entries and metadata of one safetensors file. */
async function runStateFile(
  model: LlamaForCausalLM,
  optimizer: Optimizer,
  state: RunState,
  meta: Record<string, string>,
): Promise<{ entries: Record<string, WriteEntry>; metadata: Record<string, string> }> {
  const entries: Record<string, WriteEntry> = Object.create(null);
  for (const [name, p] of model.trainableParameters()) entries[`model.${name}`] = await entry(p);
  const optimizerState = optimizer.stateDict(model);
  for (const [name, t] of Object.entries(optimizerState.tensors)) entries[`optimizer.${name}`] = await entry(t);
  for (const [name, t] of Object.entries(state.pending?.grads ?? {})) entries[`pending.${name}`] = await entry(t);
  const metadata = {
    ...meta,
    iteration: String(state.iteration),
    optimizer_step: String(optimizerState.step),
    trained_tokens: String(state.trainedTokens),
    pending_batches: String(state.pending?.batches ?? 0),
  };
  return { entries, metadata };
}

/** Restores `runStateFile`'s file. Everything is checked before the model or the optimizer changes. */
function restoreState(
  file: { metadata: Record<string, string>; tensors: Record<string, SafetensorsEntry> },
  model: LlamaForCausalLM,
  optimizer: Optimizer,
  meta: Record<string, string>,
): RunState {
  const op = 'train';
  for (const [key, value] of Object.entries(meta)) {
    if (file.metadata[key] !== value)
      throw new ValueError(op, `resume: the checkpoint was made with another ${key.replace(/_/g, ' ')}`, value, file.metadata[key] ?? 'none');
  }
  const count = (key: string) => {
    const v = Number(file.metadata[key]);
    if (!Number.isSafeInteger(v) || v < 0) throw new ValueError(op, `resume: ${STATE_FILE} has no valid ${key}`, 'an integer ≥ 0', String(file.metadata[key]));
    return v;
  };
  const [iteration, optimizerStep, trainedTokens, pendingBatches] = ['iteration', 'optimizer_step', 'trained_tokens', 'pending_batches'].map(count);
  const params = new Map(model.trainableParameters());
  const weights: [Tensor, Float32Array][] = [];
  const parts: Record<'optimizer' | 'pending', Record<string, SafetensorsEntry>> = { optimizer: Object.create(null), pending: Object.create(null) };
  for (const [name, e] of Object.entries(file.tensors)) {
    const [kind, ...rest] = name.split('.');
    const key = rest.join('.');
    if (kind === 'model') {
      const p = params.get(key);
      if (!p) throw new ValueError(op, `resume: '${key}' is not a trainable parameter of this model`, 'the same trainable layers as the checkpoint', key);
      if (p.shape.join() !== e.shape.join()) throw new ValueError(op, `resume: '${key}' has another shape`, `[${p.shape}]`, `[${e.shape}]`);
      weights.push([p, toFloat32(e)]);
    } else if (kind === 'optimizer' || kind === 'pending') parts[kind][key] = e;
    else throw new ValueError(op, `resume: unexpected tensor '${name}' in ${STATE_FILE}`, 'model.*, optimizer.* or pending.*', name);
  }
  if (weights.length !== params.size)
    throw new ValueError(op, 'resume: the checkpoint does not hold every trainable parameter', String(params.size), String(weights.length));
  const pendingNames = Object.keys(parts.pending);
  if (pendingBatches > 0 !== pendingNames.length > 0 || pendingNames.some((n) => !params.has(n)))
    throw new ValueError(op, 'resume: the pending gradients do not match the checkpoint', 'one per trainable parameter', String(pendingNames.length));
  const onDevice = (e: SafetensorsEntry) => tensor(toFloat32(e), e.shape, { backend: getBackend() });
  const moments = Object.fromEntries(Object.entries(parts.optimizer).map(([k, e]) => [k, onDevice(e)]));
  try {
    optimizer.loadStateDict(model, { step: optimizerStep, tensors: moments });
  } finally {
    for (const t of Object.values(moments)) t.dispose();
  }
  noGrad(() => {
    for (const [p, values] of weights) {
      const t = tensor(values, [...p.shape], { backend: p.backend });
      const v = p.dtype === 'float32' ? t : t.cast(p.dtype);
      p.assign(v);
      t.dispose();
      if (v !== t) v.dispose();
    }
  });
  const pending =
    pendingBatches > 0 ? { grads: Object.fromEntries(pendingNames.map((n) => [n, keep(onDevice(parts.pending[n]))])), batches: pendingBatches } : null;
  return { iteration, trainedTokens, pending };
}

/** A turn of the event loop: `setImmediate` where it exists (Node), else a zero-delay timer. */
function turnOfEventLoop(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof setImmediate === 'function') setImmediate(resolve);
    else setTimeout(resolve, 0);
  });
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new ValueError('train', `${name} must be an integer ≥ ${min}`, `an integer ≥ ${min}`, String(v));
}

/**
 * Fine-tunes `model`'s trainable parameters (LoRA layers from `linearToLoRALayers`, or whatever is
 * left trainable) on `dataset.train`, evaluating on `dataset.valid`; what the run writes goes to
 * `options.store` (the Node entry's `train` makes one over `adapterPath` and `metricsFile`). Runs
 * in browsers too. See {@link TrainingOptions}.
 */
export async function train(model: LlamaForCausalLM, dataset: Dataset, options: TrainingOptions): Promise<TrainResult> {
  const op = 'train';
  const trainSplit = dataset.train;
  if (!trainSplit) throw new ValueError(op, 'the dataset has no train split', 'loadDataset(...) with train data', 'none');
  const iters = options.iters;
  const accumulate = options.gradAccumulationSteps ?? 1;
  const every = options.stepsPerReport ?? 10;
  const evalEvery = options.stepsPerEval ?? 200;
  const saveEvery = options.saveEvery ?? 100;
  const seed = options.seed ?? 0;
  checkCount('iters', iters, 1);
  checkCount('batchSize', options.batchSize, 1);
  checkCount('gradAccumulationSteps', accumulate, 1);
  checkCount('stepsPerReport', every, 1);
  checkCount('stepsPerEval', evalEvery, 1);
  checkCount('saveEvery', saveEvery, 0);
  checkCount('seed', seed, 0);
  const clip = options.maxGradNorm ?? null;
  if (clip !== null && !(typeof clip === 'number' && clip > 0 && Number.isFinite(clip)))
    throw new ValueError(op, 'maxGradNorm must be a positive number', 'a number > 0', String(clip));
  const lr = learningRateSchedule(options.learningRate ?? 1e-5, options.lrSchedule);
  const optimizerName = options.optimizer ?? 'adam';
  if (!['adam', 'adamw', 'sgd'].includes(optimizerName)) throw new ValueError(op, 'unknown optimizer', 'adam, adamw or sgd', JSON.stringify(optimizerName));
  if (model.trainableParameters().length === 0)
    throw new ValueError(op, 'the model has no trainable parameters', 'LoRA layers (linearToLoRALayers) or unfrozen weights', 'none');
  if (options.adapter?.fineTuneType === 'full' && (options.adapter.format ?? 'mlx') !== 'mlx')
    throw new ValueError(op, 'a full fine-tune is saved in MLX format only', 'format mlx', String(options.adapter.format));
  if ((options.adapterPath !== undefined || options.metricsFile !== undefined) && !options.store)
    throw new ValueError(
      op,
      'adapterPath and metricsFile are written by the Node entry (a browser passes a store)',
      "train from 'metal-lora', or options.store",
      'a path alone',
    );
  const store = options.store;
  if (options.resume && !store?.load) throw new ValueError(op, 'resume needs adapterPath (where the checkpoint is)', 'adapterPath', 'none');
  const plan = new BatchPlan(trainSplit.examples, { batchSize: options.batchSize, maxSeqLength: options.maxSeqLength, seed, pack: options.pack });
  const optimizer = makeOptimizer(model, optimizerName, lr, options.optimizerConfig ?? {});
  // What a resumed run must share with the run it continues (else its curve would differ).
  const runMeta = {
    format_version: '2',
    seed: String(seed),
    batch_size: String(options.batchSize),
    grad_accumulation_steps: String(accumulate),
    max_seq_length: String(plan.maxSeqLength),
    pack: String(options.pack === true),
    optimizer: optimizerName,
    train_data: dataHash(trainSplit.examples),
  };
  if (store?.save && options.adapter?.fineTuneType !== 'full' && !model.namedModules().some(([, m]) => m instanceof LoRALinear))
    throw new ValueError(op, 'the model has no LoRA layers to save (train unfrozen weights with adapter.fineTuneType "full")', 'LoRA layers', 'none');
  const checkpointingBefore = model.gradientCheckpointing;
  const fusedBefore = model.fusedAttention;
  let pending: { grads: Record<string, Tensor>; batches: number } | null = null;
  let lossSum: Tensor | null = null;
  let disposeSteps = () => {};
  const release = () => {
    for (const g of Object.values(pending?.grads ?? {})) g.dispose();
    pending = null;
    lossSum?.dispose();
    lossSum = null;
  };
  try {
    let resumed: RunState | null = null;
    if (options.resume && store?.load) {
      const file = await store.load();
      if (!file) throw new StateError(op, `resume: no ${STATE_FILE} in ${options.adapterPath ?? 'the store'} (a run saves one at every checkpoint)`);
      resumed = restoreState(file, model, optimizer, runMeta);
    }
    if (resumed?.pending) pending = resumed.pending;
    const start = resumed?.iteration ?? 0;
    if (start > iters) throw new ValueError(op, `resume: the checkpoint is at iteration ${start}, past iters`, `iters ≥ ${start}`, String(iters));
    model.gradientCheckpointing = options.gradCheckpoint ?? checkpointingBefore;
    model.fusedAttention = options.fusedAttention ?? fusedBefore;

    const metrics = (record: Record<string, unknown>) => store?.metrics?.(record);
    const backend = getBackend();
    const valPlan = dataset.valid
      ? new BatchPlan(dataset.valid.examples, { batchSize: options.batchSize, maxSeqLength: plan.maxSeqLength, shuffle: false, pack: options.pack })
      : null;
    const evaluate = async (at: number) => {
      if (!valPlan) return undefined;
      // A captured step holds a training step's buffers: freed first, so evaluation's peak adds
      // nothing to training's (the step is captured again two batches later).
      disposeSteps();
      const started = performance.now();
      const valLoss = await planLoss(model, valPlan, options.valBatches ?? 25);
      const report = { step: at, valLoss, seconds: (performance.now() - started) / 1000 };
      options.onEval?.(report);
      metrics({ event: 'eval', ...report });
      return valLoss;
    };
    let trainedTokens = resumed?.trainedTokens ?? 0;
    const save = async (at: number, checkpoint: boolean) => {
      if (!store?.save) return;
      const state = await runStateFile(model, optimizer, { iteration: at, trainedTokens, pending }, runMeta);
      const path = await store.save(at, checkpoint, { model, state });
      options.onSave?.({ step: at, path });
      metrics({ event: 'save', step: at, path });
    };

    const packedStep = valueAndGrad(model, (batch: Batch) => lossOf(model, batch));
    // Unpacked batches take their ids as tensors, so a captured step can be replayed with the next batch's.
    const tensorStep = valueAndGrad(model, (inputs: Tensor, targets: Tensor) => model.loss(inputs, targets), { capture: options.captureSteps ?? true });
    disposeSteps = () => {
      tensorStep.dispose();
      packedStep.dispose();
    };
    const step = (batch: Batch): [Tensor, Record<string, Tensor>] => {
      if (batch.segments) return packedStep(batch);
      const shape = [batch.rows, batch.length];
      return tensorStep(tensor(batch.inputs, shape, { dtype: 'int32', backend }), tensor(batch.targets, shape, { dtype: 'int32', backend }));
    };
    /** Averages the pending gradients, clips them, and takes one optimizer step. */
    const update = () => {
      const { grads, batches } = pending as { grads: Record<string, Tensor>; batches: number };
      tidy(() => {
        let g = batches > 1 ? Object.fromEntries(Object.entries(grads).map(([k, v]) => [k, mul(v, 1 / batches)])) : grads;
        if (clip !== null) {
          // On the device, no read back: scale = min(1, clip / (‖g‖ + 1e-6)) (PyTorch's rule).
          const squares = Object.values(g).map((v: Tensor) => sum(mul(v, v)));
          const norm = sqrt(squares.reduce((x, y) => add(x, y)));
          const scale = div(clip, maximum(add(norm, 1e-6), clip));
          g = Object.fromEntries(Object.entries(g).map(([k, v]) => [k, mul(v, scale)]));
        }
        optimizer.update(model, g);
      });
      for (const t of Object.values(grads)) t.dispose();
      pending = null;
    };

    let valLoss = start === 0 ? await evaluate(0) : undefined;
    let lossCount = 0;
    let windowTokens = 0;
    let windowStart = performance.now();
    let lastLoss = Number.NaN;
    let stopped: TrainResult['stopped'] = 'done';
    let it = start;
    while (it < iters) {
      // Ctrl-C: stop between optimizer steps, so the checkpoint holds no half-accumulated step.
      if (options.signal?.aborted && pending === null) {
        stopped = 'interrupted';
        break;
      }
      const batch = plan.at(it);
      // Dropout masks are a function of (seed, batch index): a resumed run draws the same ones.
      manualSeed(mix32((seed * 0x9e3779b1 + it) >>> 0));
      // One batch per scope: its activations are freed before the next, only the sums are kept.
      const sums = tidy(() => {
        const [l, g] = step(batch);
        const before = pending?.grads;
        // A captured step's loss and gradients are overwritten by its next replay: what outlives
        // this batch (the loss until it is reported, gradients until the optimizer step) is a sum
        // or a copy.
        const copy = (t: Tensor) => mul(t, 1);
        return {
          loss: lossSum ? add(lossSum, l) : copy(l),
          grads: before
            ? Object.fromEntries(Object.keys(before).map((k) => [k, add(before[k], g[k])]))
            : accumulate > 1
              ? Object.fromEntries(Object.entries(g).map(([k, v]) => [k, copy(v)]))
              : g,
        };
      });
      for (const g of Object.values(pending?.grads ?? {})) g.dispose();
      lossSum?.dispose();
      lossSum = keep(sums.loss);
      for (const g of Object.values(sums.grads)) keep(g);
      pending = { grads: sums.grads, batches: (pending?.batches ?? 0) + 1 };
      it++;
      lossCount++;
      // Let the event loop run between batches (Ctrl-C's handler, timers, I/O): on the CPU backend
      // nothing else in a step would give it a turn.
      await turnOfEventLoop();
      trainedTokens += batch.trainedTokens;
      windowTokens += batch.trainedTokens;
      if (it % accumulate === 0 || it === iters) update();
      if (it % every === 0 || it === iters) {
        const mean = (await (lossSum as Tensor).item()) / lossCount;
        (lossSum as Tensor | null)?.dispose();
        lossSum = null;
        if (!Number.isFinite(mean))
          throw new ValueError(
            op,
            `the loss is ${mean} at iteration ${it}: training diverged`,
            'a finite loss (a lower learning rate usually helps)',
            String(mean),
          );
        const seconds = (performance.now() - windowStart) / 1000;
        const report: TrainReport = {
          step: it,
          loss: mean,
          learningRate: lr(Math.max(0, optimizer.stepCount - 1)),
          iterationsPerSecond: lossCount / seconds,
          tokensPerSecond: windowTokens / seconds,
          trainedTokens,
          peakMemory: backend.memory().peakBytes,
        };
        lastLoss = mean;
        options.onReport?.(report);
        metrics({ event: 'train', ...report });
        lossCount = 0;
        windowTokens = 0;
        windowStart = performance.now();
      }
      if (it % evalEvery === 0 || it === iters) valLoss = (await evaluate(it)) ?? valLoss;
      if (saveEvery > 0 && it % saveEvery === 0 && it < iters) await save(it, true);
    }
    await save(it, saveEvery > 0 && it % saveEvery === 0);
    return { steps: it, loss: lastLoss, valLoss, stopped };
  } finally {
    release();
    disposeSteps();
    optimizer.dispose();
    model.gradientCheckpointing = checkpointingBefore;
    model.fusedAttention = fusedBefore;
  }
}

/** A fingerprint of the training examples (FNV-1a over ids and weights), so a resume on other data is refused. */
function dataHash(examples: readonly { ids: Int32Array; weights: Uint8Array }[]): string {
  let h = 0x811c9dc5;
  const mix = (v: number) => {
    h = Math.imul(h ^ (v & 0xffff), 0x01000193) >>> 0;
    h = Math.imul(h ^ (v >>> 16), 0x01000193) >>> 0;
  };
  for (const e of examples) {
    mix(e.ids.length);
    for (let i = 0; i < e.ids.length; i++) mix(e.ids[i] * 2 + e.weights[i]);
  }
  return `${examples.length}:${h.toString(16)}`;
}
