#!/usr/bin/env node
/**
 * The metal-lora CLI (the repository's `pnpm start`).
 *
 *   metal-lora [train] [flags]
 *   metal-lora fuse --model DIR --adapter-path DIR --save-path DIR
 *   metal-lora generate [--model DIR] [--adapter-path DIR] --prompt TEXT
 *   metal-lora chat [--model DIR] [--adapter-path DIR]
 *
 * The flags are the table in `cli-args.ts` (`metal-lora --help` prints it).
 *
 * Without --model/--data it runs the embedded default: the small base model in assets/base,
 * fine-tuned on the ship's log in assets/data.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readAdapterFiles } from '@metal-lora/adapter-io/node';
import { mlxFineTuneType, parseMlxAdapter, parsePeftAdapter } from '@metal-lora/adapter-io';
import { dequantizeModel, linearToLoRALayers, LoRALinear, mergeWeights, QuantizedEmbedding, QuantizedLinear, quantizeModel } from '@metal-lora/nn';
import '@metal-lora/metal-kernels'; // registers the webgpu backend
import { type AdapterReport, subgroupMatrixPath, WebGPUBackend } from '@metal-lora/metal-kernels';
import { type Backend, bytesPerElement, MetalLoRAError, noGrad, setBackend, tensor, tidy } from '@metal-lora/tensor';
import { applyAdapter, fuseAdapter, loadAdapter, loadFineTune, requantizeFused, saveAdapter } from './adapters';
import { loadModel, saveModel } from './checkpoint';
import { helpText, parseCommandLine, UsageError } from './cli-args';
import { readConfigFile } from './config-file';
import { describeSplit, type SplitName } from './dataset';
import { loadDataset } from './dataset-files';
import type { LoadedModel, LoadOptions } from './model-bytes';
import { evaluateLoss, type LrSchedule, type OptimizerName } from './training';
import { train as runTraining } from './training-files';
import { type GenerateOptions, type GenerateResult, generate, type Prompt } from './generate';
import type { ChatMessage } from './hf-tokenizer';

const assets = join(dirname(fileURLToPath(import.meta.url)), '..', 'assets');

function bar(done: number, total: number): string {
  const width = 24;
  const filled = Math.round((width * done) / total);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/**
 * The library's 'auto' takes WebGPU on a hardware adapter and the CPU otherwise (saying why once
 * when a GPU backend exists but is passed over); the CLI names what it got.
 */
async function chooseBackend(wanted: string): Promise<Backend> {
  const backend = await setBackend(wanted);
  const report = (backend as { context?: { report: AdapterReport } }).context?.report;
  // Where big products run on subgroup matrices, say so (with the f16 toggle on NVIDIA, f16 models do).
  const sgmat =
    backend instanceof WebGPUBackend
      ? (['float32', 'float16'] as const).flatMap((d) => {
          const path = subgroupMatrixPath(backend, d);
          return path === 'portable' ? [] : [`${d} products on ${path}`];
        })
      : [];
  console.log(
    `backend: ${backend.name}${report ? ` (${[`${report.vendor} ${report.description}`, ...(report.software ? ['a software renderer'] : []), ...sgmat].join(', ')})` : ''}`,
  );
  return backend;
}

type Flags = ReturnType<typeof parseCommandLine>['flags'];

/** The embedded default's settings (a tiny character model: a short, fast run with a high learning rate). */
function embeddedPreset(quick: boolean): Flags {
  const iters = quick ? 12 : 200;
  return {
    iters,
    'batch-size': 8,
    'learning-rate': 1e-2,
    'num-layers': 2,
    scale: 2,
    'max-seq-length': 64,
    'steps-per-report': quick ? 4 : 10,
    'steps-per-eval': iters,
    'val-batches': quick ? 1 : 4,
    'save-every': iters,
  };
}

/** The embedded default's schedule: a tenth of the steps warming up to the learning rate, then cosine decay to a tenth of it. */
function embeddedSchedule(learningRate: number, iters: number): LrSchedule {
  const warmup = Math.max(1, Math.floor(iters / 10));
  return { name: 'cosine_decay', arguments: [learningRate, Math.max(1, iters - warmup), learningRate / 10], warmup, warmup_init: 0 };
}

function describeAdapter(applied: ReturnType<typeof applyAdapter>): string {
  return applied.type === 'full' ? `a full fine-tune, ${applied.names.length} weights` : `rank ${applied.adapter.rank}, scale ${applied.adapter.scale}`;
}

const gigabytes = (bytes: number) => `${(bytes / 1e9).toFixed(3)} GB`;

async function train(commandLine: Flags): Promise<void> {
  const file = commandLine.config === undefined ? undefined : readConfigFile(commandLine.config);
  // The command line wins over the config file, as in mlx-lm.
  const given: Flags = { ...file?.flags, ...commandLine };
  const embedded = given.model === undefined && given.data === undefined;
  const preset = embedded ? embeddedPreset(given.quick === true) : undefined;
  const quick: Flags = given.quick ? { iters: 12, 'steps-per-report': 4, 'steps-per-eval': 12, 'val-batches': 1 } : {};
  const flags: Flags = { ...quick, ...preset, ...given };
  if (flags['fine-tune-type'] === 'dora') throw new UsageError('DoRA is not implemented yet', '--fine-tune-type lora', 'dora');
  const full = flags['fine-tune-type'] === 'full';
  if (full && flags.format === 'peft') throw new UsageError('a full fine-tune is saved in MLX format only', '--format mlx', 'peft');
  if (flags['fused-attention'] === true && flags['composed-attention'] === true)
    throw new UsageError('--fused-attention and --composed-attention ask for both kinds of attention', 'at most one', 'both');
  const doTrain = flags.train === true || flags.resume === true || flags.test !== true;
  const doTest = flags.test === true;
  const modelDir = flags.model ?? join(assets, 'base');
  const dataPath = flags.data ?? join(assets, 'data');
  const adapterPath = flags['adapter-path'] ?? 'adapters';
  const format = (flags.format ?? 'mlx') as 'mlx' | 'peft';
  const rank = flags.rank ?? 8;
  const scale = flags.scale ?? 20;
  const dropout = flags.dropout ?? 0;
  const seed = flags.seed ?? 0;
  const batchSize = flags['batch-size'] ?? 4;
  const keys = flags.keys?.split(',').map((k) => k.trim());
  await chooseBackend(flags.backend ?? 'auto');
  const { model, config, tokenizer } = loadModel(modelDir, { dtype: flags.dtype as LoadOptions['dtype'] });
  const layers = config.num_hidden_layers;
  const wantedLayers = flags['num-layers'];
  if (wantedLayers !== undefined && wantedLayers > layers)
    throw new UsageError(`--num-layers asks for ${wantedLayers} blocks of a model with ${layers}`, `at most ${layers} (or -1 for all)`, String(wantedLayers));
  if (wantedLayers === 0) throw new UsageError('--num-layers 0 trains nothing', 'N ≥ 1, or -1 for all blocks', '0');
  const numLayers = wantedLayers === undefined ? Math.min(16, layers) : wantedLayers < 0 ? layers : wantedLayers;
  // mlx-lm's 2048 by default, or the model's positions where it has fewer.
  const maxPositions = (config as { max_position_embeddings?: number }).max_position_embeddings;
  const maxSeqLength = flags['max-seq-length'] ?? Math.min(2048, maxPositions ?? 2048);
  if (maxPositions !== undefined && maxSeqLength > maxPositions)
    throw new UsageError("--max-seq-length is longer than the model's positions", `at most max_position_embeddings = ${maxPositions}`, String(maxSeqLength));
  const splits: SplitName[] = [...(doTrain ? (['train', 'valid'] as const) : []), ...(doTest ? (['test'] as const) : [])];
  const data = loadDataset(dataPath, tokenizer, {
    maskPrompt: flags['mask-prompt'] === true,
    maxSeqLength,
    splits,
    features: { text: flags['text-feature'], prompt: flags['prompt-feature'], completion: flags['completion-feature'], chat: flags['chat-feature'] },
  });
  console.log(`model: ${modelDir} (${layers} layers, hidden ${config.hidden_size}, vocab ${config.vocab_size})`);
  for (const split of [data.train, data.valid, data.test]) if (split) console.log(`data: ${describeSplit(split)}`);

  const kvWidth = (config.num_key_value_heads ?? config.num_attention_heads) * (config.head_dim ?? config.hidden_size / config.num_attention_heads);
  const narrowest = Math.min(config.hidden_size, config.intermediate_size, kvWidth);
  if (rank > narrowest)
    throw new UsageError(
      "--rank exceeds the model's layer sizes (a LoRA update's rank is at most its layer's smaller side)",
      `at most ${narrowest}`,
      String(rank),
    );
  const resumeFile = flags['resume-adapter-file'];
  if (!doTrain) {
    // --test alone: the adapter in --adapter-path (or --resume-adapter-file) on the base model, as saved.
    console.log(`adapter: ${resumeFile ?? adapterPath} (${describeAdapter(applyAdapter(model, resumeFile ?? adapterPath))})`);
  } else if (full) {
    // mlx-lm's full fine-tune: every weight of the last num-layers blocks trains.
    model.freeze();
    for (let i = layers - numLayers; i < layers; i++) model.unfreeze([`model.layers.${i}`]);
    if (resumeFile !== undefined) {
      loadFineTune(model, resumeFile);
      console.log(`resumed from ${resumeFile}`);
    }
    const trainable = model.trainableParameters().reduce((n, [, p]) => n + p.size, 0);
    const total = model.namedParameters().reduce((n, [, p]) => n + p.size, 0);
    console.log(`full fine-tune of the last ${numLayers} blocks: ${trainable} trainable of ${total} parameters (${((100 * trainable) / total).toFixed(3)}%)`);
  } else {
    const converted = linearToLoRALayers(model, { numLayers, keys, rank, scale, dropout, seed: seed + 1 });
    if (resumeFile !== undefined) {
      loadAdapter(model, resumeFile);
      console.log(`resumed from ${resumeFile}`);
    }
    const trainable = model.trainableParameters().reduce((n, [, p]) => n + p.size, 0);
    const total = model.namedParameters().reduce((n, [, p]) => n + p.size, 0);
    console.log(
      `LoRA rank ${rank}, scale ${scale} on ${converted.length} layers (last ${numLayers} blocks): ${trainable} trainable of ${total} parameters (${((100 * trainable) / total).toFixed(3)}%)`,
    );
  }

  if (doTrain) {
    const prompt = embedded ? (data.valid?.examples[0] ? tokenizer.decode(data.valid.examples[0].ids.subarray(0, 8)) : '') : '';
    const sample = async () => (await generate(model, tokenizer, prompt, { maxTokens: flags.quick ? 16 : 48 })).text;
    if (embedded) console.log(`sample before: "${prompt}" → "${await sample()}"`);
    const iters = flags.iters ?? 1000;
    const controller = new AbortController();
    const onSignal = () => {
      if (controller.signal.aborted) process.exit(130);
      console.log('\ninterrupted: saving a checkpoint after this step (Ctrl-C again quits without saving)');
      controller.abort();
    };
    process.on('SIGINT', onSignal);
    let valBefore: number | undefined;
    let valAfter: number | undefined;
    const started = performance.now();
    let result: Awaited<ReturnType<typeof runTraining>>;
    try {
      result = await runTraining(model, data, {
        iters,
        batchSize,
        maxSeqLength,
        learningRate: flags['learning-rate'] ?? 1e-5,
        lrSchedule: file?.lrSchedule ?? (embedded ? embeddedSchedule(flags['learning-rate'] ?? 1e-2, iters) : undefined),
        optimizer: (flags.optimizer ?? 'adam') as OptimizerName,
        optimizerConfig: file?.optimizerConfig?.[flags.optimizer ?? 'adam'],
        gradAccumulationSteps: flags['grad-accumulation-steps'],
        maxGradNorm: flags['max-grad-norm'],
        stepsPerReport: flags['steps-per-report'],
        stepsPerEval: flags['steps-per-eval'],
        valBatches: flags['val-batches'],
        saveEvery: flags['save-every'],
        seed,
        pack: flags.pack === true,
        gradCheckpoint: flags['grad-checkpoint'] === true,
        fusedAttention: flags['fused-attention'] === true ? true : flags['composed-attention'] === true ? false : undefined,
        // The embedded default saves only after its checks below.
        adapterPath: embedded ? undefined : adapterPath,
        adapter: { format, numLayers, keys: keys ?? null, fineTuneType: full ? 'full' : 'lora' },
        resume: flags.resume === true,
        metricsFile: flags['metrics-file'],
        signal: controller.signal,
        onReport: (r) =>
          console.log(
            `${bar(r.step, iters)} Iter ${r.step}: Train loss ${r.loss.toFixed(3)}, Learning Rate ${r.learningRate.toExponential(3)}, It/sec ${r.iterationsPerSecond.toFixed(3)}, Tokens/sec ${r.tokensPerSecond.toFixed(0)}, Trained Tokens ${r.trainedTokens}, Peak mem ${gigabytes(r.peakMemory)}`,
          ),
        onEval: (r) => {
          if (r.step === 0) valBefore = r.valLoss;
          valAfter = r.valLoss;
          console.log(`Iter ${r.step}: Val loss ${r.valLoss.toFixed(3)}, Val took ${r.seconds.toFixed(3)}s`);
        },
        onSave: (r) => console.log(`Iter ${r.step}: Saved adapter weights and training state to ${r.path}/`),
      });
    } finally {
      process.off('SIGINT', onSignal);
    }
    const seconds = (performance.now() - started) / 1000;
    console.log(
      `${result.stopped === 'interrupted' ? `interrupted at step ${result.steps}` : `trained ${result.steps} steps`} in ${seconds.toFixed(1)} s${
        valBefore !== undefined && valAfter !== undefined ? `; validation loss ${valBefore.toFixed(3)} → ${valAfter.toFixed(3)}` : ''
      }`,
    );
    if (result.stopped === 'interrupted') {
      console.log(embedded ? 'nothing saved (the embedded default saves only a finished run)' : `checkpoint: ${adapterPath}/ (continue with --resume)`);
      process.exitCode = 130;
      return;
    }
    if (embedded)
      await checkAndSaveEmbedded(model, modelDir, prompt, sample, {
        valBefore,
        valAfter,
        continued: resumeFile !== undefined || flags.resume === true,
        adapterPath,
        format,
        numLayers,
        keys,
        dtype: flags.dtype as LoadOptions['dtype'],
      });
  }
  if (doTest && data.test) {
    const loss = await evaluateLoss(model, data.test, { batchSize, maxSeqLength, batches: flags['test-batches'] ?? 500, pack: flags.pack === true });
    console.log(`Test loss ${loss.toFixed(3)}, Test ppl ${Math.exp(loss).toFixed(3)}.`);
  }
}

/**
 * The embedded default's demonstration: the sample after training, and the adapter saved to a
 * temporary folder beside --adapter-path, reloaded into a fresh model and merged there before it
 * is written to --adapter-path (nothing is written over an existing adapter until these pass).
 */
async function checkAndSaveEmbedded(
  model: LoadedModel['model'],
  modelDir: string,
  prompt: string,
  sample: () => Promise<string>,
  o: {
    valBefore?: number;
    valAfter?: number;
    continued: boolean;
    adapterPath: string;
    format: 'mlx' | 'peft';
    numLayers: number;
    keys?: string[];
    dtype?: LoadOptions['dtype'];
  },
): Promise<void> {
  model.eval();
  console.log(`sample after:  "${prompt}" → "${await sample()}"`);
  // A fresh run must have learnt something; one that continues a saved adapter may start converged.
  if (!o.continued && (o.valBefore === undefined || o.valAfter === undefined || !(o.valAfter < o.valBefore)))
    throw new MetalLoRAError('train', `the embedded default's validation loss did not fall (${o.valBefore} → ${o.valAfter}); nothing was saved`);
  const ids = probeIds(model);
  const probe = tensor(ids, [1, ids.length], { dtype: 'int32' });
  const logits = async (m: typeof model) => {
    const out = tidy(() => noGrad(() => m.forward(probe)));
    const values = Float32Array.from(await out.data());
    out.dispose();
    return values;
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((mx, v, i) => Math.max(mx, Math.abs(v - b[i])), 0);
  const reference = await logits(model);
  const saveOptions = { format: o.format, numLayers: o.numLayers, keys: o.keys ?? null };
  mkdirSync(dirname(resolve(o.adapterPath)), { recursive: true });
  const scratch = mkdtempSync(join(dirname(resolve(o.adapterPath)), `.${basename(resolve(o.adapterPath))}.check-`));
  try {
    await saveAdapter(model, scratch, saveOptions);
    const fresh = loadModel(modelDir, { dtype: o.dtype }).model;
    fresh.eval();
    loadAdapter(fresh, scratch);
    const reloadDiff = maxDiff(await logits(fresh), reference);
    mergeWeights(fresh);
    const mergedDiff = maxDiff(await logits(fresh), reference);
    const reloadOk = reloadDiff <= 1e-4;
    // Merged into f16 weights, each weight is rounded to half precision (about 1e-3 relative).
    const mergeOk = mergedDiff <= (o.dtype === 'float16' ? 3e-2 : 2e-3);
    console.log(
      `reloaded adapter: max |Δlogit| ${reloadDiff.toExponential(2)} ${reloadOk ? 'ok' : 'MISMATCH'}; merged weights: max |Δlogit| ${mergedDiff.toExponential(2)} ${mergeOk ? 'ok' : 'MISMATCH'}`,
    );
    if (!reloadOk || !mergeOk)
      throw new MetalLoRAError('train', `the saved adapter does not reproduce the trained model (see above); nothing was written to ${o.adapterPath}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  await saveAdapter(model, o.adapterPath, saveOptions);
  console.log(`saved ${o.format === 'mlx' ? 'MLX' : 'PEFT'} adapter to ${o.adapterPath}/`);
}

/** Token ids that exercise every position of a small model (a fixed, varied sequence within the vocabulary). */
function probeIds(model: LoadedModel['model']): Int32Array {
  const vocab = model.config.vocab_size;
  return Int32Array.from({ length: 32 }, (_, i) => (i * 7 + 3) % vocab);
}

async function fuse(flags: Flags): Promise<void> {
  const { model: modelDir, 'adapter-path': adapterPath, 'save-path': savePath } = flags;
  if (!modelDir || !adapterPath || !savePath) {
    const missing = [modelDir ? '' : '--model', adapterPath ? '' : '--adapter-path', savePath ? '' : '--save-path'].filter(Boolean);
    throw new UsageError('fuse needs --model DIR --adapter-path DIR --save-path DIR', 'all three', `no ${missing.join(', ')}`);
  }
  await chooseBackend(flags.backend ?? 'auto');
  const { model, config, tokenizer, generation } = loadModel(modelDir);
  const { format, files } = readAdapterFiles(adapterPath);
  const fullFineTune = format === 'mlx' && mlxFineTuneType(files.config) === 'full';
  const merged = fullFineTune ? loadFineTune(model, adapterPath) : fuseAdapter(model, format === 'peft' ? parsePeftAdapter(files) : parseMlxAdapter(files));
  if (model.namedModules().some(([, m]) => m instanceof LoRALinear)) throw new MetalLoRAError('fuse', 'the model still has LoRA layers after fusing');
  // A quantized base: its fused layers are float now; pack them again unless --dequantize.
  if (flags.dequantize) dequantizeModel(model);
  else {
    const layers = await requantizeFused(model);
    const lost = layers.filter((l) => l.kept < 0.5);
    if (lost.length)
      console.warn(
        `warning: re-quantizing kept less than half of the adapter's change in ${lost.length} of ${layers.length} fused layers (worst: ${lost[0].path}, ${(100 * lost[0].kept).toFixed(1)}% kept, error ${lost[0].error.toFixed(2)}× the change); the fused model mostly drops the adapter. Use --dequantize to keep it (float weights).`,
      );
    else if (layers.length)
      console.log(`re-quantized ${layers.length} fused layers; at least ${(100 * layers[0].kept).toFixed(1)}% of the adapter's change kept in each`);
  }
  await saveModel(savePath, model, config, tokenizer, { generation });
  const what = fullFineTune ? `the ${merged.length} weights of a full fine-tune` : `${merged.length} layers of a ${format.toUpperCase()} adapter`;
  console.log(`fused ${what} into ${savePath}/ (config.json, model.safetensors, tokenizer.json)`);
}

/** `metal-lora convert`: a model folder written again, quantized (`-q`, mlx_lm.convert's packing) or dequantized. */
async function convert(flags: Flags): Promise<void> {
  const { model: modelDir, 'save-path': savePath } = flags;
  if (!modelDir || !savePath) throw new UsageError('convert needs --model DIR --save-path DIR', 'both', `no ${modelDir ? '--save-path' : '--model'}`);
  if (flags.quantize === flags.dequantize)
    throw new UsageError('convert needs one of -q (quantize) or --dequantize', '-q or --dequantize', flags.quantize ? 'both' : 'neither');
  await chooseBackend(flags.backend ?? 'auto');
  const { model, config, tokenizer, generation } = loadModel(modelDir);
  const quantized = model.namedModules().some(([, m]) => m instanceof QuantizedLinear || m instanceof QuantizedEmbedding);
  const bytes = () => model.namedParameters().reduce((n, [, p]) => n + bytesPerElement(p.dtype) * p.size, 0);
  const before = bytes();
  if (flags.dequantize) {
    if (!quantized) throw new UsageError('--dequantize needs a quantized model', 'a folder whose config.json has "quantization"', modelDir);
    const count = dequantizeModel(model);
    console.log(`dequantized ${count} layers: ${(before / 1e6).toFixed(1)} → ${(bytes() / 1e6).toFixed(1)} MB of weights`);
  } else {
    if (quantized) throw new UsageError('the model is quantized already', 'a float model (or --dequantize first)', modelDir);
    const spec = { bits: flags['q-bits'] ?? 4, groupSize: flags['q-group-size'] ?? 64 };
    const layers = await quantizeModel(model, spec);
    console.log(
      `quantized ${layers.length} layers to ${spec.bits} bits (groups of ${spec.groupSize}): ${(before / 1e6).toFixed(1)} → ${(bytes() / 1e6).toFixed(1)} MB of weights`,
    );
  }
  await saveModel(savePath, model, config, tokenizer, { generation });
  console.log(`saved to ${savePath}/ (config.json, model.safetensors, tokenizer.json)`);
}

/** Loads --model (the embedded default without it) with --adapter-path applied, for generate and chat. */
async function modelForGeneration(flags: Flags) {
  await chooseBackend(flags.backend ?? 'auto');
  const loaded = loadModel(flags.model ?? join(assets, 'base'), { dtype: flags.dtype as LoadOptions['dtype'] });
  const adapterPath = flags['adapter-path'];
  if (adapterPath !== undefined) console.log(`adapter: ${adapterPath} (${describeAdapter(applyAdapter(loaded.model, adapterPath))})`);
  loaded.model.eval();
  const options: GenerateOptions = {
    maxTokens: flags['max-tokens'] ?? 256,
    temperature: flags.temp ?? 0,
    topP: flags['top-p'],
    topK: flags['top-k'],
    minP: flags['min-p'],
    repetitionPenalty: flags['repetition-penalty'],
    seed: flags.seed,
    stop: flags.stop,
    eosTokenIds: loaded.generation.eosTokenIds,
    onText: (piece) => process.stdout.write(piece),
  };
  return { ...loaded, options };
}

function stats(r: GenerateResult): string {
  return `prompt: ${r.promptTokens} tokens, first token after ${(r.timeToFirstToken * 1000).toFixed(0)} ms; generation: ${r.tokens.length} tokens, ${r.tokensPerSecond.toFixed(1)} tokens/s; ended by ${r.finishReason}`;
}

/** `metal-lora generate`: one reply to --prompt, streamed, as `mlx_lm.generate` prints it. */
async function generateCommand(flags: Flags): Promise<void> {
  if (flags.prompt === undefined) throw new UsageError('generate needs --prompt TEXT', "--prompt 'Once upon a time' (or - for stdin)", 'no --prompt');
  const text = flags.prompt === '-' ? readFileSync(0, 'utf8') : flags.prompt;
  const { model, tokenizer, options } = await modelForGeneration(flags);
  const templated = 'hasChatTemplate' in tokenizer && tokenizer.hasChatTemplate && !flags['ignore-chat-template'];
  if (flags['system-prompt'] !== undefined && !templated)
    throw new UsageError('--system-prompt needs a model with a chat template', 'a chat template (and no --ignore-chat-template)', 'none');
  const system: ChatMessage[] = flags['system-prompt'] === undefined ? [] : [{ role: 'system', content: flags['system-prompt'] }];
  const prompt: Prompt = templated ? [...system, { role: 'user', content: text }] : text;
  console.log('==========');
  const result = await generate(model, tokenizer, prompt, options);
  process.stdout.write('\n==========\n');
  console.log(stats(result));
}

/** `metal-lora chat`: a conversation on stdin through the model's chat template (q quits, r resets), as `mlx_lm.chat`. */
async function chatCommand(flags: Flags): Promise<void> {
  const { model, tokenizer, options } = await modelForGeneration(flags);
  if (!('hasChatTemplate' in tokenizer) || !tokenizer.hasChatTemplate)
    throw new UsageError('chat needs a model with a chat template', 'chat_template.jinja or a chat_template in tokenizer_config.json', 'none');
  const start: ChatMessage[] = flags['system-prompt'] === undefined ? [] : [{ role: 'system', content: flags['system-prompt'] }];
  let messages = [...start];
  console.log("[chat] type a message; 'q' quits, 'r' starts over");
  const lines = createInterface({ input: process.stdin, terminal: false });
  process.stdout.write('>> ');
  for await (const line of lines) {
    const text = line.trim();
    if (text === 'q') break;
    if (text === 'r') messages = [...start];
    else if (text !== '') {
      messages.push({ role: 'user', content: text });
      const reply = await generate(model, tokenizer, messages, options);
      messages.push({ role: 'assistant', content: reply.text });
      process.stdout.write('\n');
    }
    process.stdout.write('>> ');
  }
  lines.close();
  process.stdout.write('\n');
}

async function main(): Promise<void> {
  const { command, flags } = parseCommandLine(process.argv.slice(2));
  if (flags.help) {
    console.log(helpText());
    return;
  }
  if (!existsSync(join(assets, 'base', 'config.json')) && flags.model === undefined)
    throw new UsageError(`the embedded model is missing at ${join(assets, 'base')}`, '--model DIR', 'no --model');
  if (command === 'fuse') await fuse(flags);
  else if (command === 'convert') await convert(flags);
  else if (command === 'generate') await generateCommand(flags);
  else if (command === 'chat') await chatCommand(flags);
  else await train(flags);
}

try {
  await main();
} catch (error) {
  // One line: a library error already names its op (`loadModel: ...`, `metal-lora: ...`).
  const message = error instanceof MetalLoRAError ? error.message : `${(error as Error).message ?? error}`;
  console.error(message.startsWith('metal-lora: ') ? message : `metal-lora: ${message}`);
  process.exitCode = 1;
}
