import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { saveAdapter as saveAdapterDir } from '@metal-lora/adapter-io/node';
import { LlamaForCausalLM, linearToLoRALayers, LoRALinear, type Module } from '@metal-lora/nn';
import { FormatError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { fuseAdapter, loadAdapter, saveAdapter } from '../src/index';

const config = { vocab_size: 32, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 3, num_attention_heads: 2, num_key_value_heads: 1 };
const loraCount = (m: Module) => m.namedModules().filter(([, x]) => x instanceof LoRALinear).length;

async function savedAdapter(dir: string): Promise<string> {
  const model = new LlamaForCausalLM(config, { seed: 1 });
  linearToLoRALayers(model, { numLayers: 2, rank: 4, scale: 2, seed: 2 });
  const path = join(dir, 'full');
  await saveAdapter(model, path, { numLayers: 2 });
  return path;
}

describe('loadAdapter and fuseAdapter check everything before changing the model', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metal-lora-adapters-'));

  it('loads a whole adapter into a plain model (the blocks and keys of its config)', async () => {
    const model = new LlamaForCausalLM(config, { seed: 1 });
    const adapter = loadAdapter(model, await savedAdapter(dir));
    expect(Object.keys(adapter.modules)).toHaveLength(14);
    expect(loraCount(model)).toBe(14);
  });

  it('refuses an adapter that covers only some of the layers, unless strict is off', async () => {
    const { loadAdapter: readDir } = await import('@metal-lora/adapter-io/node');
    const full = readDir(await savedAdapter(dir));
    const one = 'model.layers.2.self_attn.q_proj';
    const partial = join(dir, 'partial');
    await saveAdapterDir(partial, { ...full, modules: { [one]: full.modules[one] } }, { format: 'mlx' });
    const model = new LlamaForCausalLM(config, { seed: 1 });
    expect(() => loadAdapter(model, partial)).toThrow(FormatError);
    expect(() => loadAdapter(model, partial)).toThrow(
      /^loadAdapter: the adapter covers 1 of the 14 layers it should \(missing model\.layers\.1\.self_attn\.q_proj, /,
    );
    expect(loraCount(model)).toBe(0);
    loadAdapter(model, partial, { strict: false });
    expect(loraCount(model)).toBe(1);
    // A model whose LoRA layers the adapter does not all cover.
    const converted = new LlamaForCausalLM(config, { seed: 1 });
    linearToLoRALayers(converted, { numLayers: 2, rank: 4, scale: 2 });
    expect(() => loadAdapter(converted, partial)).toThrow(/covers 1 of the 14 layers/);
  });

  it('a module that does not fit leaves the model as it was', async () => {
    const { loadAdapter: readDir } = await import('@metal-lora/adapter-io/node');
    const full = readDir(await savedAdapter(dir));
    // The last module's factors moved onto a layer of another shape (up_proj: 16 → 24).
    const modules = { ...full.modules };
    modules['model.layers.2.mlp.up_proj'] = modules['model.layers.2.mlp.down_proj'];
    const bad = join(dir, 'misfit');
    await saveAdapterDir(bad, { ...full, modules }, { format: 'mlx' });
    const model = new LlamaForCausalLM(config, { seed: 1 });
    expect(() => loadAdapter(model, bad)).toThrow(/^loadAdapter: adapter shapes do not fit 'model\.layers\.2\.mlp\.up_proj'/);
    expect(loraCount(model)).toBe(0);
    const before = model.getModule('model.layers.1.self_attn.q_proj') as unknown as { weight: { dataSync(): Float32Array } };
    const weight = Float32Array.from(before.weight.dataSync());
    expect(() => fuseAdapter(model, bad)).toThrow(/^fuseAdapter: adapter shapes do not fit/);
    expect(Array.from(before.weight.dataSync())).toEqual(Array.from(weight));
  });

  it('a missing adapter path is a FormatError naming it', () => {
    const model = new LlamaForCausalLM(config, { seed: 1 });
    const missing = join(dir, 'nope');
    expect(() => loadAdapter(model, missing)).toThrow(FormatError);
    expect(() => loadAdapter(model, missing)).toThrow(`loadAdapter: no such file or folder: ${missing}; expected a readable file, got ENOENT`);
  });
});
