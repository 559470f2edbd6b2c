/**
 * `metal-lora-bench decode`: text generation as a user runs it — time to first token and decode
 * tokens/s with the KV cache, against recomputing the whole context per token (ours) and against
 * PyTorch + transformers `generate` (f32, same GPU, same run) where `torch` with CUDA exists.
 *
 *   metal-lora-bench decode [--backend webgpu|cpu] [--models smollm2-135m,llama-3.2-1b] [--prompt N] [--tokens N] [--quantize BITS] [--json out.json]
 *
 * `--quantize BITS`: each model also quantized (MLX affine, groups of 64; `quantizeModel`), a second
 * row per model in the same run (`<model> q4`; the PyTorch peer runs the float model only).
 * Models are random-weight models of the named shapes (greedy decoding, no end-of-reply id, so
 * every run makes exactly --tokens tokens), or `embedded` (the CLI's bundled model, the CPU default).
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createWebGPUBackend, WebGPUBackend } from '@metal-lora/metal-kernels';
import { generateIds, KVCache, LlamaForCausalLM, quantizeModel, Sampler } from '@metal-lora/nn';
import * as T from '@metal-lora/tensor';
import { loadModel } from 'metal-lora';
import { MODEL_SHAPES as DECODE_SHAPES } from './shapes';

export interface DecodeRow {
  model: string;
  promptTokens: number;
  tokens: number;
  /** Ours, with the KV cache. */
  ttftMs: number;
  tokensPerSecond: number;
  /** Ours, with the KV cache but every step through the ops (no captured step), where the backend captures. */
  opsTokensPerSecond?: number;
  /** Ours, the whole context recomputed for every token (measured over `recomputeTokens`). */
  recomputeTokensPerSecond?: number;
  recomputeTokens?: number;
  torch?: { ttftMs: number; tokensPerSecond: number } | string;
  /** One captured decode step (`--profile`): dispatches, host ms to encode and to submit a replay, GPU ms, and GPU ms per kernel label of a step through the ops. */
  step?: { dispatches: number; encodeMs: number; submitMs: number; gpuMs: number; kernels: Record<string, { count: number; ms: number }> };
}

/** Where a captured decode step's time goes (after a prompt of `prompt`): see `DecodeRow.step`. */
async function profileStep(backend: WebGPUBackend, model: LlamaForCausalLM, prompt: number[]): Promise<NonNullable<DecodeRow['step']>> {
  const cache = new KVCache(model.config.num_hidden_layers, { capacity: prompt.length + 64 });
  const forward = (ids: T.Tensor) => T.tidy(() => T.noGrad(() => model.forward(ids, { cache, logits: 'last' })));
  const input = T.keep(T.tensor(new Int32Array(1), [1, 1], { dtype: 'int32' }));
  try {
    (await forward(T.tensor(Int32Array.from(prompt), [1, prompt.length], { dtype: 'int32' })).data()).length;
    await forward(input).data();
    backend.startProfile();
    await forward(input).data();
    const kernels = Object.fromEntries(await backend.stopProfile());
    cache.prepare();
    const run = T.captureGraph(() => forward(input), backend);
    if (!run) throw new Error('the webgpu backend captures');
    await run.result.data();
    const n = 20;
    let encodeMs = 0;
    let submitMs = 0;
    let gpuMs = 0;
    for (let i = 0; i < n; i++) {
      cache.prepare();
      const t0 = performance.now();
      run.graph.prepare();
      const t1 = performance.now();
      run.graph.replay();
      submitMs += performance.now() - t1;
      encodeMs += t1 - t0;
      cache.length += 1;
      await run.result.data();
      cache.prepare();
      gpuMs += await backend.timeRegion(() => run.graph.replay());
      cache.length += 1;
    }
    run.result.dispose();
    run.graph.dispose();
    return { dispatches: run.graph.dispatches, encodeMs: encodeMs / n, submitMs: submitMs / n, gpuMs: gpuMs / n, kernels };
  } finally {
    input.dispose();
    cache.dispose();
  }
}

/** Tokens/s of greedy decoding by full recompute, over `count` tokens after the prompt (no cache). */
async function recomputeRate(model: LlamaForCausalLM, prompt: number[], count: number): Promise<number> {
  const ids = [...prompt];
  const greedy = new Sampler();
  const t0 = performance.now();
  for (let i = 0; i < count; i++) {
    const logits = T.tidy(() => T.noGrad(() => model.forward(T.tensor(Int32Array.from(ids), [1, ids.length], { dtype: 'int32' }), { logits: 'last' })));
    const v = await logits.data();
    logits.dispose();
    ids.push(greedy.next(v, ids));
  }
  return count / ((performance.now() - t0) / 1000);
}

function torchDecode(names: string[], prompt: number, tokens: number): Map<string, { ttftMs: number; tokensPerSecond: number }> | string {
  const probe = spawnSync('python3', ['-c', 'import torch, transformers; print(torch.cuda.is_available())'], { encoding: 'utf8' });
  if (probe.status !== 0) return 'pytorch: python3 with torch and transformers is not available here';
  if (probe.stdout.trim() !== 'True') return 'pytorch: torch has no CUDA device here';
  const script = fileURLToPath(new URL(process.env.METAL_LORA_TORCH_DECODE ?? '../python/torch_decode.py', import.meta.url));
  const shapes = Object.fromEntries(names.map((n) => [n, DECODE_SHAPES[n]]));
  const run = spawnSync('python3', [script, JSON.stringify({ shapes, prompt, tokens })], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (run.status !== 0) return `pytorch: the script failed (${run.stderr.trim().split('\n').pop()})`;
  const json = JSON.parse(run.stdout) as { device: string; results: Record<string, { ttftMs: number; tokensPerSecond: number }> };
  return new Map(Object.entries(json.results));
}

export async function runDecodeBench(argv: string[]): Promise<void> {
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const wanted = arg('backend') ?? 'webgpu';
  let device: string;
  if (wanted === 'cpu') {
    T.setBackendSync(T.cpuBackend);
    device = 'CPU backend (JavaScript, one thread)';
  } else {
    const gpu = await createWebGPUBackend();
    T.setBackendSync(gpu);
    // `--max-splits 1`: the plain products without K splits (A/B of the selector's split-K at decode).
    const maxSplits = arg('max-splits');
    if (maxSplits) gpu.overrides = { maxSplits: Number(maxSplits) };
    const r = gpu.context.report;
    device = `${r.vendor} ${r.device || r.architecture} ${r.description} (WebGPU via ${r.runtime})`.replace(/\s+/g, ' ');
  }
  const names = (arg('models') ?? (wanted === 'cpu' ? 'embedded' : 'smollm2-135m,llama-3.2-1b')).split(',');
  const promptTokens = Number(arg('prompt') ?? (wanted === 'cpu' ? 16 : 128));
  const tokens = Number(arg('tokens') ?? 256);
  const recomputeTokens = Number(arg('recompute') ?? (wanted === 'cpu' ? tokens : 32));
  console.log(`decode bench on ${device}: ${names.join(', ')}; prompt ${promptTokens} tokens, ${tokens} generated`);
  const quantize = arg('quantize') === undefined ? 0 : Number(arg('quantize'));
  if (quantize && ![2, 3, 4, 5, 6, 8].includes(quantize)) throw new Error(`decode: --quantize takes bits; expected 2, 3, 4, 5, 6 or 8, got ${arg('quantize')}`);
  const rows: DecodeRow[] = [];
  for (const [name, bits] of names.flatMap((n) => (quantize ? [[n, 0] as const, [n, quantize] as const] : [[n, 0] as const]))) {
    // A named shape gets random weights; `embedded` or a folder path is loaded.
    const folder = name === 'embedded' ? fileURLToPath(new URL('../../metal-lora/assets/base', import.meta.url)) : name;
    const model = DECODE_SHAPES[name] ? new LlamaForCausalLM(DECODE_SHAPES[name], { seed: 1 }) : loadModel(folder).model;
    if (bits) await quantizeModel(model, { bits, groupSize: 64 });
    model.eval();
    const vocab = model.config.vocab_size;
    const prompt = Array.from({ length: promptTokens }, (_, i) => (i * 7919 + 13) % vocab);
    await generateIds(model, [prompt], { maxTokens: 4 }); // warm-up: the prefill's and the steps' pipelines compiled
    const run = await generateIds(model, [prompt], { maxTokens: tokens });
    const row: DecodeRow = {
      model: bits ? `${name} q${bits}` : name,
      promptTokens,
      tokens: run.tokens[0].length,
      ttftMs: run.prefillSeconds * 1000,
      tokensPerSecond: (run.tokens[0].length - 1) / run.decodeSeconds,
    };
    if (typeof T.getBackend().capture === 'function') {
      const ops = await generateIds(model, [prompt], { maxTokens: tokens, graph: false });
      row.opsTokensPerSecond = (ops.tokens[0].length - 1) / ops.decodeSeconds;
      if (ops.tokens[0].join() !== run.tokens[0].join()) console.log(`${row.model}: WARNING the captured steps chose other tokens than the ops did`);
    }
    const backend = T.getBackend();
    if (argv.includes('--profile') && backend instanceof WebGPUBackend) {
      row.step = await profileStep(backend, model, prompt);
      const top = Object.entries(row.step.kernels)
        .sort((a, b) => b[1].ms - a[1].ms)
        .slice(0, 12)
        .map(([k, v]) => `${k} ×${v.count} ${v.ms.toFixed(3)} ms`)
        .join('; ');
      console.log(
        `${row.model}: a captured step: ${row.step.dispatches} dispatches, encode ${row.step.encodeMs.toFixed(3)} ms, submit ${row.step.submitMs.toFixed(3)} ms, GPU ${row.step.gpuMs.toFixed(3)} ms; kernels of a step through the ops: ${top}`,
      );
    }
    if (recomputeTokens > 0) {
      // The same context lengths as the cached run: the prompt, then up to `tokens` more.
      row.recomputeTokens = recomputeTokens;
      row.recomputeTokensPerSecond = await recomputeRate(model, [...prompt, ...run.tokens[0].slice(0, tokens - recomputeTokens)], recomputeTokens);
    }
    console.log(
      `${row.model}: first token ${row.ttftMs.toFixed(1)} ms, ${row.tokensPerSecond.toFixed(1)} tokens/s with the cache` +
        (row.opsTokensPerSecond ? ` (${row.opsTokensPerSecond.toFixed(1)} without captured steps)` : '') +
        (row.recomputeTokensPerSecond
          ? `, ${row.recomputeTokensPerSecond.toFixed(1)} tokens/s recomputing (${(row.tokensPerSecond / row.recomputeTokensPerSecond).toFixed(1)}×)`
          : ''),
    );
    rows.push(row);
    for (const [, p] of model.namedParameters()) p.dispose();
  }
  const peers = names.filter((n) => n in DECODE_SHAPES);
  if (!argv.includes('--no-peers') && peers.length > 0) {
    console.log('peer: PyTorch + transformers generate …');
    const torch = torchDecode(peers, promptTokens, tokens);
    for (const row of rows) row.torch = typeof torch === 'string' ? torch : torch.get(row.model);
  }
  const lines = [
    `Decode on ${device}, ${new Date().toISOString().slice(0, 10)}: prompt ${promptTokens} tokens, ${tokens} generated, greedy, f32.`,
    '',
    '| model | first token (ms) | tokens/s (KV cache) | tokens/s (cache, no captured step) | tokens/s (recompute) | cache speed-up | PyTorch first token (ms) | PyTorch tokens/s | ours / PyTorch |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => {
      const t = typeof r.torch === 'object' ? r.torch : undefined;
      const re = r.recomputeTokensPerSecond;
      return `| ${r.model} | ${r.ttftMs.toFixed(1)} | ${r.tokensPerSecond.toFixed(1)} | ${r.opsTokensPerSecond ? r.opsTokensPerSecond.toFixed(1) : '–'} | ${re ? re.toFixed(1) : '–'} | ${re ? `${(r.tokensPerSecond / re).toFixed(1)}×` : '–'} | ${t ? t.ttftMs.toFixed(1) : '–'} | ${t ? t.tokensPerSecond.toFixed(1) : '–'} | ${t ? `${(r.tokensPerSecond / t.tokensPerSecond).toFixed(2)}×` : '–'} |`;
    }),
  ];
  const notes = rows.filter((r) => typeof r.torch === 'string').map((r) => `${r.model}: ${r.torch}`);
  console.log(`\n${lines.join('\n')}${notes.length ? `\n\n${[...new Set(notes)].join('\n')}` : ''}\n`);
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify({ device, date: new Date().toISOString(), promptTokens, tokens, rows }, null, 2));
  const backend = T.getBackend();
  if (backend instanceof WebGPUBackend) {
    await backend.sync();
    backend.context.device.destroy();
  }
}

if (process.argv[1]?.match(/decode-bench\.(ts|mjs|js)$/)) await runDecodeBench(process.argv.slice(2));
