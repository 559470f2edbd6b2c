import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors } from '@metal-lora/adapter-io';
import { QuantizedEmbedding, QuantizedLinear, QuantizedLoRALinear, quantizeModel } from '@metal-lora/nn';
import * as T from '@metal-lora/tensor';
import { assertClose } from '@metal-lora/tensor/testing';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/index';
import { cli } from './run-cli';

const base = new URL('../assets/base/', import.meta.url).pathname;
const probe = () =>
  T.tensor(
    Int32Array.from({ length: 24 }, (_, i) => (i * 7 + 3) % 39),
    [2, 12],
    { dtype: 'int32' },
  );

async function logits(dir: string): Promise<Float32Array> {
  const { model } = loadModel(dir);
  model.eval();
  return Float32Array.from(await model.forward(probe()).data());
}

describe('quantized checkpoints (MLX affine): convert, load, train, fuse', () => {
  it('convert -q writes packed U32 weights and the quantization block; loading gives the logits of the in-memory quantized model', async () => {
    await T.setBackend('cpu');
    const out = join(mkdtempSync(join(tmpdir(), 'metal-lora-q4-')), 'q4');
    const run = await cli(['convert', '--model', base, '--save-path', out, '-q', '--q-bits', '4', '--q-group-size', '32', '--backend', 'cpu']);
    expect(run.err).toBe('');
    expect(run.out).toMatch(/quantized 29 layers to 4 bits \(groups of 32\)/);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.quantization).toEqual({ group_size: 32, bits: 4, mode: 'affine' });
    const { tensors } = readSafetensors(readFileSync(join(out, 'model.safetensors')));
    expect(tensors['model.layers.0.mlp.down_proj.weight'].dtype).toBe('U32');
    expect(tensors['model.layers.0.mlp.down_proj.weight'].shape).toEqual([64, (160 * 4) / 32]);
    expect(tensors['model.layers.0.mlp.down_proj.scales'].shape).toEqual([64, 5]);
    const loaded = loadModel(out);
    expect(loaded.model.getModule('model.layers.3.self_attn.o_proj')).toBeInstanceOf(QuantizedLinear);
    expect(loaded.model.getModule('model.embed_tokens')).toBeInstanceOf(QuantizedEmbedding);
    const { model } = loadModel(base);
    await quantizeModel(model, { bits: 4, groupSize: 32 });
    model.eval();
    loaded.model.eval();
    expect(Array.from(await loaded.model.forward(probe()).data())).toEqual(Array.from(await model.forward(probe()).data()));
    // Back to float: the same logits from float weights.
    const float = join(out, '..', 'f32');
    const back = await cli(['convert', '--model', out, '--save-path', float, '--dequantize', '--backend', 'cpu']);
    expect(back.out).toMatch(/dequantized 29 layers/);
    expect(JSON.parse(readFileSync(join(float, 'config.json'), 'utf8')).quantization).toBeUndefined();
    assertClose(await logits(float), await logits(out), { atol: 1e-5, rtol: 1e-5 });
  }, 120_000);

  it('QLoRA from the CLI: trains on the 4-bit folder, generates with the adapter, and fuses both ways', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'metal-lora-qlora-'));
    const q = join(dir, 'q4');
    await cli(['convert', '--model', base, '--save-path', q, '-q', '--q-group-size', '32', '--backend', 'cpu']);
    const adapters = join(dir, 'adapters');
    const train = await cli(['--model', q, '--adapter-path', adapters, '--quick', '--backend', 'cpu', '--learning-rate', '5e-3']);
    expect(train.code, train.err).toBe(0);
    const losses = [...train.out.matchAll(/Train loss ([\d.]+)/g)].map((m) => Number(m[1]));
    expect(losses.length).toBeGreaterThan(1);
    expect(losses.at(-1)!).toBeLessThan(losses[0]);
    const gen = await cli(['generate', '--model', q, '--adapter-path', adapters, '--prompt', 'the', '--max-tokens', '8', '--backend', 'cpu']);
    expect(gen.code, gen.err).toBe(0);
    expect(gen.out).toMatch(/generation: \d+ tokens/);
    // The adapted model's logits, to compare the fused ones against.
    const { model } = loadModel(q);
    const { applyAdapter } = await import('../src/index');
    applyAdapter(model, adapters);
    expect(model.getModule('model.layers.0.self_attn.q_proj')).toBeInstanceOf(QuantizedLoRALinear);
    model.eval();
    const adapted = Float32Array.from(await model.forward(probe()).data());
    const fusedFloat = join(dir, 'fused-f32');
    const f1 = await cli(['fuse', '--model', q, '--adapter-path', adapters, '--save-path', fusedFloat, '--dequantize', '--backend', 'cpu']);
    expect(f1.code, f1.err).toBe(0);
    assertClose(await logits(fusedFloat), adapted, { atol: 1e-4, rtol: 1e-4 });
    const fusedQ = join(dir, 'fused-q4');
    const f2 = await cli(['fuse', '--model', q, '--adapter-path', adapters, '--save-path', fusedQ, '--backend', 'cpu']);
    expect(f2.code, f2.err).toBe(0);
    // Re-quantized: either most of the change kept, or the warning that says it was not.
    expect(`${f2.out}${f2.err}`).toMatch(
      /re-quantized \d+ fused layers; at least [\d.]+% of the adapter's change kept|warning: re-quantizing kept less than half/,
    );
    expect(JSON.parse(readFileSync(join(fusedQ, 'config.json'), 'utf8')).quantization).toEqual({ group_size: 32, bits: 4, mode: 'affine' });
    expect(existsSync(join(fusedQ, 'model.safetensors'))).toBe(true);
  }, 300_000);

  it('refuses other quantization modes and formats by name, and packed words without scales', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'metal-lora-qbad-'));
    const q = join(dir, 'q4');
    await cli(['convert', '--model', base, '--save-path', q, '-q', '--q-group-size', '32', '--backend', 'cpu']);
    const config = JSON.parse(readFileSync(join(q, 'config.json'), 'utf8'));
    const write = (c: unknown) => writeFileSync(join(q, 'config.json'), JSON.stringify(c));
    write({ ...config, quantization: { group_size: 32, bits: 4, mode: 'mxfp4' } });
    expect(() => loadModel(q)).toThrow('loadModel: quantization mode "mxfp4" is not supported; expected "affine" (MLX), got "mxfp4"');
    write({ ...config, quantization: undefined, quantization_config: { quant_method: 'gptq' } });
    expect(() => loadModel(q)).toThrow(/loadModel: quantization method "gptq" is not supported/);
    write({ ...config, quantization: { group_size: 32, bits: 7 } });
    expect(() => loadModel(q)).toThrow(/loadModel: quantization is not an MLX affine quantization/);
    write({ ...config, quantization: undefined });
    expect(() => loadModel(q)).toThrow(/loadModel: the weights are quantized but config.json has no quantization block/);
    // Packed words where no scales say how to read them.
    write(config);
    const { tensors } = readSafetensors(readFileSync(join(q, 'model.safetensors')));
    const entries = Object.fromEntries(Object.entries(tensors).filter(([n]) => n !== 'model.layers.1.mlp.up_proj.scales'));
    writeFileSync(join(q, 'model.safetensors'), writeSafetensors(entries));
    expect(() => loadModel(q)).toThrow(/loadModel: model\.layers\.1\.mlp\.up_proj\.weight holds integers but is not a quantized layer's weight/);
  }, 120_000);
});
