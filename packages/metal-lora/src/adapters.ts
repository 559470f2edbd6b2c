import { adapterTensors, type LoraAdapter, toFloat32, type WriteEntry } from '@metal-lora/adapter-io';
import { loraLayers, modelAdapter } from './lora-adapter';
import {
  adapterFineTuneType,
  loadAdapter as loadAdapterDir,
  loadFullFineTune,
  saveAdapter as saveAdapterDir,
  saveFullFineTune,
} from '@metal-lora/adapter-io/node';
import { Linear, LoRALinear, type Module, QuantizedLinear } from '@metal-lora/nn';
import { add, FormatError, matmul, noGrad, type QuantSpec, type Tensor, tensor } from '@metal-lora/tensor';

/**
 * Saves the LoRA layers of a model (or one LoRALinear) as an adapter directory: MLX by default
 * (`adapters.safetensors` + `adapter_config.json`), or PEFT. Layers must share rank and scale.
 * With `checkpoint` (MLX), the weights also go to mlx-lm's `0000100_adapters.safetensors`.
 */
export async function saveAdapter(
  layerOrModel: Module,
  path: string,
  options: { format?: 'mlx' | 'peft'; numLayers?: number; keys?: string[] | null; baseModel?: string; checkpoint?: number } = {},
): Promise<LoraAdapter> {
  const adapter = await modelAdapter(layerOrModel, options, 'saveAdapter');
  await saveAdapterDir(path, adapter, { format: options.format ?? 'mlx', baseModel: options.baseModel, checkpoint: options.checkpoint });
  return adapter;
}

/**
 * The module paths an adapter is meant to cover in `model`: its own LoRA layers when it has some,
 * else (a plain model) the Linear layers of the last `numLayers` blocks (`model.layers.N.…`),
 * limited to `keys` when the adapter names them, as mlx-lm applies LoRA.
 */
function expectedCoverage(model: Module, adapter: LoraAdapter): string[] {
  const lora = loraLayers(model).map(([p]) => p);
  if (lora.length) return lora;
  const blocks = model
    .namedModules()
    .filter(([, m]) => m instanceof Linear)
    .map(([p]) => ({ path: p, match: /(?:^|\.)layers\.(\d+)\.(.+)$/.exec(p) }))
    .filter((x): x is { path: string; match: RegExpExecArray } => x.match !== null);
  const count = Math.max(-1, ...blocks.map((b) => Number(b.match[1]))) + 1;
  const first = adapter.numLayers < 0 ? 0 : count - adapter.numLayers;
  return blocks.filter((b) => Number(b.match[1]) >= first && (adapter.keys === null || adapter.keys.includes(b.match[2]))).map((b) => b.path);
}

/**
 * Loads an adapter directory (MLX or PEFT, detected) into a model: layers it names become
 * LoRALinear if they are plain Linear layers, and receive the adapter's factors and scale.
 *
 * Everything is checked before the model changes (a failed load leaves it as it was): every
 * module the adapter names exists, is a Linear layer and fits its factors, and the adapter covers
 * every layer it should (the model's LoRA layers, or for a plain model the blocks and keys its
 * config names). `{ strict: false }` accepts an adapter that covers only some of them.
 */
export function loadAdapter(layerOrModel: Module, path: string, options: { strict?: boolean } = {}): LoraAdapter {
  const op = 'loadAdapter';
  const adapter = loadAdapterDir(path);
  const single = layerOrModel instanceof LoRALinear;
  const names = Object.keys(adapter.modules);
  if (single && names.length !== 1)
    throw new FormatError(op, 'a single LoRALinear takes an adapter of one module', { key: path }, '1 module', `${names.length}`);
  const targets = names.map((modulePath): [string, Linear] => {
    const layer = single ? layerOrModel : layerOrModel.getModule(modulePath);
    if (!layer) throw new FormatError(op, `the model has no module '${modulePath}'`, { key: modulePath }, 'a module path of this model', modulePath);
    if (!(layer instanceof Linear)) throw new FormatError(op, `'${modulePath}' is not a Linear layer`, { key: modulePath }, 'Linear', layer.constructor.name);
    const { inFeatures, outFeatures } = adapter.modules[modulePath];
    const rank = layer instanceof LoRALinear ? layer.loraA.shape[0] : adapter.rank;
    if (layer.inFeatures !== inFeatures || layer.outFeatures !== outFeatures || rank !== adapter.rank) {
      throw new FormatError(
        op,
        `adapter shapes do not fit '${modulePath}'`,
        { key: modulePath },
        `A [${rank}, ${layer.inFeatures}], B [${layer.outFeatures}, ${rank}]`,
        `A [${adapter.rank}, ${inFeatures}], B [${outFeatures}, ${adapter.rank}]`,
      );
    }
    return [modulePath, layer];
  });
  if (!single && options.strict !== false) {
    const expected = expectedCoverage(layerOrModel, adapter);
    const missing = expected.filter((p) => !Object.hasOwn(adapter.modules, p));
    if (missing.length) {
      const covered = expected.length - missing.length;
      throw new FormatError(
        op,
        `the adapter covers ${covered} of the ${covered + missing.length} layers it should (missing ${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}); pass { strict: false } to load it anyway`,
        { key: missing[0] },
        'every layer',
        `${covered}`,
      );
    }
  }
  const tensors = adapterTensors(adapter);
  for (const [modulePath, layer] of targets) {
    let l = layer;
    if (!(l instanceof LoRALinear)) {
      l = LoRALinear.fromBase(l, { rank: adapter.rank, scale: adapter.scale, dropout: adapter.dropout });
      layerOrModel.setModule(modulePath, l);
    }
    const factors = tensors[modulePath];
    const lora = l as LoRALinear;
    // The factors take the layer's dtype (an f16 model's adapter is held in f16).
    for (const [target, value] of [
      [lora.loraA, factors.loraA],
      [lora.loraB, factors.loraB],
    ] as const) {
      const held = value.dtype === target.dtype ? value : noGrad(() => value.cast(target.dtype));
      target.assign(held);
      if (held !== value) held.dispose();
      value.dispose();
    }
    lora.scale = adapter.scale;
  }
  return adapter;
}

/**
 * Fuses an MLX or PEFT adapter (parsed, or a folder) straight into a plain model's Linear
 * weights (`W + s·B·A`), as `mlx_lm.fuse` does. Every layer is checked before the first weight
 * changes. Returns the fused module paths. (`mergeWeights(model)` folds a model's own LoRA
 * layers instead.)
 */
export function fuseAdapter(model: Module, adapter: LoraAdapter | string): string[] {
  // A full fine-tune's weights are already the fused ones.
  if (typeof adapter === 'string' && adapterFineTuneType(adapter) === 'full') return loadFineTune(model, adapter);
  const a = typeof adapter === 'string' ? loadAdapterDir(adapter) : adapter;
  // Every layer is checked before the first weight changes.
  const layers = Object.entries(a.modules).map(([path, w]): [string, Linear] => {
    const layer = model.getModule(path);
    if (!(layer instanceof Linear) || layer instanceof LoRALinear)
      throw new FormatError('fuseAdapter', `the model has no plain Linear layer '${path}'`, { key: path }, 'a Linear module path', path);
    if (layer.inFeatures !== w.inFeatures || layer.outFeatures !== w.outFeatures)
      throw new FormatError(
        'fuseAdapter',
        `adapter shapes do not fit '${path}'`,
        { key: path },
        `[${layer.outFeatures}, ${layer.inFeatures}]`,
        `[${w.outFeatures}, ${w.inFeatures}]`,
      );
    return [path, layer];
  });
  const tensors = adapterTensors(a);
  noGrad(() => {
    for (const [path, layer] of layers) {
      const { loraA, loraB } = tensors[path];
      if (layer instanceof QuantizedLinear) {
        // A quantized base comes back as a float Linear of its dequantized weight plus the
        // adapter (mlx-lm dequantizes the same way); `requantizeFused` packs it again.
        const w = layer.dequantized();
        const fused = add(w.cast('float32'), matmul(loraB, loraA).mul(a.scale)).cast(w.dtype);
        const linear = new Linear(layer.inFeatures, layer.outFeatures, { weight: fused, biasTensor: layer.bias });
        linear.freeze();
        model.setModule(path, linear);
        FUSED_FROM.set(linear, { spec: { bits: layer.bits, groupSize: layer.groupSize }, before: w });
        for (const t of [loraA, loraB]) t.dispose();
        continue;
      }
      const w = layer.weight;
      const fused = add(w.cast('float32'), matmul(loraB, loraA).mul(a.scale)).cast(w.dtype);
      w.assign(fused);
      for (const t of [fused, loraA, loraB]) t.dispose();
    }
  });
  return Object.keys(tensors);
}

/** The quantized layers `fuseAdapter` turned into float ones: their quantization and dequantized weight before the adapter. */
const FUSED_FROM = new WeakMap<Module, { spec: QuantSpec; before: Tensor }>();

/** How much of an adapter's change to one layer survived re-quantization. */
export interface RequantizedLayer {
  path: string;
  /** The part of the adapter's change `Δ` the re-quantized weight keeps: `⟨Wq' − Wq, Δ⟩ / ‖Δ‖²` (1: all of it, 0: none). */
  kept: number;
  /** `‖Wq' − (Wq + Δ)‖ / ‖Δ‖`: the re-quantization error against the size of the change. */
  error: number;
}

/**
 * Packs again, with their own bits and group size, the layers that `fuseAdapter` fused into a
 * quantized base (mlx-lm's `fuse` without `--dequantize`), and measures for each how much of the
 * adapter's change the re-quantized weight keeps: an adapter whose change is small against the
 * quantization step is lost here, which mlx-lm does silently. Returns the measurements, worst
 * first; the caller decides what to warn about (the CLI warns below 50% kept).
 */
export async function requantizeFused(model: Module): Promise<RequantizedLayer[]> {
  const out: RequantizedLayer[] = [];
  for (const [path, m] of model.namedModules()) {
    const from = FUSED_FROM.get(m);
    if (!from || !(m instanceof Linear)) continue;
    const q = await QuantizedLinear.fromLinear(m, from.spec);
    const [before, fused, after] = await Promise.all([from.before.data(), m.weight.data(), q.dequantized().data()]);
    let dot = 0;
    let delta2 = 0;
    let err2 = 0;
    for (let i = 0; i < fused.length; i++) {
      const d = fused[i] - before[i];
      dot += (after[i] - before[i]) * d;
      delta2 += d * d;
      err2 += (after[i] - fused[i]) ** 2;
    }
    out.push({ path, kept: delta2 > 0 ? dot / delta2 : 1, error: delta2 > 0 ? Math.sqrt(err2 / delta2) : 0 });
    from.before.dispose();
    m.weight.dispose();
    FUSED_FROM.delete(m);
    model.setModule(path, q);
  }
  return out.sort((x, y) => x.kept - y.kept);
}

/**
 * Saves a full fine-tune as mlx-lm's `--fine-tune-type full` does: the model's trainable
 * parameters (the unfrozen blocks) by name in `adapters.safetensors`, with `adapter_config.json`.
 */
export async function saveFineTune(model: Module, path: string, options: { numLayers: number; checkpoint?: number }): Promise<string[]> {
  const entries: Record<string, WriteEntry> = Object.create(null);
  for (const [name, p] of model.trainableParameters()) entries[name] = { dtype: 'F32', shape: [...p.shape], data: Float32Array.from(await p.data()) };
  await saveFullFineTune(path, entries, options);
  return Object.keys(entries);
}

/**
 * Applies a full fine-tune (mlx-lm's or {@link saveFineTune}'s) to a model: each saved tensor
 * replaces the parameter of its name. Every name and shape is checked before the model changes.
 * Returns the replaced parameters' names.
 */
export function loadFineTune(model: Module, path: string): string[] {
  const op = 'loadFineTune';
  const { tensors } = loadFullFineTune(path);
  const params = new Map(model.namedParameters());
  const pairs = Object.entries(tensors).map(([name, entry]) => {
    const p = params.get(name);
    if (!p) throw new FormatError(op, `the model has no parameter '${name}'`, { key: name }, 'a parameter name of this model', name);
    if (p.shape.join() !== entry.shape.join()) throw new FormatError(op, `'${name}' does not fit the model`, { key: name }, `[${p.shape}]`, `[${entry.shape}]`);
    return [p, entry] as const;
  });
  noGrad(() => {
    for (const [p, entry] of pairs) {
      const t = tensor(toFloat32(entry), [...entry.shape], { backend: p.backend });
      const v = p.dtype === 'float32' ? t : t.cast(p.dtype);
      p.assign(v);
      t.dispose();
      if (v !== t) v.dispose();
    }
  });
  return Object.keys(tensors);
}

/**
 * Applies whatever an adapter folder (or weights file) holds: a LoRA adapter (MLX or PEFT) as
 * unmerged LoRA layers ({@link loadAdapter}), or a full fine-tune's weights ({@link loadFineTune}).
 */
export function applyAdapter(model: Module, path: string): { type: 'lora'; adapter: LoraAdapter } | { type: 'full'; names: string[] } {
  if (adapterFineTuneType(path) === 'full') return { type: 'full', names: loadFineTune(model, path) };
  return { type: 'lora', adapter: loadAdapter(model, path) };
}
