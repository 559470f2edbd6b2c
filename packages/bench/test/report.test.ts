import { describe, expect, it } from 'vitest';
import { htmlTable, markdownTable, svgChart } from '../src/report';

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
  it('the SVG chart has one bar per measured series, a y-axis in ms, a legend of those series only, and escapes the device name', () => {
    const svg = svgChart([row], 'a <b> & c');
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<rect [^>]*><title>/g)).toHaveLength(3); // unfused, fused, PyTorch bars (no tfjs)
    expect(svg).not.toContain('<b>');
    expect(svg).toContain('ms per step');
    // Ticks of 2 ms up to 6 for a largest bar of 4.2 ms.
    for (const tick of ['0', '2', '4', '6']) expect(svg).toContain(`text-anchor="end">${tick}</text>`);
    expect(svg).not.toContain('text-anchor="end">8</text>');
    expect(svg).toContain('>PyTorch</text>');
    expect(svg).not.toContain('>tfjs</text>');
    const bare = svgChart([{ ...row, torch: undefined }], 'x');
    expect(bare).not.toContain('>PyTorch</text>');
    expect(bare.match(/<rect [^>]*><title>/g)).toHaveLength(2);
  });
  it('the HTML table shows the fused layer against its base and explains a ratio below 1.0×', () => {
    const table = htmlTable([row]);
    expect(table).toContain('<td>2048 × 4096 × 4096</td><td>8</td><td>1.90</td><td>2.15</td><td>2.00</td><td>1.05×</td><td>1.07×</td>');
    expect(table).not.toContain('measurement noise');
    const noisy = htmlTable([{ ...row, fusedFwdMs: 1.7 }]);
    expect(noisy).toContain('<td>0.89×</td>');
    expect(noisy).toContain('measurement noise');
  });
});
