import { describe, expect, it } from 'vitest';
import { markdownTable, svgChart } from '../src/report';

const row = {
  M: 2048,
  inF: 4096,
  outF: 4096,
  r: 8,
  baseMs: 1.9,
  unfusedFwdMs: 2.15,
  fusedFwdMs: 2.0,
  unfusedStepMs: 4.2,
  fusedStepMs: 4.1,
  composedFwdMs: 2.0,
  composedStepMs: 4.1,
  unfusedPeakBytes: 235.2e6,
  fusedPeakBytes: 69.5e6,
  maxRelDiff: 1e-3,
  spreadMs: { base: 0.01, unfusedFwd: 0.01, fusedFwd: 0.01, unfusedStep: 0.02, fusedStep: 0.02 },
  torch: { fwdMs: 1.45, stepMs: 3.0, baseMs: 1.4, peakBytes: 1e8 },
};

describe('bench report', () => {
  it('the markdown table names the device and shows speed-ups, peers and missing peers', () => {
    const table = markdownTable([row], 'NVIDIA H200 (WebGPU via node-dawn)', ['tfjs: not measured']);
    expect(table).toContain('Device: NVIDIA H200 (WebGPU via node-dawn)');
    expect(table).toContain('| 2048 × 4096 × 4096 | 8 | 2.15 | 2.00 | 1.07× | — | 1.45 | 4.20 | 4.10 | 1.02× | — | 3.00 | 235.2 → 69.5 (0.30×) |');
    expect(table).toContain('- tfjs: not measured');
  });
  it('the SVG chart has one bar per measured series and escapes the device name', () => {
    const svg = svgChart([row], 'a <b> & c');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<rect [^>]*><title>/g)).toHaveLength(3); // unfused, fused, PyTorch bars (no tfjs)
    expect(svg).not.toContain('<b>');
  });
});
