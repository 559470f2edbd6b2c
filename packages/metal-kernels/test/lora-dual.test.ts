import { assertClose, randomValues, scaledTolerance, TOLERANCES } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import type { WebGPUBackend } from '../src/index';
import { type LoraDualRoles, loraDualApplies, loraDualGrid, recordLoraDual } from '../src/internal';
import { gpuIt } from '../../../test-support/gpu';

describe('loraDualGrid (pure)', () => {
  it.each([
    [2048, 4096],
    [130, 300],
    [17, 64],
    [2048, 132],
  ])('M=%i N=%i: whole tiles per chunk, chunks cover N exactly once', (M, N) => {
    const { blocks, chunks, nChunk } = loraDualGrid(M, N);
    expect(blocks).toBe(Math.ceil(M / 64));
    expect(nChunk % 64).toBe(0);
    expect(chunks).toBe(Math.ceil(N / nChunk));
    expect((chunks - 1) * nChunk).toBeLessThan(N);
  });
  it('applies to f32 ranks 4..64 divisible by 4, N % 4 = 0, M > 16', () => {
    expect(loraDualApplies(2048, 4096, 64, 'float32')).toBe(true);
    expect(loraDualApplies(2048, 4096, 128, 'float32')).toBe(false);
    expect(loraDualApplies(2048, 4096, 6, 'float32')).toBe(false);
    expect(loraDualApplies(2048, 4098, 8, 'float32')).toBe(false);
    expect(loraDualApplies(16, 4096, 8, 'float32')).toBe(false);
    expect(loraDualApplies(2048, 4096, 8, 'float16')).toBe(false);
  });
});

/** U = s·dy·B and dB = s·dyᵀ·T against float64 sums on the host, workspaces poisoned first. */
async function checkDual(backend: WebGPUBackend, M: number, N: number, r: number, roles: LoraDualRoles = 'shared'): Promise<void> {
  const s = 0.625;
  const [dy, b, t] = [randomValues(M * N, 71), randomValues(N * r, 72), randomValues(M * r, 73)];
  const up = (v: Float64Array) => (backend.upload(Float32Array.from(v), 'float32') as { buffer: GPUBuffer }).buffer;
  // Leave NaN-filled buffers of the workspaces' sizes in the pool: a partial sum the kernel fails
  // to write then shows up as NaN.
  const { blocks, chunks } = loraDualGrid(M, N);
  for (const bytes of [chunks * M * r * 4, blocks * N * r * 4]) {
    const poisoned = backend.acquire(bytes, 'poisoned workspace');
    backend.device.queue.writeBuffer(poisoned, 0, new Uint32Array(poisoned.size / 4).fill(0x7fc00000));
    backend.release(poisoned);
  }
  const [dyb, bb, tb] = [up(dy), up(b), up(t)];
  const { u, dB } = recordLoraDual(backend, dyb, bb, tb, M, N, r, s, roles);
  const gotU = await backend.read(u, 'float32', M * r);
  const gotB = await backend.read(dB, 'float32', N * r);
  const wantU = new Float64Array(M * r);
  const wantB = new Float64Array(N * r);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const d = dy[m * N + n];
      for (let j = 0; j < r; j++) {
        wantU[m * r + j] += s * d * b[n * r + j];
        wantB[n * r + j] += s * d * t[m * r + j];
      }
    }
  }
  for (const x of [dyb, bb, tb, u.buffer, dB.buffer]) backend.release(x);
  assertClose(gotU, wantU, scaledTolerance(TOLERANCES.float32Gemm, wantU), `lora-dual U M=${M} N=${N} r=${r} ${roles}`);
  assertClose(gotB, wantB, scaledTolerance(TOLERANCES.float32Gemm, wantB), `lora-dual dB M=${M} N=${N} r=${r} ${roles}`);
}

describe('webgpu lora-dual: U and dB from one read of dy', () => {
  for (const r of [4, 8, 12, 16, 20, 32, 64]) {
    gpuIt(`r=${r}: rows and columns not multiples of the 64×64 tile, several chunks, both role layouts`, async (backend) => {
      for (const roles of ['shared', 'split'] as const) {
        await checkDual(backend, 130, 300, r, roles);
        await checkDual(backend, 17, 68, r, roles);
      }
    });
  }
  gpuIt('many blocks and chunks (M=700, N=1100, r=8)', (backend) => checkDual(backend, 700, 1100, 8));
});
