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
import { parseMlxAdapter, parsePeftAdapter } from '@metal-lora/adapter-io';
import { linearToLoRALayers, LoRALinear, mergeWeights } from '@metal-lora/nn';
import '@metal-lora/metal-kernels'; // registers the webgpu backend
import type { AdapterReport } from '@metal-lora/metal-kernels';
import { type Backend, MetalLoRAError, noGrad, setBackend, tensor, tidy } from '@metal-lora/tensor';
import { fuseAdapter, loadAdapter, saveAdapter } from './adapters';
import { loadModel, saveModel } from './checkpoint';
import { helpText, parseCommandLine, UsageError } from './cli-args';
import { readDataset } from './data';
import { type GenerateOptions, type GenerateResult, generate, type Prompt } from './generate';
import type { ChatMessage } from './hf-tokenizer';
import { evaluate, trainLoop } from './trainer';

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
  console.log(`backend: ${backend.name}${report ? ` (${report.vendor} ${report.description}${report.software ? ', a software renderer' : ''})` : ''}`);
  return backend;
}

type Flags = ReturnType<typeof parseCommandLine>['flags'];

async function train(flags: Flags): Promise<void> {
  const quick = flags.quick === true;
  const modelDir = flags.model ?? join(assets, 'base');
  const dataPath = flags.data ?? join(assets, 'data');
  const rank = flags.rank ?? 8;
  const scale = flags.scale ?? 2;
  const dropout = flags.dropout ?? 0;
  const iters = flags.iters ?? (quick ? 12 : 200);
  const batch = flags.batch ?? 8;
  const length = flags.seq ?? 64;
  const lr = flags.lr ?? 1e-2;
  const numLayersFlag = flags['num-layers'];
  const keys = flags.keys?.split(',').map((k) => k.trim());
  const adapterPath = flags['adapter-path'] ?? 'adapters';
  const format = (flags.format ?? 'mlx') as 'mlx' | 'peft';
  await chooseBackend(flags.backend ?? 'auto');
  const { model, config, tokenizer } = loadModel(modelDir);
  const { train: trainTexts, valid } = readDataset(dataPath);
  const trainStream = Int32Array.from(tokenizer.encode(trainTexts.join(' ')));
  const validStream = Int32Array.from(tokenizer.encode(valid.join(' ')));
  const numLayers = numLayersFlag ?? Math.min(2, config.num_hidden_layers);
  console.log(
    `model: ${modelDir} (${config.num_hidden_layers} layers, hidden ${config.hidden_size}, vocab ${config.vocab_size}); data: ${trainTexts.length} train / ${valid.length} valid texts`,
  );

  for (const [what, stream] of [
    ['training', trainStream],
    ['validation', validStream],
  ] as const) {
    if (stream.length < 3)
      throw new UsageError(`the ${what} texts hold ${stream.length} tokens, too few for one sequence`, 'at least 3 tokens', String(stream.length));
  }
  const maxPositions = (config as { max_position_embeddings?: number }).max_position_embeddings;
  if (maxPositions !== undefined && length > maxPositions)
    throw new UsageError("--seq is longer than the model's positions", `at most max_position_embeddings = ${maxPositions}`, String(length));
  const evalOptions = { batches: quick ? 1 : 4, batch, length: Math.min(length, validStream.length - 2) };
  const prompt = valid[0].slice(0, 8);
  const lossBefore = await evaluate(model, validStream, evalOptions);
  const sample = async () => (await generate(model, tokenizer, prompt, { maxTokens: quick ? 16 : 48 })).text;
  const sampleBefore = await sample();
  console.log(`validation loss before: ${lossBefore.toFixed(3)}`);
  console.log(`sample before: "${prompt}" → "${sampleBefore}"`);

  const kvWidth = (config.num_key_value_heads ?? config.num_attention_heads) * (config.head_dim ?? config.hidden_size / config.num_attention_heads);
  const narrowest = Math.min(config.hidden_size, config.intermediate_size, kvWidth);
  if (rank > narrowest)
    throw new UsageError(
      "--rank exceeds the model's layer sizes (a LoRA update's rank is at most its layer's smaller side)",
      `at most ${narrowest}`,
      String(rank),
    );
  const converted = linearToLoRALayers(model, { numLayers, keys, rank, scale, dropout, seed: 1 });
  const file = flags['resume-adapter-file'];
  if (file !== undefined) {
    loadAdapter(model, file);
    console.log(`resumed from ${file}`);
  }
  const trainable = model.trainableParameters().reduce((n, [, p]) => n + p.size, 0);
  const total = model.namedParameters().reduce((n, [, p]) => n + p.size, 0);
  console.log(
    `LoRA rank ${rank}, scale ${scale} on ${converted.length} layers (last ${numLayers} blocks): ${trainable} trainable of ${total} parameters (${((100 * trainable) / total).toFixed(2)}%)`,
  );

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
  const sampleAfter = await sample();
  console.log(
    `validation loss after: ${lossAfter.toFixed(3)} (${lossAfter < lossBefore ? 'down' : 'NOT down'} from ${lossBefore.toFixed(3)}) in ${seconds.toFixed(1)} s`,
  );
  console.log(`sample after:  "${prompt}" → "${sampleAfter}"`);

  // Nothing is written over an existing adapter until the run has passed its checks: the adapter
  // is saved to a temporary folder beside it, reloaded into a fresh model and merged there, and
  // only then saved to --adapter-path (the weights and config swapped in as a pair).
  const embeddedDefault = flags.model === undefined && flags.data === undefined;
  if (embeddedDefault && !(lossAfter < lossBefore))
    throw new MetalLoRAError(
      'train',
      `the embedded default's validation loss did not fall (${lossBefore.toFixed(3)} → ${lossAfter.toFixed(3)}); nothing was saved`,
    );
  const probe = tensor(Int32Array.from(validStream.subarray(0, Math.min(32, validStream.length))), [1, Math.min(32, validStream.length)]);
  const logits = async (m: typeof model) => {
    const out = tidy(() => noGrad(() => m.forward(probe)));
    const values = Float32Array.from(await out.data());
    out.dispose();
    return values;
  };
  const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((mx, v, i) => Math.max(mx, Math.abs(v - b[i])), 0);
  const reference = await logits(model);
  mkdirSync(dirname(resolve(adapterPath)), { recursive: true });
  const scratch = mkdtempSync(join(dirname(resolve(adapterPath)), `.${basename(resolve(adapterPath))}.check-`));
  try {
    await saveAdapter(model, scratch, { format, numLayers, keys: keys ?? null });
    const fresh = loadModel(modelDir).model;
    fresh.eval();
    loadAdapter(fresh, scratch);
    const reloadDiff = maxDiff(await logits(fresh), reference);
    mergeWeights(fresh);
    const mergedDiff = maxDiff(await logits(fresh), reference);
    const reloadOk = reloadDiff <= 1e-4;
    const mergeOk = mergedDiff <= 2e-3;
    console.log(
      `reloaded adapter: max |Δlogit| ${reloadDiff.toExponential(2)} ${reloadOk ? 'ok' : 'MISMATCH'}; merged weights: max |Δlogit| ${mergedDiff.toExponential(2)} ${mergeOk ? 'ok' : 'MISMATCH'}`,
    );
    if (!reloadOk || !mergeOk)
      throw new MetalLoRAError('train', `the saved adapter does not reproduce the trained model (see above); nothing was written to ${adapterPath}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
  await saveAdapter(model, adapterPath, { format, numLayers, keys: keys ?? null });
  console.log(`saved ${format === 'mlx' ? 'MLX' : 'PEFT'} adapter to ${adapterPath}/`);
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
  const adapter = format === 'peft' ? parsePeftAdapter(files) : parseMlxAdapter(files);
  const merged = fuseAdapter(model, adapter);
  if (model.namedModules().some(([, m]) => m instanceof LoRALinear)) throw new MetalLoRAError('fuse', 'the model still has LoRA layers after fusing');
  await saveModel(savePath, model, config, tokenizer, { generation });
  console.log(`fused ${merged.length} layers of a ${format.toUpperCase()} adapter into ${savePath}/ (config.json, model.safetensors, tokenizer.json)`);
}

/** Loads --model (the embedded default without it) with --adapter-path applied, for generate and chat. */
async function modelForGeneration(flags: Flags) {
  await chooseBackend(flags.backend ?? 'auto');
  const loaded = loadModel(flags.model ?? join(assets, 'base'));
  const adapterPath = flags['adapter-path'];
  if (adapterPath !== undefined) {
    const adapter = loadAdapter(loaded.model, adapterPath);
    console.log(`adapter: ${adapterPath} (rank ${adapter.rank}, scale ${adapter.scale})`);
  }
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
