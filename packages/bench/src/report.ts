/** The benchmark's table and chart (browser-safe). */
import type { LoraCase, LoraResult } from './lora-core';
import type { PeerTimes } from './peers-types';

export interface Row extends LoraResult {
  tfjs?: PeerTimes;
  torch?: PeerTimes & { baseMs: number; peakBytes: number };
}

export const key = (c: LoraCase) => `${c.M}x${c.inF}x${c.outF}r${c.r}`;

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

/** `text` safe inside HTML or SVG text and attributes. */
export const escapeHtml = (text: string) => text.replace(/[<&>"]/g, (c) => ({ '<': '&lt;', '&': '&amp;', '>': '&gt;', '"': '&quot;' })[c] as string);

/**
 * The rows as an HTML table (the page's), with the fused layer's times against its own base
 * product; a note says what a ratio below 1.0× means where one occurs.
 */
export function htmlTable(rows: Row[]): string {
  const head = [
    'shape (M × in × out)',
    'r',
    'base x·Wᵀ',
    'forward unfused',
    'forward fused',
    'fused / base',
    'forward speed-up',
    'step unfused',
    'step fused',
    'step speed-up',
    'peak MB unfused → fused',
  ];
  const body = rows.map((r) => [
    `${r.M} × ${r.inF} × ${r.outF}`,
    String(r.r),
    fmt(r.baseMs),
    fmt(r.unfusedFwdMs),
    fmt(r.fusedFwdMs),
    `${(r.fusedFwdMs / r.baseMs).toFixed(2)}×`,
    `${(r.unfusedFwdMs / r.fusedFwdMs).toFixed(2)}×`,
    fmt(r.unfusedStepMs),
    fmt(r.fusedStepMs),
    `${(r.unfusedStepMs / r.fusedStepMs).toFixed(2)}×`,
    `${(r.unfusedPeakBytes / 1e6).toFixed(1)} → ${(r.fusedPeakBytes / 1e6).toFixed(1)}`,
  ]);
  const below = rows.some((r) => r.fusedFwdMs < r.baseMs);
  const note = below
    ? '<p class="note">A fused forward below 1.0× of its base product is measurement noise: the fused layer does the base product\'s work and more, so the two times differ by less than the timer resolves here. Larger shapes (or a quieter machine) separate them.</p>'
    : '';
  return `<table class="results"><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${body
    .map((cells) => `<tr>${cells.map((c) => `<td>${escapeHtml(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table><p class="note">Times in ms, median of 7 timed trials. Speed-up = unfused / fused.</p>${note}`;
}

/** Round axis ticks from 0 past `max`: 4 or 5 steps of 1, 2 or 5 × 10ⁿ. */
function ticks(max: number): number[] {
  const raw = max / 4;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  const out: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/** A grouped bar chart of the training step's time per row (ms, lower is better), with a y-axis; the legend lists the series that have bars. */
export function svgChart(rows: Row[], device: string): string {
  const all: [string, string, (r: Row) => number | undefined][] = [
    ['unfused', '#9aa5b1', (r) => r.unfusedStepMs],
    ['fused', '#2f80ed', (r) => r.fusedStepMs],
    ['tfjs', '#f2994a', (r) => r.tfjs?.stepMs],
    ['PyTorch', '#27ae60', (r) => r.torch?.stepMs],
  ];
  const measured = (v: number | undefined) => v !== undefined && !Number.isNaN(v);
  const series = all.filter(([, , f]) => rows.some((r) => measured(f(r))));
  const barW = 22;
  const groupW = Math.max(120, series.length * (barW + 2) + 30);
  const h = 220;
  const left = 70;
  const top = 28;
  const axis = ticks(Math.max(...rows.flatMap((r) => series.map(([, , f]) => f(r) ?? 0)), 1e-9));
  const max = axis[axis.length - 1];
  const width = Math.max(640, left + 20 + rows.length * groupW);
  const y = (v: number) => top + h - (v / max) * h;
  const grid = axis
    .map(
      (v) =>
        `<line x1="${left - 4}" y1="${y(v).toFixed(1)}" x2="${width - 10}" y2="${y(v).toFixed(1)}" stroke="${v === 0 ? '#333' : '#e3e7eb'}"/><text x="${left - 8}" y="${(y(v) + 4).toFixed(1)}" font-size="11" text-anchor="end">${+v.toPrecision(3)}</text>`,
    )
    .join('\n');
  const bars = rows
    .map((r, i) => {
      const group = series
        .map(([name, color, f], j) => {
          const v = f(r);
          if (!measured(v)) return '';
          const x = left + 10 + i * groupW + j * (barW + 2);
          return `<rect x="${x}" y="${y(v as number).toFixed(1)}" width="${barW}" height="${(((v as number) / max) * h).toFixed(1)}" fill="${color}"><title>${name}: ${fmt(v)} ms</title></rect>`;
        })
        .join('');
      return `${group}<text x="${left + 10 + i * groupW}" y="${top + h + 16}" font-size="11">${r.M}×${r.inF}×${r.outF} r=${r.r}</text>`;
    })
    .join('\n');
  const legend = series
    .map(
      ([name, color], j) =>
        `<rect x="${left + j * 90}" y="${top + h + 30}" width="10" height="10" fill="${color}"/><text x="${left + 14 + j * 90}" y="${top + h + 39}" font-size="11">${name}</text>`,
    )
    .join('');
  const title = `LoRA training step (forward + backward), ms, lower is better: ${escapeHtml(device)}`;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${top + h + 52}" font-family="sans-serif" role="img">
<title>${title}</title>
<text x="10" y="14" font-size="12">${title}</text>
<text x="14" y="${top + h / 2}" font-size="11" transform="rotate(-90 14 ${top + h / 2})" text-anchor="middle">ms per step</text>
${grid}
${bars}
${legend}
</svg>
`;
}
