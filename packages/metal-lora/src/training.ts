/**
 * `train(model, dataset, options)`: the fine-tuning loop of the CLI as a library call, with
 * mlx-lm's meanings (iterations, batch size, gradient accumulation, learning-rate schedules with
 * warm-up, reports, validation, checkpoints) and, beyond mlx-lm, gradient clipping, packing, and
 * checkpoints that hold the optimizer state so that `resume` continues the same run exactly.
 *
 * Files in `adapterPath` (as mlx-lm writes them): `adapters.safetensors` + `adapter_config.json`
 * (or PEFT's pair), `0000100_adapters.safetensors` every `saveEvery` steps, and
 * `training_state.safetensors` (the trainable weights, the optimizer's moments and the step, in one
 * atomically written file).
 */
import { appendFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { toFloat32, type WriteEntry } from '@metal-lora/adapter-io';
import { loadSafetensors, saveSafetensors } from '@metal-lora/adapter-io/node';
import { Adam, AdamW, type LlamaForCausalLM, type Optimizer, SGD, valueAndGrad } from '@metal-lora/nn';
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
import { saveAdapter, saveFineTune } from './adapters';
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
  /** Examples laid end to end with per-document attention instead of padded (default false). */
  pack?: boolean;
  /** Where adapters and checkpoints are written; without it nothing is written. */
  adapterPath?: string;
  /** How the adapter is saved (default MLX) and what its config records. */
  adapter?: { format?: 'mlx' | 'peft'; numLayers?: number; keys?: string[] | null; fineTuneType?: 'lora' | 'full' };
  /** Continue the run whose `training_state.safetensors` is in `adapterPath`. */
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

const STATE_FILE = 'training_state.safetensors';

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
  const n = options.batches === undefined || options.batches < 0 ? plan.count : Math.min(options.batches, plan.count);
  const wasTraining = model.training;
  model.eval();
  let total = 0;
  let tokens = 0;
  try {
    for (let i = 0; i < n; i++) {
      const batch = plan.at(i);
      const loss = noGrad(() => tidy(() => lossOf(model, batch)));
      total += (await loss.item()) * batch.trainedTokens;
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

/** The trainable weights and the optimizer's state as one safetensors file, with the run's step and settings. */
async function saveState(dir: string, model: LlamaForCausalLM, optimizer: Optimizer, step: number, meta: Record<string, string>): Promise<void> {
  const entries: Record<string, WriteEntry> = Object.create(null);
  for (const [name, p] of model.trainableParameters())
    entries[`model.${name}`] = { dtype: 'F32', shape: [...p.shape], data: Float32Array.from(await p.data()) };
  const state = optimizer.stateDict(model);
  for (const [name, t] of Object.entries(state.tensors))
    entries[`optimizer.${name}`] = { dtype: 'F32', shape: [...t.shape], data: Float32Array.from(await t.data()) };
  saveSafetensors(join(dir, STATE_FILE), entries, { ...meta, step: String(step) });
}

/** Restores `saveState`'s file; returns its step and trained tokens. Everything is checked before the model changes. */
function loadState(dir: string, model: LlamaForCausalLM, optimizer: Optimizer, meta: Record<string, string>): { step: number; trainedTokens: number } {
  const op = 'train';
  const path = join(dir, STATE_FILE);
  if (!existsSync(path)) throw new StateError(op, `resume: no ${STATE_FILE} in ${dir} (a run saves one at every checkpoint)`);
  const file = loadSafetensors(path);
  for (const [key, value] of Object.entries(meta)) {
    if (file.metadata[key] !== value) throw new ValueError(op, `resume: the checkpoint was made with another ${key}`, value, file.metadata[key] ?? 'none');
  }
  const step = Number(file.metadata.step);
  if (!Number.isSafeInteger(step) || step < 0) throw new ValueError(op, `resume: ${STATE_FILE} has no valid step`, 'an integer', String(file.metadata.step));
  const params = new Map(model.trainableParameters());
  const weights: [Tensor, Float32Array][] = [];
  const moments: Record<string, Tensor> = Object.create(null);
  for (const [name, entry] of Object.entries(file.tensors)) {
    if (name.startsWith('model.')) {
      const p = params.get(name.slice(6));
      if (!p)
        throw new ValueError(
          op,
          `resume: '${name.slice(6)}' is not a trainable parameter of this model`,
          'the same LoRA layers as the checkpoint',
          name.slice(6),
        );
      if (p.shape.join() !== entry.shape.join()) throw new ValueError(op, `resume: '${name.slice(6)}' has another shape`, `[${p.shape}]`, `[${entry.shape}]`);
      weights.push([p, toFloat32(entry)]);
    } else if (name.startsWith('optimizer.')) moments[name.slice(10)] = tensor(toFloat32(entry), entry.shape, { backend: getBackend() });
  }
  if (weights.length !== params.size)
    throw new ValueError(op, 'resume: the checkpoint does not hold every trainable parameter', String(params.size), String(weights.length));
  try {
    optimizer.loadStateDict(model, { step, tensors: moments });
  } finally {
    for (const t of Object.values(moments)) t.dispose();
  }
  noGrad(() => {
    for (const [p, values] of weights) {
      const t = tensor(values, [...p.shape], { backend: p.backend });
      p.assign(p.dtype === 'float32' ? t : t.cast(p.dtype));
      t.dispose();
    }
  });
  return { step, trainedTokens: Number(file.metadata.trained_tokens ?? 0) || 0 };
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) throw new ValueError('train', `${name} must be an integer ≥ ${min}`, `an integer ≥ ${min}`, String(v));
}

/**
 * Fine-tunes `model`'s trainable parameters (LoRA layers from `linearToLoRALayers`, or whatever is
 * left trainable) on `dataset.train`, evaluating on `dataset.valid`. See {@link TrainingOptions}.
 *
 * @example
 * const { model, tokenizer } = loadModel('models/SmolLM2-135M-Instruct');
 * linearToLoRALayers(model, { numLayers: 8, rank: 8, scale: 20 });
 * const data = loadDataset('data/', tokenizer, { maskPrompt: true });
 * await train(model, data, { iters: 600, batchSize: 4, learningRate: 1e-4, adapterPath: 'adapters' });
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
  if (options.resume && !options.adapterPath) throw new ValueError(op, 'resume needs adapterPath (where the checkpoint is)', 'adapterPath', 'none');
  const plan = new BatchPlan(trainSplit.examples, { batchSize: options.batchSize, maxSeqLength: options.maxSeqLength, seed, pack: options.pack });
  const optimizer = makeOptimizer(model, optimizerName, lr, options.optimizerConfig ?? {});
  // What a resumed run must share with the run it continues (else its curve would differ).
  const runMeta = {
    format_version: '1',
    seed: String(seed),
    batch_size: String(options.batchSize),
    grad_accumulation_steps: String(accumulate),
    pack: String(options.pack === true),
    optimizer: optimizerName,
  };
  const resumed = options.resume ? loadState(options.adapterPath as string, model, optimizer, runMeta) : { step: 0, trainedTokens: 0 };
  const startStep = resumed.step;
  if (startStep > iters) throw new ValueError(op, `resume: the checkpoint is at step ${startStep}, past iters`, `iters ≥ ${startStep}`, String(iters));

  const metrics = (record: Record<string, unknown>) => {
    if (options.metricsFile) appendFileSync(options.metricsFile, `${JSON.stringify(record)}\n`);
  };
  const backend = getBackend();
  const peak = () => backend.memory().peakBytes;
  const evaluate = async (step: number) => {
    if (!dataset.valid) return undefined;
    const started = performance.now();
    const valLoss = await evaluateLoss(model, dataset.valid, {
      batchSize: options.batchSize,
      maxSeqLength: plan.maxSeqLength,
      batches: options.valBatches ?? 25,
      pack: options.pack,
    });
    const report = { step, valLoss, seconds: (performance.now() - started) / 1000 };
    options.onEval?.(report);
    metrics({ event: 'eval', ...report });
    return valLoss;
  };
  const save = async (step: number, checkpoint: boolean) => {
    const dir = options.adapterPath;
    if (!dir) return;
    const format = options.adapter?.format ?? 'mlx';
    if (options.adapter?.fineTuneType === 'full') {
      await saveFineTune(model, dir, { numLayers: options.adapter.numLayers ?? -1, checkpoint: checkpoint ? step : undefined });
    } else
      await saveAdapter(model, dir, {
        format,
        numLayers: options.adapter?.numLayers,
        keys: options.adapter?.keys ?? null,
        checkpoint: checkpoint ? step : undefined,
      });
    await saveState(dir, model, optimizer, step, { ...runMeta, trained_tokens: String(trainedTokens) });
    options.onSave?.({ step, path: dir });
    metrics({ event: 'save', step, path: dir });
  };

  const step = valueAndGrad(model, (batch: Batch) => lossOf(model, batch));
  const checkpointingBefore = model.gradientCheckpointing;
  model.gradientCheckpointing = options.gradCheckpoint ?? checkpointingBefore;
  let valLoss = startStep === 0 ? await evaluate(0) : undefined;
  let lossSum: Tensor | null = null;
  let lossSteps = 0;
  let trainedTokens = resumed.trainedTokens;
  let windowTokens = 0;
  let windowStart = performance.now();
  let lastLoss = Number.NaN;
  let stopped: TrainResult['stopped'] = 'done';
  let s = startStep;
  try {
    while (s < iters) {
      if (options.signal?.aborted) {
        stopped = 'interrupted';
        break;
      }
      const learningRate = lr(s);
      const stepLoss = tidy(() => {
        let grads: Record<string, Tensor> | null = null;
        let loss: Tensor | null = null;
        for (let micro = 0; micro < accumulate; micro++) {
          const index = s * accumulate + micro;
          const batch = plan.at(index);
          // Dropout masks are a function of (seed, batch index): a resumed run draws the same ones.
          manualSeed(mix32((seed * 0x9e3779b1 + index) >>> 0));
          const [l, g] = step(batch);
          trainedTokens += batch.trainedTokens;
          windowTokens += batch.trainedTokens;
          loss = loss ? add(loss, l) : l;
          const sofar: Record<string, Tensor> | null = grads;
          grads = sofar ? Object.fromEntries(Object.keys(sofar).map((k) => [k, add(sofar[k], g[k])])) : g;
        }
        let g = grads as unknown as Record<string, Tensor>;
        if (accumulate > 1) g = Object.fromEntries(Object.entries(g).map(([k, v]) => [k, mul(v, 1 / accumulate)]));
        if (clip !== null) {
          // On the device, no read back: scale = min(1, clip / (‖g‖ + 1e-6)) (PyTorch's rule).
          const squares = Object.values(g).map((v: Tensor) => sum(mul(v, v)));
          const norm = sqrt(squares.reduce((a, b) => add(a, b)));
          const scale = div(clip, maximum(add(norm, 1e-6), clip));
          g = Object.fromEntries(Object.entries(g).map(([k, v]) => [k, mul(v, scale)]));
        }
        optimizer.update(model, g);
        return (loss as Tensor).mul(1 / accumulate);
      });
      s++;
      const previous: Tensor | null = lossSum;
      lossSum = keep(previous ? noGrad(() => add(previous, stepLoss)) : stepLoss);
      if (previous) {
        previous.dispose();
        stepLoss.dispose();
      }
      lossSteps++;
      if (s % every === 0 || s === iters) {
        const mean = (await lossSum.item()) / lossSteps;
        lossSum.dispose();
        lossSum = null;
        if (!Number.isFinite(mean))
          throw new ValueError(op, `the loss is ${mean} at step ${s}: training diverged`, 'a finite loss (a lower learning rate usually helps)', String(mean));
        const seconds = (performance.now() - windowStart) / 1000;
        const report: TrainReport = {
          step: s,
          loss: mean,
          learningRate,
          iterationsPerSecond: lossSteps / seconds,
          tokensPerSecond: windowTokens / seconds,
          trainedTokens,
          peakMemory: peak(),
        };
        lastLoss = mean;
        options.onReport?.(report);
        metrics({ event: 'train', ...report });
        lossSteps = 0;
        windowTokens = 0;
        windowStart = performance.now();
      }
      if (s % evalEvery === 0 || s === iters) valLoss = (await evaluate(s)) ?? valLoss;
      if (saveEvery > 0 && s % saveEvery === 0 && s < iters) await save(s, true);
    }
  } finally {
    lossSum?.dispose();
    model.gradientCheckpointing = checkpointingBefore;
  }
  await save(s, saveEvery > 0 && s % saveEvery === 0);
  optimizer.dispose();
  return { steps: s, loss: lastLoss, valLoss, stopped };
}
