import * as T from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';
import { attentionTable, measureAttention, runAttentionBench } from '../src/attention-bench';

describe('attention benchmark (reduced: the tiny shape)', () => {
  gpuIt('times fused and composed attention on webgpu: the same gradients, and the fused peak below the kept one', async (backend) => {
    T.setBackendSync(backend);
    const row = await measureAttention(backend, 'tiny', 2, 40);
    const timings = [row.ours.fused, row.ours.recomputed, row.ours.kept].map((t) => (typeof t === 'string' ? expect.fail(t) : t));
    for (const t of timings) {
      expect(t.ms).toBeGreaterThan(0);
      expect(t.peakBytes).toBeGreaterThan(0);
      expect(t.relError).toBeLessThan(1e-4);
    }
    const [fused, , kept] = timings;
    expect(fused.relError).toBe(0);
    // The kept path holds [2, 2, 2·40, 40] probabilities from forward to backward; fused holds no scores.
    expect(fused.peakBytes).toBeLessThan(kept.peakBytes - 2 * 2 * 80 * 40 * 4);
    const table = attentionTable([{ ...row, torch: 'pytorch: not here' }], 'a test GPU', '2026-12-04');
    expect(table).toContain('on a test GPU, 2026-12-04');
    expect(table).toMatch(/\| tiny \| 2 × 40 \| [\d.]+ \| [\d.]+ \|/);
    expect(table).toContain('pytorch: not here');
    // A composed path the backend refused is named in a note, not timed.
    const refused = attentionTable([{ ...row, ours: { ...row.ours, kept: 'matmul out: buffer too large' } }], 'a test GPU', '2026-12-04');
    expect(refused).toMatch(/\| refused \(1\) \| – \|/);
    expect(refused).toContain('(1) matmul out: buffer too large');
  });

  it('runs on the CPU backend from the command line, and refuses unknown shapes and values', async () => {
    const { rows, table } = await runAttentionBench(['--backend', 'cpu', '--models', 'tiny', '--batch', '1', '--seq', '9,12', '--no-peers']);
    expect(rows.map((r) => r.seq)).toEqual([9, 12]);
    for (const r of rows) expect(typeof r.ours.recomputed === 'object' && r.ours.recomputed.relError).toBeLessThan(1e-5);
    expect(table).toContain('| tiny | 1 × 12 |');
    await expect(runAttentionBench(['--backend', 'cpu', '--models', 'gpt-5'])).rejects.toThrow("metal-lora-bench attention: unknown model shape 'gpt-5'");
    await expect(runAttentionBench(['--backend', 'cpu', '--seq', '0'])).rejects.toThrow('metal-lora-bench attention: --seq must be positive integers');
  });
});
