/**
 * The benchmark page: adapter report, a correctness check of the fused kernels against the CPU
 * reference, and the benchmark table and chart (fine-tuning has its own page, finetune.html).
 * `?auto=quick` runs everything on tiny shapes and publishes `window.__results` (the browser test).
 */
import { type AdapterReport, subgroupMatrixConfigsText } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { compare, randomValues } from '@metal-lora/tensor/testing';
import { type LoraCase, runLoraBench } from '../src/lora-core';
import { escapeHtml, htmlTable, markdownTable, type Row, svgChart } from '../src/report';
import { startWebGPU } from './device';

interface PageResults {
  adapter?: Partial<AdapterReport>;
  /** The precision path the page's kernels take, as the summary states it. */
  path?: string;
  correctness?: { ok: boolean; maxRelError: number; checks: number };
  bench?: Row[];
  error?: string;
}
const results: PageResults = {};
const w = window as unknown as { __results: PageResults; __done: boolean };
w.__results = results;
w.__done = false;
const $ = <E extends HTMLElement>(id: string) => document.getElementById(id) as E;
const auto = new URLSearchParams(location.search).get('auto');

async function showAdapter(): Promise<string> {
  const { report: r, device, path } = await startWebGPU();
  results.adapter = {
    vendor: r.vendor,
    architecture: r.architecture,
    description: r.description,
    features: r.features,
    shaderF16: r.shaderF16,
    subgroups: r.subgroups,
    timestampQuery: r.timestampQuery,
    software: r.software,
  };
  results.path = path;
  const rows: [string, string][] = [
    ['device', device || '—'],
    ['vendor / architecture', `${r.vendor || '—'} / ${r.architecture || '—'}`],
    ['runtime', r.runtime],
    ['software renderer', r.software ? 'yes' : 'no'],
    ['shader-f16', r.shaderF16 ? 'yes' : 'no'],
    ['subgroups', r.subgroups ? `yes (sizes ${r.subgroupMinSize}..${r.subgroupMaxSize})` : 'no'],
    ['subgroup matrices', subgroupMatrixConfigsText(r) || 'none'],
    ['GPU timestamps', r.timestampQuery ? 'yes' : 'no (wall-clock timing)'],
    ...r.precisionNotes.map((n): [string, string] => ['note', n]),
  ];
  $('adapter').innerHTML =
    `<table>${rows.map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td style="text-align:left">${escapeHtml(v)}</td></tr>`).join('')}</table>`;
  $('adapter-json').textContent = JSON.stringify(r, null, 2);
  return device;
}

/** Forward and gradients of loraLinear on the GPU against the CPU reference (float64), fused plan shapes. */
async function checkCorrectness(): Promise<void> {
  const gpu = T.getBackend();
  let worst = 0;
  let checks = 0;
  let ok = true;
  for (const [M, inF, outF, r, dropout] of [
    [33, 36, 20, 8, 0],
    [65, 68, 44, 4, 0.2],
  ] as const) {
    const shapes = { x: [M, inF], w: [outF, inF], a: [r, inF], b: [outF, r], dy: [M, outF] };
    const data = Object.fromEntries(Object.entries(shapes).map(([k, s], i) => [k, randomValues(s[0] * s[1], 7 + i)]));
    const run = (backend: T.Backend, dtype: 'float32' | 'float64') => {
      const t = (k: keyof typeof shapes) => T.tensor(data[k], shapes[k], { dtype, backend });
      const dy = t('dy');
      const f = (x: T.Tensor, a: T.Tensor, b: T.Tensor) => T.sum(T.mul(T.loraLinear(x, t('w'), a, b, { scale: 2, dropout, seed: 5 }), dy));
      const [, grads] = T.valueAndGrad(f, [0, 1, 2])(t('x'), t('a'), t('b'));
      return grads as T.Tensor[];
    };
    const got = run(gpu, 'float32');
    const ref = run(T.cpuBackend, 'float64');
    for (let i = 0; i < 3; i++) {
      const expected = ref[i].dataSync();
      let scale = 0;
      for (const v of expected) scale = Math.max(scale, Math.abs(v));
      const c = compare(await got[i].data(), expected, { rtol: 1e-3, atol: 1e-5 * scale });
      worst = Math.max(worst, c.maxRelError);
      ok &&= c.ok;
      checks++;
    }
  }
  results.correctness = { ok, maxRelError: worst, checks };
  $('correctness').innerHTML =
    `<span class="${ok ? 'ok' : 'bad'}">${ok ? 'PASS' : 'FAIL'}</span>: ${checks} gradients (dx, dA, dB) of the fused kernels match the float64 CPU reference (max relative error ${worst.toExponential(2)}).`;
}

async function runBench(device: string, cases: LoraCase[]): Promise<void> {
  // The form shows the shapes being measured, whoever asked for them.
  const form = $<HTMLFormElement>('bench-form');
  (form.elements.namedItem('M') as HTMLInputElement).value = String(cases[0].M);
  (form.elements.namedItem('dim') as HTMLInputElement).value = String(cases[0].inF);
  (form.elements.namedItem('ranks') as HTMLInputElement).value = cases.map((c) => c.r).join(',');
  $('shapes').textContent = `Results for M = ${cases[0].M}, in = out = ${cases[0].inF}, r = ${cases.map((c) => c.r).join(', ')} (f32):`;
  $('progress').textContent = `measuring ${cases.length} configurations…`;
  let done = 0;
  const rows = await runLoraBench(T.getBackend(), cases, (line) => {
    $('progress').textContent = `[${++done}/${cases.length}] ${line}`;
  });
  results.bench = rows;
  $('progress').textContent = `done: ${cases.length} configuration${cases.length === 1 ? '' : 's'} measured.`;
  $('table').innerHTML = htmlTable(rows);
  $('chart').innerHTML = svgChart(rows, device);
  const markdown = markdownTable(rows, device, ['peers (tfjs, PyTorch): run `pnpm bench` in Node for them']);
  $<HTMLTextAreaElement>('markdown').value = markdown;
  const json = JSON.stringify({ device, path: results.path, date: new Date().toISOString(), rows }, null, 2);
  $<HTMLTextAreaElement>('json').value = json;
  const copy = $<HTMLButtonElement>('copy');
  copy.disabled = false;
  copy.onclick = () => navigator.clipboard.writeText(json);
  const copyMarkdown = $<HTMLButtonElement>('copy-md');
  copyMarkdown.disabled = false;
  copyMarkdown.onclick = () => navigator.clipboard.writeText(markdown);
}

async function main(): Promise<void> {
  let device = 'no adapter';
  try {
    device = await showAdapter();
    await checkCorrectness();
    const quick = auto === 'quick';
    const form = $<HTMLFormElement>('bench-form');
    form.onsubmit = (event) => {
      event.preventDefault();
      const data = new FormData(form);
      const dim = Number(data.get('dim'));
      const ranks = String(data.get('ranks')).split(',').map(Number);
      void runBench(
        device,
        ranks.map((r) => ({ M: Number(data.get('M')), inF: dim, outF: dim, r })),
      );
    };
    if (auto) {
      await runBench(device, quick ? [{ M: 64, inF: 128, outF: 128, r: 8 }] : [8, 16, 32].map((r) => ({ M: 2048, inF: 4096, outF: 4096, r })));
    }
  } catch (error) {
    results.error = (error as Error).message;
    $('summary').textContent = `error: ${(error as Error).message}`;
  } finally {
    w.__done = true;
  }
}

void main();
