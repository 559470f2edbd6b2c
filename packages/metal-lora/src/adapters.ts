import { adapterFromTensors, adapterTensors, type LoraAdapter } from '@metal-lora/adapter-io';
import { loadAdapter as loadAdapterDir, saveAdapter as saveAdapterDir } from '@metal-lora/adapter-io/node';
import { Linear, LoRALinear, mergeWeights as mergeLoRALayers, type Module } from '@metal-lora/nn';
import { add, FormatError, matmul, noGrad } from '@metal-lora/tensor';

/** The LoRA layers of a model by path (a lone layer is named `layer`). */
function loraLayers(target: Module): [string, LoRALinear][] {
  if (target instanceof LoRALinear) return [['layer', target]];
  return target.namedModules().filter(([, m]) => m instanceof LoRALinear) as [string, LoRALinear][];
}

/**
 * Saves the LoRA layers of a model (or one LoRALinear) as an adapter directory: MLX by default
 * (`adapters.safetensors` + `adapter_config.json`), or PEFT. Layers must share rank and scale.
 */
export async function saveAdapter(layerOrModel: Module, path: string, options: { format?: 'mlx' | 'peft'; numLayers?: number; keys?: string[] | null; baseModel?: string } = {}): Promise<LoraAdapter> {
  const layers = loraLayers(layerOrModel);
  if (layers.length === 0) throw new FormatError('saveAdapter', 'the model has no LoRA layers', {}, 'layers made by linearToLoRALayers or LoRALinear', 'none');
  const { scale, dropout } = layers[0][1];
  for (const [p, l] of layers) if (l.scale !== scale) throw new FormatError('saveAdapter', `layer '${p}' has another scale`, { key: p }, String(scale), String(l.scale));
  const adapter = await adapterFromTensors(Object.fromEntries(layers.map(([p, l]) => [p, { loraA: l.loraA, loraB: l.loraB }])), { scale, dropout, numLayers: options.numLayers, keys: options.keys });
  await saveAdapterDir(path, adapter, { format: options.format ?? 'mlx', baseModel: options.baseModel });
  return adapter;
}

/**
 * Loads an adapter directory (MLX or PEFT, detected) into a model: layers it names become
 * LoRALinear if they are plain Linear layers, and receive the adapter's factors and scale.
 */
export function loadAdapter(layerOrModel: Module, path: string): LoraAdapter {
  const adapter = loadAdapterDir(path);
  const tensors = adapterTensors(adapter);
  for (const [modulePath, factors] of Object.entries(tensors)) {
    let layer: Module | undefined = layerOrModel instanceof LoRALinear ? layerOrModel : layerOrModel.getModule(modulePath);
    if (!layer) throw new FormatError('loadAdapter', `the model has no module '${modulePath}'`, { key: modulePath }, 'a module path of this model', modulePath);
    if (!(layer instanceof LoRALinear)) {
      if (!(layer instanceof Linear)) throw new FormatError('loadAdapter', `'${modulePath}' is not a Linear layer`, { key: modulePath }, 'Linear', layer.constructor.name);
      const lora = LoRALinear.fromBase(layer, { rank: adapter.rank, scale: adapter.scale, dropout: adapter.dropout });
      layerOrModel.setModule(modulePath, lora);
      layer = lora;
    }
    const l = layer as LoRALinear;
    if (l.loraA.shape.join() !== factors.loraA.shape.join() || l.loraB.shape.join() !== factors.loraB.shape.join()) {
      throw new FormatError('loadAdapter', `adapter shapes do not fit '${modulePath}'`, { key: modulePath }, `A [${l.loraA.shape}], B [${l.loraB.shape}]`, `A [${factors.loraA.shape}], B [${factors.loraB.shape}]`);
    }
    l.loraA.assign(factors.loraA);
    l.loraB.assign(factors.loraB);
    l.scale = adapter.scale;
    factors.loraA.dispose();
    factors.loraB.dispose();
  }
  return adapter;
}

/**
 * Without an adapter: folds the model's LoRA layers into plain Linear layers (`W + s·B·A`).
 * With one (an adapter or a directory): fuses it straight into the plain model's Linear weights,
 * as `mlx_lm.fuse` does. Returns the merged module paths.
 */
export function mergeWeights(model: Module, adapter?: LoraAdapter | string): string[] {
  if (adapter === undefined) return mergeLoRALayers(model).merged;
  const a = typeof adapter === 'string' ? loadAdapterDir(adapter) : adapter;
  const tensors = adapterTensors(a);
  noGrad(() => {
    for (const [path, { loraA, loraB }] of Object.entries(tensors)) {
      const layer = model.getModule(path);
      if (!(layer instanceof Linear)) throw new FormatError('mergeWeights', `the model has no Linear layer '${path}'`, { key: path }, 'a Linear module path', path);
      const w = layer.weight;
      const fused = add(w.cast('float32'), matmul(loraB, loraA).mul(a.scale)).cast(w.dtype);
      w.assign(fused);
      for (const t of [fused, loraA, loraB]) t.dispose();
    }
  });
  return Object.keys(tensors);
}
