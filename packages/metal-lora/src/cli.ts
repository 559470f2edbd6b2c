#!/usr/bin/env node
/**
 * The metal-lora CLI (the repository's `pnpm start`).
 *
 *   metal-lora [train] [--model DIR] [--data DIR|FILE.jsonl] [--rank 8] [--scale 2] [--dropout 0]
 *              [--num-layers N] [--keys a,b] [--iters N] [--batch 8] [--seq 64] [--lr 1e-2]
 *              [--adapter-path adapters] [--format mlx|peft] [--resume-adapter-file FILE]
 *              [--backend auto|webgpu|cpu] [--quick]
 *   metal-lora fuse --model DIR --adapter-path DIR --save-path DIR
 *
 * Without --model/--data it runs the embedded default: the small base model in assets/base,
 * fine-tuned on the ship's log in assets/data.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readAdapterFiles } from '@metal-lora/adapter-io/node';
import { parseMlxAdapter, parsePeftAdapter } from '@metal-lora/adapter-io';
import { linearToLoRALayers, LoRALinear } from '@metal-lora/nn';
import type { AdapterReport } from '@metal-lora/metal-kernels';
import { type Backend, MetalLoRAError, noGrad, setBackend, tensor, tidy } from '@metal-lora/tensor';
import { loadAdapter, mergeWeights, saveAdapter } from './adapters';
import { loadModel, saveModel } from './checkpoint';
import { readDataset } from './data';
import { generate } from './generate';
import { evaluate, trainLoop } from './trainer';
import './index';

const assets = join(dirname(fileURLToPath(import.meta.url)), '..', 'assets');

class UsageError extends Error {}

function parseArgs(argv: string[]): { command: string; flags: Map<string, string> } {
  const flags = new Map<string, string>();
  let command = 'train';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) {
      if (i === 0 && (a === 'train' || a === 'fuse')) command = a;
      else throw new UsageError(`unexpected argument '${a}'; expected flags such as --iters 100 (see --help)`);
      continue;
    }
    const name = a.slice(2);
    if (name === 'quick' || name === 'help') flags.set(name, 'true');
    else {
      const value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw new UsageError(`--${name} needs a value`);
      flags.set(name, value);
      i++;
    }
  }
  return { command, flags };
}

function numberFlag(flags: Map<string, string>, name: string, fallback: number, integer = false): number {
  const raw = flags.get(name);
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || (integer && (!Number.isInteger(v) || v <= 0))) throw new UsageError(`--${name} must be ${integer ? 'a positive integer' : 'a number'}; got '${raw}'`);
  return v;
}

function bar(done: number, total: number): string {
  const width = 24;
  const filled = Math.round((width * done) / total);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
}

/**
 * 'auto' takes WebGPU on a hardware adapter; a software one (lavapipe, SwiftShader) is slower than
 * the CPU backend at these sizes, so 'auto' then stays on the CPU and says why.
 */
async function chooseBackend(wanted: string): Promise<Backend> {
  if (wanted !== 'auto' && wanted !== 'webgpu' && wanted !== 'cpu') throw new UsageError(`--backend must be auto, webgpu or cpu; got '${wanted}'`);
  let backend = await setBackend(wanted);
  const report = (backend as { context?: { report: AdapterReport } }).context?.report;
  if (wanted === 'auto' && report?.software) {
    backend = await setBackend('cpu');
    console.log(`backend: cpu (the WebGPU adapter "${report.description || report.vendor}" is a software renderer, slower than the CPU backend; --backend webgpu uses it anyway)`);
  } else {
    console.log(`backend: ${backend.name}${report ? ` (${report.vendor} ${report.description})` : wanted === 'auto' ? ' (no WebGPU adapter found)' : ''}`);
  }
  return backend;
}

async function train(flags: Map<string, string>): Promise<void> {
  const quick = flags.has('quick');
  const modelDir = flags.get('model') ?? join(assets, 'base');
  const dataPath = flags.get('data') ?? join(assets, 'data');
  const rank = numberFlag(flags, 'rank', 8, true);
  const scale = numberFlag(flags, 'scale', 2);
  const dropout = numberFlag(flags, 'dropout', 0);
  const iters = numberFlag(flags, 'iters', quick ? 12 : 200, true);
  const batch = numberFlag(flags, 'batch', 8, true);
  const length = numberFlag(flags, 'seq', 64, true);
  const lr = numberFlag(flags, 'lr', 1e-2);
  const numLayersFlag = flags.has('num-layers') ? numberFlag(flags, 'num-layers', 2, true) : undefined;
  const keys = flags.get('keys')?.split(',').map((k) => k.trim());
  const adapterPath = flags.get('adapter-path') ?? 'adapters';
  const format = (flags.get('format') ?? 'mlx') as 'mlx' | 'peft';
  if (format !== 'mlx' && format !== 'peft') throw new UsageError(`--format must be mlx or peft; got '${format}'`);
  await chooseBackend(flags.get('backend') ?? 'auto');
  const { model, config, tokenizer } = loadModel(modelDir);
  const { train: trainTexts, valid } = readDataset(dataPath);
  const trainStream = Int32Array.from(tokenizer.encode(trainTexts.join(' ')));
  const validStream = Int32Array.from(tokenizer.encode(valid.join(' ')));
  const numLayers = numLayersFlag ?? Math.min(2, config.num_hidden_layers);
  console.log(`model: ${modelDir} (${config.num_hidden_layers} layers, hidden ${config.hidden_size}, vocab ${config.vocab_size}); data: ${trainTexts.length} train / ${valid.length} valid texts`);

  const evalOptions = { batches: quick ? 1 : 4, batch, length: Math.min(length, validStream.length - 2) };
  const prompt = valid[0].slice(0, 8);
  const lossBefore = await evaluate(model, validStream, evalOptions);
  const sampleBefore = await generate(model, tokenizer, prompt, quick ? 16 : 48);
  console.log(`validation loss before: ${lossBefore.toFixed(3)}`);
  console.log(`sample before: "${prompt}" → "${sampleBefore}"`);

  const converted = linearToLoRALayers(model, { numLayers, keys, rank, scale, dropout, seed: 1 });
  if (flags.has('resume-adapter-file')) {
    const file = flags.get('resume-adapter-file')!;
    loadAdapter(model, file);
    console.log(`resumed from ${file}`);
  }
  const trainable = model.trainableParameters().reduce((n, [, p]) => n + p.size, 0);
  const total = model.namedParameters().reduce((n, [, p]) => n + p.size, 0);
  console.log(`LoRA rank ${rank}, scale ${scale} on ${converted.length} layers (last ${numLayers} blocks): ${trainable} trainable of ${total} parameters (${((100 * trainable) / total).toFixed(2)}%)`);

  const started = performance.now();
  await trainLoop(model, trainStream, {
    iters,
    batch,
    length,
    lr,
    reportEvery: quick ? 4 : 10,
    onStep: (step, loss, tps) => console.log(`${bar(step, iters)} iter ${String(step).padStart(4)}/${iters}  loss ${loss.toFixed(3)}  ${tps.toFixed(0)} tok/s`),
  });
  const seconds = (performance.now() - started) / 1000;
  const lossAfter = await evaluate(model, validStream, evalOptions);
  model.eval();
  const sampleAfter = await generate(model, tokenizer, prompt, quick ? 16 : 48);
  console.log(`validation loss after: ${lossAfter.toFixed(3)} (${lossAfter < lossBefore ? 'down' : 'NOT down'} from ${lossBefore.toFixed(3)}) in ${seconds.toFixed(1)} s`);
  console.log(`sample after:  "${prompt}" → "${sampleAfter}"`);

  // Save, reload into a fresh model, compare; then merge and compare again.
  await saveAdapter(model, adapterPath, { format, numLayers, keys: keys ?? null });
  console.log(`saved ${format === 'mlx' ? 'MLX' : 'PEFT'} adapter to ${adapterPath}/`);
  const probe = tensor(Int32Array.from(validStream.subarray(0, Math.min(32, validStream.length))), [1, Math.min(32, validStream.length)]);
  const logits = async (m: typeof model) => {
    const out = tidy(() => noGrad(() => m.forward(probe)));
    const values = Float32Array.from(await out.data());
    out.dispose();
    return values;
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((mx, v, i) => Math.max(mx, Math.abs(v - b[i])), 0);
  const reference = await logits(model);
  const fresh = loadModel(modelDir).model;
  fresh.eval();
  loadAdapter(fresh, adapterPath);
  const reloadDiff = maxDiff(await logits(fresh), reference);
  mergeWeights(fresh);
  const mergedDiff = maxDiff(await logits(fresh), reference);
  const reloadOk = reloadDiff <= 1e-4;
  const mergeOk = mergedDiff <= 2e-3;
  console.log(`reloaded adapter: max |Δlogit| ${reloadDiff.toExponential(2)} ${reloadOk ? 'ok' : 'MISMATCH'}; merged weights: max |Δlogit| ${mergedDiff.toExponential(2)} ${mergeOk ? 'ok' : 'MISMATCH'}`);
  if (!reloadOk || !mergeOk || !(lossAfter < lossBefore)) throw new MetalLoRAError('train', 'a final check failed (see above)');
}

async function fuse(flags: Map<string, string>): Promise<void> {
  const modelDir = flags.get('model');
  const adapterPath = flags.get('adapter-path');
  const savePath = flags.get('save-path');
  if (!modelDir || !adapterPath || !savePath) throw new UsageError('fuse needs --model DIR --adapter-path DIR --save-path DIR');
  await chooseBackend(flags.get('backend') ?? 'auto');
  const { model, config, tokenizer } = loadModel(modelDir);
  const { format, files } = readAdapterFiles(adapterPath);
  const adapter = format === 'peft' ? parsePeftAdapter(files) : parseMlxAdapter(files);
  const merged = mergeWeights(model, adapter);
  if (model.namedModules().some(([, m]) => m instanceof LoRALinear)) throw new MetalLoRAError('fuse', 'the model still has LoRA layers after fusing');
  await saveModel(savePath, model, config, tokenizer);
  console.log(`fused ${merged.length} layers of a ${format.toUpperCase()} adapter into ${savePath}/ (config.json, model.safetensors, tokenizer.json)`);
}

const HELP = `usage: metal-lora [train] [--model DIR] [--data PATH] [--rank N] [--scale S] [--iters N] [--adapter-path DIR] [--format mlx|peft] [--resume-adapter-file FILE] [--backend auto|webgpu|cpu] [--quick]
       metal-lora fuse --model DIR --adapter-path DIR --save-path DIR`;

async function main(): Promise<void> {
  const { command, flags } = parseArgs(process.argv.slice(2));
  if (flags.has('help')) {
    console.log(HELP);
    return;
  }
  if (!existsSync(join(assets, 'base', 'config.json')) && !flags.has('model')) throw new UsageError(`the embedded model is missing at ${join(assets, 'base')}; pass --model DIR`);
  if (command === 'fuse') await fuse(flags);
  else await train(flags);
}

try {
  await main();
} catch (error) {
  const message = error instanceof MetalLoRAError || error instanceof UsageError ? error.message : `${(error as Error).message ?? error}`;
  console.error(`metal-lora: ${message}`);
  process.exitCode = 1;
}
