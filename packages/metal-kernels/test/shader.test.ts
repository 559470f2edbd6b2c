import { readdirSync, readFileSync } from 'node:fs';
import { GPUError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { specialize } from '../src/internal';
import { wgslPieces } from '../src/wgsl/lib';

describe('specialize (pure)', () => {
  const source = 'a {{T}};\n{{#VEC}}vec {{T}}{{/VEC}}{{^VEC}}scalar{{/VEC}}\nend';
  it('fills placeholders and keeps the section its flag selects', () => {
    expect(specialize('k', source, { T: 'f32', VEC: '1' })).toBe('a f32;\nvec f32\nend');
    expect(specialize('k', source, { T: 'f16', VEC: '0' })).toBe('a f16;\nscalar\nend');
  });
  it('refuses a section flag that is not 0 or 1, a missing value and an unused one', () => {
    expect(() => specialize('k', source, { T: 'f32', VEC: 'yes' })).toThrow(/shader section VEC needs '0' or '1'/);
    expect(() => specialize('k', source, { T: 'f32' })).toThrow(/placeholder \{\{#VEC\}\} has no value/);
    expect(() => specialize('k', source, { T: 'f32', VEC: '1', EXTRA: 'x' })).toThrow(/substitutions EXTRA match no placeholder/);
  });
  it('resolves nested sections of other names, and a flag inside a dropped section counts as used', () => {
    const nested = '{{#OUTER}}o{{#INNER}}i{{/INNER}}{{^INNER}}j{{/INNER}}{{/OUTER}}.';
    expect(specialize('k', nested, { OUTER: '1', INNER: '1' })).toBe('oi.');
    expect(specialize('k', nested, { OUTER: '1', INNER: '0' })).toBe('oj.');
    expect(specialize('k', nested, { OUTER: '0', INNER: '1' })).toBe('.');
  });
});

describe('specialize includes (pure)', () => {
  const pieces = {
    head: '// head {{T}}\n{{>body}}\n',
    body: '{{#VEC}}vec{{/VEC}}{{^VEC}}scalar{{/VEC}} {{T}}\n\n',
    loop: 'a {{>loop}}',
  };
  it('splices a piece in for {{>name}}, without its trailing newlines, before sections and placeholders', () => {
    expect(specialize('k', 'start\n{{>head}}\nend', { T: 'f32', VEC: '1' }, pieces)).toBe('start\n// head f32\nvec f32\nend');
    expect(specialize('k', 'start\n{{>body}}\nend', { T: 'f16', VEC: '0' }, pieces)).toBe('start\nscalar f16\nend');
  });
  it('drops an include with the section around it, and its flags still count as used', () => {
    expect(specialize('k', '{{#ON}}{{>body}}{{/ON}}.', { ON: '0', VEC: '1' }, pieces)).toBe('.');
    expect(specialize('k', '{{#ON}}{{>body}}{{/ON}}.', { ON: '1', T: 'f32', VEC: '1' }, pieces)).toBe('vec f32.');
  });
  it("refuses an unknown piece, a cycle, and a piece's placeholder without a value", () => {
    expect(() => specialize('k', '{{>nope}}', {}, pieces)).toThrow(GPUError);
    expect(() => specialize('k', '{{>nope}}', {}, pieces)).toThrow(
      /shader include \{\{>nope\}\} names no WGSL piece; expected one of head, body, loop, got 'nope'/,
    );
    expect(() => specialize('k', '{{>toString}}', {}, pieces)).toThrow(/names no WGSL piece/);
    expect(() => specialize('k', '{{>loop}}', {}, pieces)).toThrow(
      /shader include \{\{>loop\}\} includes itself; expected pieces without cycles, got loop > loop/,
    );
    expect(() => specialize('k', '{{>body}}', { T: 'f32' }, pieces)).toThrow(/placeholder \{\{#VEC\}\} has no value/);
  });
  it('resolves every include of the kernels from the static table, which holds every file of src/wgsl/lib', () => {
    const dir = new URL('../src/wgsl/', import.meta.url);
    const files = readdirSync(new URL('lib/', dir)).filter((f) => f.endsWith('.wgsl'));
    expect(Object.keys(wgslPieces).sort()).toEqual(files.map((f) => f.slice(0, -'.wgsl'.length)).sort());
    for (const f of files) expect(wgslPieces[f.slice(0, -'.wgsl'.length)]).toBe(readFileSync(new URL(`lib/${f}`, dir), 'utf8'));
    const names = readdirSync(dir)
      .filter((f) => f.endsWith('.wgsl'))
      .flatMap((f) => [...readFileSync(new URL(f, dir), 'utf8').matchAll(/\{\{>([\w-]+)\}\}/g)].map((m) => m[1]));
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) expect(Object.keys(wgslPieces)).toContain(name);
    expect(specialize('k', '{{>counter-hash}}', {})).toContain('fn random_bits(key: u32, counter: u32) -> u32');
  });
});
