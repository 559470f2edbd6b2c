import { GPUError } from '@metal-lora/tensor';

/**
 * Fills `{{NAME}}` placeholders of a WGSL source (element types, `enable f16;`) and keeps or
 * drops sections: `{{#NAME}}…{{/NAME}}` stays when NAME is '1', `{{^NAME}}…{{/NAME}}` when it
 * is '0' (for code that only type-checks in one variant, such as a binding's element type);
 * sections of different names may nest.
 * Throws when a placeholder is left over, a section's value is not 0 or 1, or a substitution is
 * unused, so a typo never reaches the compiler.
 */
export function specialize(kernel: string, source: string, values: Record<string, string>): string {
  const used = new Set<string>();
  // Sections of other names may nest: each pass resolves the outermost ones, until none is left.
  let sectioned = source;
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
  const unused = Object.keys(values).filter((k) => !used.has(k) && !source.includes(`{{#${k}}}`) && !source.includes(`{{^${k}}}`));
  if (unused.length)
    throw new GPUError(kernel, 'internal', `substitutions ${unused.join(', ')} match no placeholder; expected each to be used, got unused ones`);
  return out;
}
