import { describe, expect, it } from 'vitest';
import { specialize } from '../src/internal';

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
