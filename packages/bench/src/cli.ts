#!/usr/bin/env node
/**
 * `pnpm bench` / `metal-lora-bench`: the seed's table measured on this machine.
 *
 *   metal-lora-bench [--quick] [--backend webgpu|cpu] [--json out.json] [--svg out.svg] [--no-peers] [--no-warm]
 *   metal-lora-bench decode [...]   (generation: see decode-bench.ts)
 *   metal-lora-bench e2e [...]      (a LoRA training step of whole models: see e2e-bench.ts)
 *   metal-lora-bench attention [...] (causal attention's forward and backward, fused and composed: see attention-bench.ts)
 *
 * Rows: forward at rank 8, 16, 32, 64 and backward (a training step: forward + dx, dA, dB) for
 * M = 2048 tokens (batch 4 × seq 512), in = out = 4096, plus decode (M = 1, 16; rank 16); the
 * step's peak memory. Columns: the unfused composition on the same backend, our fused kernels,
 * the speed-up, and the peers measured in the same run (tfjs-webgpu; PyTorch where it exists).
 */
import { writeFileSync } from 'node:fs';
import { createWebGPUBackend, WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { runAttentionBench } from './attention-bench';
import { runDecodeBench } from './decode-bench';
import { type E2EOptions, measureE2E, runE2EBench } from './e2e-bench';
import { type LoraCase, runLoraBench } from './lora-core';
import { tfjsPeer, torchPeer } from './peers';
import { key, markdownTable, type Row, svgChart } from './report';
import { clockWarmerLine } from './timing';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

/** The CPU backend's matmul rate on a 384³ product (median of 5 after a warm-up). */
function cpuGemmGflops(): number {
  const n = 384;
  const a = T.randn([n, n], { seed: 1, backend: T.cpuBackend });
  const b = T.randn([n, n], { seed: 2, backend: T.cpuBackend });
  T.matmul(a, b).dispose();
  const times = Array.from({ length: 5 }, () => {
    const t0 = performance.now();
    T.matmul(a, b).dispose();
    return performance.now() - t0;
  }).sort((p, q) => p - q);
  return (2 * n ** 3) / (times[2] * 1e-3) / 1e9;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const wanted = arg('backend') ?? 'webgpu';
  let backend: T.Backend;
  let device: string;
  if (wanted === 'cpu') {
    backend = T.cpuBackend;
    device = `CPU backend (JavaScript, one thread; matmul ${cpuGemmGflops().toFixed(2)} GFLOP/s at 384³)`;
  } else {
    const gpu = await createWebGPUBackend({ preciseTimestamps: true });
    backend = gpu;
    const r = gpu.context.report;
    device = `${r.vendor} ${r.device || r.architecture} ${r.description} (WebGPU via ${r.runtime})`.replace(/\s+/g, ' ');
    console.log(await clockWarmerLine(gpu, process.argv.includes('--no-warm')));
  }
  T.setBackendSync(backend);
  const cases: LoraCase[] = quick
    ? [
        { M: 64, inF: 128, outF: 128, r: 8 },
        { M: 1, inF: 128, outF: 128, r: 8 },
      ]
    : [...[8, 16, 32, 64].map((r) => ({ M: 2048, inF: 4096, outF: 4096, r })), { M: 1, inF: 4096, outF: 4096, r: 16 }, { M: 16, inF: 4096, outF: 4096, r: 16 }];
  console.log(`metal-lora-bench on ${device}: ${cases.length} configurations${quick ? ' (quick)' : ''}`);
  let done = 0;
  const results = await runLoraBench(backend, cases, (line) => console.log(`[${++done}/${cases.length}] ${line}`));
  const rows: Row[] = results.map((r) => ({ ...r }));
  const peers: string[] = [];
  if (!process.argv.includes('--no-peers')) {
    if (backend instanceof WebGPUBackend) {
      console.log('peer: tfjs-webgpu …');
      const tf = await tfjsPeer(backend.context.gpu, cases);
      if (typeof tf === 'string') peers.push(`${tf} (not measured)`);
      else {
        for (const row of rows) row.tfjs = tf.get(key(row));
        peers.push('tfjs: @tensorflow/tfjs-backend-webgpu 4.22 on the same Dawn instance, the same LoRA math through its ops, `tf.time` kernel ms');
      }
    } else peers.push('tfjs: runs on WebGPU only (not measured with --backend cpu)');
    console.log('peer: PyTorch …');
    const torch = torchPeer(quick);
    if (typeof torch === 'string') peers.push(`${torch} (not measured)`);
    else {
      for (const row of rows) row.torch = torch.results.get(key(row));
      peers.push(`PyTorch: ${torch.device}, cuBLAS f32 with TF32 off, unfused (PEFT's computation), CUDA events`);
    }
  }
  const table = markdownTable(rows, device, peers);
  console.log(`\n${table}\n`);
  // A whole training step too (metal-lora-bench e2e for every shape): SmolLM2's shape, or the tiny one with --quick.
  const e2eOptions: E2EOptions = { models: [quick ? 'tiny' : 'smollm2-135m'], batch: quick ? 2 : 4, seq: quick ? 32 : 512, rank: 8, steps: 3, warmup: 1 };
  const [e2e] = (await measureE2E(e2eOptions, device, !process.argv.includes('--no-peers'))).rows;
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify({ device, date: new Date().toISOString(), quick, rows, peers, e2e }, null, 2));
  const svg = arg('svg');
  if (svg) writeFileSync(svg, svgChart(rows, device));
  if (backend instanceof WebGPUBackend) {
    await backend.sync();
    backend.context.device.destroy();
  }
}

if (process.argv[1]?.match(/cli\.(ts|mjs|js)$|metal-lora-bench/)) {
  try {
    if (process.argv[2] === 'decode') await runDecodeBench(process.argv.slice(3));
    else if (process.argv[2] === 'e2e') await runE2EBench(process.argv.slice(3));
    else if (process.argv[2] === 'attention') await runAttentionBench(process.argv.slice(3));
    else await main();
  } catch (error) {
    // Bad flags and values are the user's to fix: one line, not a stack trace.
    const message = (error as Error).message;
    console.error(message.startsWith('metal-lora-bench') ? message : `metal-lora-bench: ${message}`);
    process.exitCode = 1;
  }
}
