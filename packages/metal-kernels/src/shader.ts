import { GPUError } from '@metal-lora/tensor';
import { wgslPieces } from './wgsl/lib';

const INCLUDE = /\{\{>([\w-]+)\}\}/g;

/**
 * Fills `{{NAME}}` placeholders of a WGSL source (element types, `enable f16;`) and keeps or
 * drops sections: `{{#NAME}}…{{/NAME}}` stays when NAME is '1', `{{^NAME}}…{{/NAME}}` when it
 * is '0' (for code that only type-checks in one variant, such as a binding's element type);
 * sections of different names may nest.
 * `{{>name}}` (anywhere, comments included) is replaced by the shared WGSL piece
 * `src/wgsl/lib/<name>.wgsl` without its trailing newlines, taken from `pieces` (by default the
 * static table of imported sources in `src/wgsl/lib/index.ts`: nothing is read from disk at run
 * time). Includes are resolved first, so a piece may include others and use placeholders and
 * sections, and an include inside a section is dropped with it.
 * Throws when an include names no piece or includes itself, a placeholder is left over, a
 * section's value is not 0 or 1, or a substitution is unused, so a typo never reaches the compiler.
 */
export function specialize(kernel: string, source: string, values: Record<string, string>, pieces: Readonly<Record<string, string>> = wgslPieces): string {
  const included = include(kernel, source, pieces, []);
  const used = new Set<string>();
  // Sections of other names may nest: each pass resolves the outermost ones, until none is left.
  let sectioned = included;
  for (let previous = ''; previous !== sectioned; ) {
    previous = sectioned;
    sectioned = sectioned.replace(/\{\{([#^])(\w+)\}\}([\s\S]*?)\{\{\/\2\}\}/g, (whole, kind: string, name: string, body: string) => {
      if (!(name in values)) return whole;
      const v = values[name];
      if (v !== '0' && v !== '1') throw new GPUError(kernel, 'internal', `shader section ${name} needs '0' or '1'; expected a flag, got '${v}'`);
      used.add(name);
      return (kind === '#') === (v === '1') ? body : '';
    });
  }
  const out = sectioned.replace(/\{\{(\w+)\}\}/g, (whole, name: string) => {
    if (!(name in values)) return whole;
    used.add(name);
    return values[name];
  });
  const leftover = out.match(/\{\{[#^/]?\w+\}\}/);
  if (leftover)
    throw new GPUError(
      kernel,
      'internal',
      `shader placeholder ${leftover[0]} has no value; expected values for every placeholder, got ${Object.keys(values).join(', ') || 'none'}`,
    );
  // A section nested in a dropped one counts as used: the template names it.
  const unused = Object.keys(values).filter((k) => !used.has(k) && !included.includes(`{{#${k}}}`) && !included.includes(`{{^${k}}}`));
  if (unused.length)
    throw new GPUError(kernel, 'internal', `substitutions ${unused.join(', ')} match no placeholder; expected each to be used, got unused ones`);
  return out;
}

/** `text` with its `{{>name}}` includes replaced by their pieces, recursively; `chain` holds the pieces being included. */
function include(kernel: string, text: string, pieces: Readonly<Record<string, string>>, chain: string[]): string {
  return text.replace(INCLUDE, (_, name: string) => {
    if (!Object.hasOwn(pieces, name))
      throw new GPUError(
        kernel,
        'internal',
        `shader include {{>${name}}} names no WGSL piece; expected one of ${Object.keys(pieces).join(', ') || 'none'}, got '${name}'`,
      );
    if (chain.includes(name))
      throw new GPUError(
        kernel,
        'internal',
        `shader include {{>${name}}} includes itself; expected pieces without cycles, got ${[...chain, name].join(' > ')}`,
      );
    return include(kernel, pieces[name].replace(/\n+$/, ''), pieces, [...chain, name]);
  });
}
