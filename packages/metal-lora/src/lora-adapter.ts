/**
 * A model's LoRA layers as an adapter (browser and Node): what `saveAdapter` writes to a folder,
 * and what a page offers as a download in MLX or PEFT format.
 */
import { type AdapterFiles, adapterFromTensors, type LoraAdapter, serializeMlxAdapter, serializePeftAdapter } from '@metal-lora/adapter-io';
import { LoRALinear, type Module } from '@metal-lora/nn';
import { FormatError } from '@metal-lora/tensor';

/** The LoRA layers of a model by path (a lone layer is named `layer`). */
export function loraLayers(target: Module): [string, LoRALinear][] {
  if (target instanceof LoRALinear) return [['layer', target]];
  return target.namedModules().filter(([, m]) => m instanceof LoRALinear) as [string, LoRALinear][];
}

/** The LoRA layers of a model (or one LoRALinear) as an adapter; the layers must share their scale. */
export async function modelAdapter(
  layerOrModel: Module,
  options: { numLayers?: number; keys?: string[] | null } = {},
  op = 'modelAdapter',
): Promise<LoraAdapter> {
  const layers = loraLayers(layerOrModel);
  if (layers.length === 0) throw new FormatError(op, 'the model has no LoRA layers', {}, 'layers made by linearToLoRALayers or LoRALinear', 'none');
  const { scale, dropout } = layers[0][1];
  for (const [p, l] of layers) if (l.scale !== scale) throw new FormatError(op, `layer '${p}' has another scale`, { key: p }, String(scale), String(l.scale));
  return adapterFromTensors(Object.fromEntries(layers.map(([p, l]) => [p, { loraA: l.loraA, loraB: l.loraB }])), {
    scale,
    dropout,
    numLayers: options.numLayers,
    keys: options.keys,
  });
}

/** The files of a model's adapter (MLX by default, or PEFT), ready to write or download. */
export async function adapterFiles(
  layerOrModel: Module,
  options: { format?: 'mlx' | 'peft'; numLayers?: number; keys?: string[] | null; baseModel?: string | null } = {},
): Promise<AdapterFiles> {
  const adapter = await modelAdapter(layerOrModel, options, 'adapterFiles');
  return (options.format ?? 'mlx') === 'peft' ? serializePeftAdapter(adapter, { baseModel: options.baseModel }) : serializeMlxAdapter(adapter);
}
