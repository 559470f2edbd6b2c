import { createWebGPUBackend } from '@metal-lora/metal-kernels';
import { describe, expect } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';
import { clockWarmerLine, timeKernel } from '../src/timing';
import copySource from '../src/wgsl/copy-vec4.wgsl';

describe('GPU timing of the benchmarks', () => {
  gpuIt(
    'uses the clock warmer only on hardware adapters, and times a kernel either way',
    async (backend, ctx) => {
      const { report } = backend.context;
      if (!report.timestampQuery) ctx.skip('the adapter has no timestamp-query: nothing to time with');
      expect(await clockWarmerLine(backend, true)).toBe('clock warmer: off (--no-warm)');
      const line = await clockWarmerLine(backend, false);
      if (report.software) expect(line).toBe('clock warmer: not used (software adapter, or no timestamps)');
      else expect(line).toMatch(/^clock warmer: a ~60 ms spin \(\d+ iterations\) before each timed region$/);
      // A copy of 64 KiB, timed: positive, finite, and the median lies within the trials' spread.
      const n = 4096;
      const src = backend.acquire(n * 16, 'timing src');
      const dst = backend.acquire(n * 16, 'timing dst');
      const b = backend;
      const run = () =>
        b.dispatch({
          key: 'copy-vec4',
          source: copySource,
          buffers: [src, dst],
          constants: { PER: 1 },
          uniform: new Uint32Array([n, 16, 0, 0]).buffer,
          workgroups: [16, 1, 1],
          label: 'timing copy',
        });
      const { ms, spread, minMs } = await timeKernel(backend, run);
      expect(Number.isFinite(ms) && ms > 0).toBe(true);
      expect(minMs).toBeLessThanOrEqual(ms);
      expect(ms - minMs).toBeLessThanOrEqual(spread);
      backend.release(src);
      backend.release(dst);
    },
    { timeout: 120_000, open: () => createWebGPUBackend({ preciseTimestamps: true }) },
  );
});
