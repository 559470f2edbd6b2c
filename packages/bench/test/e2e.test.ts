import * as T from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';
import { e2eTable, runE2EBench, timeTrainingSteps } from '../src/e2e-bench';

const small = { models: ['tiny'], batch: 2, seq: 16, rank: 4, steps: 2, warmup: 1 };

describe('e2e training-step benchmark (reduced: the tiny shape)', () => {
  gpuIt('times LoRA steps on webgpu: the loss falls, and host work and GPU time are counted', async (backend) => {
    T.setBackendSync(backend);
    const row = await timeTrainingSteps('tiny', small);
    expect(row.losses).toHaveLength(3);
    for (const l of row.losses) expect(Number.isFinite(l)).toBe(true);
    expect(row.losses[2]).toBeLessThan(row.losses[0]);
    expect(row.stepMs).toBeGreaterThan(0);
    expect(row.tokensPerSecond).toBeCloseTo(32 / (row.stepMs / 1000), 6);
    expect(row.dispatches).toBeGreaterThan(20);
    expect(row.peakBytes).toBeGreaterThan(0);
    expect(row.trainable).toBeLessThan(row.parameters);
    if (backend.context.report.timestampQuery) {
      expect(row.kernelMs).toBeGreaterThan(0);
      expect(row.topKernels?.length).toBeGreaterThan(5);
      expect(row.kernelMs).toBeGreaterThanOrEqual(row.topKernels!.reduce((a, k) => a + k.ms, 0) - 1e-9);
    }
    const table = e2eTable([{ ...row, torch: 'pytorch: not here' }], 'a test GPU', small, '2026-12-02');
    expect(table).toContain('LoRA training step on a test GPU, 2026-12-02: batch 2 × 16 tokens, rank 4');
    expect(table).toMatch(/\| tiny \| [\d.]+ \| [\d.]+ \|/);
    expect(table).toContain('pytorch: not here');
  });

  it('runs on the CPU backend from the command line, and refuses unknown shapes and flags', async () => {
    const { rows, table } = await runE2EBench([
      '--backend',
      'cpu',
      '--models',
      'tiny',
      '--batch',
      '1',
      '--seq',
      '8',
      '--steps',
      '1',
      '--warmup',
      '1',
      '--no-peers',
    ]);
    expect(rows[0].dispatches).toBeUndefined();
    expect(rows[0].losses.every(Number.isFinite)).toBe(true);
    expect(table).toContain('| tiny |');
    // Losses read every 2 steps, as `metal-lora train` reports: the same losses as reading each step.
    const args = ['--backend', 'cpu', '--models', 'tiny', '--batch', '1', '--seq', '8', '--steps', '3', '--warmup', '2', '--no-peers'];
    const each = (await runE2EBench(args)).rows[0];
    const piped = await runE2EBench([...args, '--steps-per-report', '2']);
    expect(piped.rows[0].losses).toEqual(each.losses);
    expect(piped.rows[0].losses).toHaveLength(5);
    expect(piped.table).toContain('losses read every 2 steps, mean of 3 steps after 2');
    await expect(runE2EBench([...args, '--steps-per-report', '0'])).rejects.toThrow('--steps-per-report must be a positive integer');
    await expect(runE2EBench(['--backend', 'cpu', '--models', 'gpt-5'])).rejects.toThrow("metal-lora-bench e2e: unknown model shape 'gpt-5'");
    await expect(runE2EBench(['--learning-rate', '1'])).rejects.toThrow(/learning-rate/);
    await expect(runE2EBench(['--backend', 'cpu', '--steps', '0'])).rejects.toThrow('metal-lora-bench e2e: --steps must be a positive integer');
  });
});
