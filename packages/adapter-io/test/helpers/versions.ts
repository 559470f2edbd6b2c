import type { LoraAdapter } from '../../src/index';

/** An adapter whose every value, and its scale, say which version it is (1, 2, ...). About 2 MB. */
export function versionedAdapter(version: number): LoraAdapter {
  const mod = (seed: number) => ({
    inFeatures: 512,
    outFeatures: 512,
    a: Float32Array.from({ length: 8 * 512 }, (_, i) => version * 1000 + ((seed + i) % 97)),
    b: Float32Array.from({ length: 512 * 8 }, (_, i) => -version * 1000 - ((seed + i) % 89)),
  });
  const modules: LoraAdapter['modules'] = {};
  for (let l = 0; l < 8; l++) modules[`model.layers.${l}.self_attn.q_proj`] = mod(l);
  return { rank: 8, scale: version, dropout: 0, numLayers: 8, keys: ['self_attn.q_proj'], dtype: 'F32', modules };
}

/** Which version a loaded adapter is, checking that every value agrees (a mix throws). */
export function versionOf(adapter: LoraAdapter): number {
  const v = adapter.scale;
  for (const [path, w] of Object.entries(adapter.modules)) {
    if (Math.round(w.a[0] / 1000) !== v || Math.round(-w.b[w.b.length - 1] / 1000) !== v) throw new Error(`'${path}' is not all version ${v}`);
  }
  return v;
}
