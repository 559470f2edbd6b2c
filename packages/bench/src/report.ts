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
  const width = Math.max(640, 80 + rows.length * groupW);
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
  const legend = series
    .map(
      ([name, color], j) =>
        `<rect x="${60 + j * 90}" y="${h + 50}" width="10" height="10" fill="${color}"/><text x="${74 + j * 90}" y="${h + 59}" font-size="11">${name}</text>`,
    )
    .join('');
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
