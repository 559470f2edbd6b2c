import { type CreateOptions, type Tensor, tensor, ValueError } from '@metal-lora/tensor';
import type { LoraAdapter } from './adapters';

/** One layer's LoRA factors as tensors: A `[r, in]`, B `[out, r]` (what `loraLinear` takes). */
export interface LoraTensors {
  loraA: Tensor;
  loraB: Tensor;
}

/**
 * The adapter's factors as tensors by module path, on the current (or given) backend, ready for
 * `loraLinear(x, weight, loraA, loraB, { scale: adapter.scale })`.
 */
export function adapterTensors(adapter: LoraAdapter, options: Omit<CreateOptions, 'dtype'> = {}): Record<string, LoraTensors> {
  const out: Record<string, LoraTensors> = Object.create(null);
  for (const [path, w] of Object.entries(adapter.modules)) {
    out[path] = {
      loraA: tensor(w.a, [adapter.rank, w.inFeatures], { ...options, dtype: 'float32' }),
      loraB: tensor(w.b, [w.outFeatures, adapter.rank], { ...options, dtype: 'float32' }),
    };
  }
  return out;
}

/**
 * An adapter from trained factors by module path (reads them from their backend). `numLayers`
 * defaults to the span of blocks present, `keys` to their block-relative paths.
 */
export async function adapterFromTensors(
  layers: Record<string, LoraTensors>,
  options: { scale: number; dropout?: number; numLayers?: number; keys?: string[] | null; dtype?: LoraAdapter['dtype'] },
): Promise<LoraAdapter> {
  const op = 'adapterFromTensors';
  const paths = Object.keys(layers);
  if (paths.length === 0) throw new ValueError(op, 'no layers given', 'at least one module path', 'none');
  let rank = -1;
  const modules: LoraAdapter['modules'] = Object.create(null);
  for (const path of paths) {
    const { loraA, loraB } = layers[path];
    if (loraA.rank !== 2 || loraB.rank !== 2 || loraA.shape[0] !== loraB.shape[1]) {
      throw new ValueError(op, `layer '${path}' has mismatched factors`, 'loraA [r, in] and loraB [out, r]', `[${loraA.shape}] and [${loraB.shape}]`);
    }
    if (rank >= 0 && loraA.shape[0] !== rank) throw new ValueError(op, `layer '${path}' has another rank`, `${rank}`, `${loraA.shape[0]}`);
    rank = loraA.shape[0];
    modules[path] = {
      inFeatures: loraA.shape[1],
      outFeatures: loraB.shape[0],
      a: Float32Array.from(await loraA.data()),
      b: Float32Array.from(await loraB.data()),
    };
  }
  const blocks = paths
    .map((p) => /(?:^|\.)layers\.(\d+)\./.exec(p))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]));
  const relative = [...new Set(paths.map((p) => /(?:^|\.)layers\.\d+\.(.+)$/.exec(p)?.[1] ?? p))].sort();
  return {
    rank,
    scale: options.scale,
    dropout: options.dropout ?? 0,
    numLayers: options.numLayers ?? (blocks.length ? Math.max(...blocks) - Math.min(...blocks) + 1 : -1),
    keys: options.keys === undefined ? relative : options.keys,
    modules,
    dtype: options.dtype ?? 'F32',
  };
}
