/**
 * LoRA layer benchmark on the WebGPU backend: for M = 2048 tokens, in = out = 4096 and several
 * ranks, the base GEMM alone, the unfused composition a tensor library would run (separate
 * matmuls, scale and add; autograd for backward), and the fused kernels (loraLinear and its
 * backward op), timed side by side with GPU timestamps, plus the allocator's peak bytes of a
 * forward+backward step. Outputs are checked against each other before timing.
 *
 *   node lora-bench.mjs [--quick] [--json out.json]
 */
import { writeFileSync } from 'node:fs';
import { createWebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { runLoraBench } from './lora-core';
import { clockWarmerLine } from './timing';

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const jsonIndex = process.argv.indexOf('--json');
  const backend = await createWebGPUBackend({ preciseTimestamps: true });
  T.setBackendSync(backend);
  const { report } = backend.context;
  console.log(`device: ${report.vendor} ${report.device} ${report.description} (${report.runtime})`);
  console.log(await clockWarmerLine(backend, process.argv.includes('--no-warm')));
  const cases = quick ? [{ M: 128, inF: 256, outF: 256, r: 8 }] : [8, 16, 32, 64].map((r) => ({ M: 2048, inF: 4096, outF: 4096, r }));
  const results = await runLoraBench(backend, cases, console.log);
  if (jsonIndex > 0) writeFileSync(process.argv[jsonIndex + 1], JSON.stringify({ device: report, results }, null, 2));
  await backend.sync();
  backend.context.device.destroy();
}

if (process.argv[1]?.includes('lora-bench')) await main();
