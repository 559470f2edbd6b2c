import { GPUError } from '@metal-lora/tensor';

/**
 * Fills `{{NAME}}` placeholders of a WGSL source (element types, `enable f16;`). Throws when a
 * placeholder is left over or a substitution is unused, so a typo never reaches the compiler.
 */
export function specialize(kernel: string, source: string, values: Record<string, string>): string {
  const used = new Set<string>();
  const out = source.replace(/\{\{(\w+)\}\}/g, (whole, name: string) => {
    if (!(name in values)) return whole;
    used.add(name);
    return values[name];
  });
  const leftover = out.match(/\{\{\w+\}\}/);
  if (leftover) throw new GPUError(kernel, 'internal', `shader placeholder ${leftover[0]} has no value; expected values for every placeholder, got ${Object.keys(values).join(', ') || 'none'}`);
  const unused = Object.keys(values).filter((k) => !used.has(k));
  if (unused.length) throw new GPUError(kernel, 'internal', `substitutions ${unused.join(', ')} match no placeholder; expected each to be used, got unused ones`);
  return out;
}
