#!/usr/bin/env node
/**
 * `pnpm bench` / `metal-lora-bench`: the seed's table measured on this machine.
 *
 *   metal-lora-bench [--quick] [--backend webgpu|cpu] [--json out.json] [--svg out.svg] [--no-peers]
 *
 * Rows: forward at rank 8, 16, 32, 64 and backward (a training step: forward + dx, dA, dB) for
 * M = 2048 tokens (batch 4 × seq 512), in = out = 4096, plus decode (M = 1, 16; rank 16); the
 * step's peak memory. Columns: the unfused composition on the same backend, our fused kernels,
 * the speed-up, and the peers measured in the same run (tfjs-webgpu; PyTorch where it exists).
 */
import { writeFileSync } from 'node:fs';
import { createWebGPUBackend, WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { type LoraCase, type LoraResult, runLoraBench } from './lora-bench';
import { type PeerTimes, tfjsPeer, torchPeer } from './peers';

interface Row extends LoraResult {
  tfjs?: PeerTimes;
  torch?: PeerTimes & { baseMs: number; peakBytes: number };
}

const key = (c: LoraCase) => `${c.M}x${c.inF}x${c.outF}r${c.r}`;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const fmt = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? '—' : ms < 1 ? ms.toFixed(3) : ms.toFixed(2));

export function markdownTable(rows: Row[], device: string, peers: string[]): string {
  const lines = [
    `Device: ${device}. Times in ms (median of 7 timed trials, GPU timestamps where available; the JSON has each spread); speed-up = unfused / fused.`,
    '',
    '| shape (M × in × out) | r | fwd unfused | fwd fused | fwd speed-up | fwd tfjs | fwd PyTorch | step unfused | step fused | step speed-up | step tfjs | step PyTorch | peak MB unfused → fused |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.M} × ${r.inF} × ${r.outF} | ${r.r} | ${fmt(r.unfusedFwdMs)} | ${fmt(r.fusedFwdMs)} | ${(r.unfusedFwdMs / r.fusedFwdMs).toFixed(2)}× | ${fmt(r.tfjs?.fwdMs)} | ${fmt(r.torch?.fwdMs)} | ${fmt(r.unfusedStepMs)} | ${fmt(r.fusedStepMs)} | ${(r.unfusedStepMs / r.fusedStepMs).toFixed(2)}× | ${fmt(r.tfjs?.stepMs)} | ${fmt(r.torch?.stepMs)} | ${(r.unfusedPeakBytes / 1e6).toFixed(1)} → ${(r.fusedPeakBytes / 1e6).toFixed(1)} (${(r.fusedPeakBytes / r.unfusedPeakBytes).toFixed(2)}×) |`,
    );
  }
  if (peers.length) lines.push('', ...peers.map((p) => `- ${p}`));
  return lines.join('\n');
}

/** A grouped bar chart (ms, lower is better) of forward and step times per row. */
export function svgChart(rows: Row[], device: string): string {
  const series: [string, string, (r: Row) => number | undefined][] = [
    ['unfused', '#9aa5b1', (r) => r.unfusedStepMs],
    ['fused', '#2f80ed', (r) => r.fusedStepMs],
    ['tfjs', '#f2994a', (r) => r.tfjs?.stepMs],
    ['PyTorch', '#27ae60', (r) => r.torch?.stepMs],
  ];
  const groupW = 120;
  const barW = 22;
  const h = 220;
  const max = Math.max(...rows.flatMap((r) => series.map(([, , f]) => f(r) ?? 0)), 1e-9);
  const width = 80 + rows.length * groupW;
  const bars = rows
    .map((r, i) => {
      const group = series
        .map(([name, color, f], j) => {
          const v = f(r);
          if (v === undefined || Number.isNaN(v)) return '';
          const bh = (v / max) * h;
          const x = 60 + i * groupW + j * (barW + 2);
          return `<rect x="${x}" y="${20 + h - bh}" width="${barW}" height="${bh.toFixed(1)}" fill="${color}"><title>${name}: ${fmt(v)} ms</title></rect>`;
        })
        .join('');
      return `${group}<text x="${60 + i * groupW}" y="${h + 38}" font-size="11">M=${r.M} r=${r.r}</text>`;
    })
    .join('\n');
  const legend = series.map(([name, color], j) => `<rect x="${60 + j * 90}" y="${h + 50}" width="10" height="10" fill="${color}"/><text x="${74 + j * 90}" y="${h + 59}" font-size="11">${name}</text>`).join('');
  const title = `LoRA training step (forward + backward), ms, lower is better: ${device.replace(/[<&>]/g, '')}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${h + 80}" font-family="sans-serif" role="img">
<title>${title}</title>
<text x="10" y="14" font-size="12">LoRA training step (forward + backward), ms, lower is better: ${device.replace(/[<&>]/g, '')}</text>
<line x1="58" y1="${20 + h}" x2="${width - 10}" y2="${20 + h}" stroke="#333"/>
${bars}
${legend}
</svg>
`;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const wanted = arg('backend') ?? 'webgpu';
  let backend: T.Backend;
  let device: string;
  if (wanted === 'cpu') {
    backend = T.cpuBackend;
    device = 'CPU backend (JavaScript, one thread)';
  } else {
    const gpu = await createWebGPUBackend({ preciseTimestamps: true });
    backend = gpu;
    const r = gpu.context.report;
    device = `${r.vendor} ${r.device || r.architecture} ${r.description} (WebGPU via ${r.runtime})`.replace(/\s+/g, ' ');
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
  const json = arg('json');
  if (json) writeFileSync(json, JSON.stringify({ device, date: new Date().toISOString(), quick, rows, peers }, null, 2));
  const svg = arg('svg');
  if (svg) writeFileSync(svg, svgChart(rows, device));
  if (backend instanceof WebGPUBackend) {
    await backend.sync();
    backend.context.device.destroy();
  }
}

if (process.argv[1]?.match(/cli\.(ts|mjs|js)$|metal-lora-bench/)) await main();
