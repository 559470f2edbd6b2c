import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';

/** WGSL has no imports, so the dropout hash is written twice; this keeps the copies identical. */
it('the WGSL copies of the dropout hash are identical and use the tensor package constants', () => {
  const fn = (file: string) => {
    const src = readFileSync(new URL(`../src/wgsl/${file}`, import.meta.url), 'utf8');
    return src.slice(src.indexOf('fn mix32('), src.indexOf('}', src.indexOf('fn mix32(')) + 1);
  };
  const a = fn('dropout.wgsl');
  expect(a).toContain('0x7feb352du');
  expect(a).toContain('0x846ca68bu');
  expect(fn('gemm-vec4.wgsl')).toBe(a);
  const random = readFileSync(new URL('../../tensor/src/random.ts', import.meta.url), 'utf8');
  for (const constant of ['0x7feb352d', '0x846ca68b', '0x9e3779b9']) expect(random).toContain(constant);
  for (const file of ['dropout.wgsl', 'gemm-vec4.wgsl']) expect(readFileSync(new URL(`../src/wgsl/${file}`, import.meta.url), 'utf8')).toContain('0x9e3779b9u');
});
