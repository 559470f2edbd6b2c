import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FormatError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import {
  type AdapterFiles,
  type LoraAdapter,
  mlxFineTuneType,
  mlxToPeft,
  parseMlxAdapter,
  parseMlxFullFineTune,
  parsePeftAdapter,
  peftToMlx,
  readSafetensors,
  serializeMlxAdapter,
  serializeMlxFullFineTune,
  toFloat32,
  writeSafetensors,
} from '../src/index';
import {
  adapterFineTuneType,
  loadAdapter,
  loadFullFineTune,
  loadSafetensors,
  openSafetensors,
  saveAdapter,
  saveFullFineTune,
  saveSafetensors,
  writeFileAtomic,
} from '../src/node';

const fx = (p: string) => new URL(`./fixtures/${p}`, import.meta.url);
const peftFiles = (dir: string): AdapterFiles => ({
  weights: new Uint8Array(readFileSync(fx(`${dir}/adapter_model.safetensors`))),
  config: readFileSync(fx(`${dir}/adapter_config.json`), 'utf8'),
});
const expected = (dir: string) =>
  JSON.parse(readFileSync(fx(`${dir}/expected.json`), 'utf8')) as {
    scaling: Record<string, number>;
    weights: Record<string, { A: number[][]; B: number[][] }>;
  };

/** A small MLX-style adapter with every value distinct (never zeros). */
function sampleAdapter(): LoraAdapter {
  const mod = (inF: number, outF: number, seed: number) => ({
    inFeatures: inF,
    outFeatures: outF,
    a: Float32Array.from({ length: 4 * inF }, (_, i) => Math.sin(seed + i) / 4),
    b: Float32Array.from({ length: outF * 4 }, (_, i) => Math.cos(seed + i) / 8),
  });
  return {
    rank: 4,
    scale: 20,
    dropout: 0.05,
    numLayers: 2,
    keys: ['self_attn.q_proj', 'self_attn.v_proj'],
    dtype: 'F32',
    modules: {
      'model.layers.2.self_attn.q_proj': mod(16, 16, 1),
      'model.layers.2.self_attn.v_proj': mod(16, 8, 2),
      'model.layers.3.self_attn.q_proj': mod(16, 16, 3),
      'model.layers.3.self_attn.v_proj': mod(16, 8, 4),
    },
  };
}

describe('PEFT adapters written by the real PEFT library', () => {
  for (const [dir, rs] of [
    ['peft-lora', false],
    ['peft-rslora', true],
  ] as const) {
    it(`${dir}: scale, paths and weights match what PEFT reports`, () => {
      const adapter = parsePeftAdapter(peftFiles(dir));
      const exp = expected(dir);
      expect(Object.keys(adapter.modules).sort()).toEqual(Object.keys(exp.scaling).sort());
      for (const [path, scaling] of Object.entries(exp.scaling)) {
        expect(adapter.scale).toBeCloseTo(scaling, 12);
        expect(Array.from(adapter.modules[path].a)).toEqual(exp.weights[path].A.flat().map(Math.fround));
        expect(Array.from(adapter.modules[path].b)).toEqual(exp.weights[path].B.flat().map(Math.fround));
      }
      expect(adapter.scale).toBe(rs ? 8 / 2 : 8 / 4);
      expect(adapter.rank).toBe(4);
      expect(adapter.dropout).toBe(0.05);
      expect(adapter.numLayers).toBe(1);
      expect(adapter.keys).toEqual(['self_attn.q_proj', 'self_attn.v_proj']);
    });
  }

  it('converts to MLX: transposed tensors, scale, layers and block-relative keys', () => {
    const mlx = peftToMlx(peftFiles('peft-lora'));
    const config = JSON.parse(mlx.config);
    expect(config).toEqual({
      fine_tune_type: 'lora',
      lora_parameters: { rank: 4, scale: 2, dropout: 0.05, keys: ['self_attn.q_proj', 'self_attn.v_proj'] },
      num_layers: 1,
    });
    const st = readSafetensors(mlx.weights);
    const a = st.tensors['model.layers.1.self_attn.v_proj.lora_a'];
    const b = st.tensors['model.layers.1.self_attn.v_proj.lora_b'];
    expect(a.shape).toEqual([16, 4]);
    expect(b.shape).toEqual([4, 8]);
    const A = expected('peft-lora').weights['model.layers.1.self_attn.v_proj'].A; // [4, 16]
    expect(toFloat32(a)[1 * 4 + 2]).toBe(Math.fround(A[2][1]));
    expect({ ...st.metadata }).toEqual({});
  });

  it('PEFT → MLX → PEFT keeps every weight and the scale', () => {
    const back = parsePeftAdapter(mlxToPeft(peftToMlx(peftFiles('peft-rslora'))));
    const orig = parsePeftAdapter(peftFiles('peft-rslora'));
    expect(back.scale).toBeCloseTo(orig.scale, 12);
    for (const [p, w] of Object.entries(orig.modules)) {
      expect(Array.from(back.modules[p].a)).toEqual(Array.from(w.a));
      expect(Array.from(back.modules[p].b)).toEqual(Array.from(w.b));
    }
  });
});

describe('MLX adapters', () => {
  it('MLX → PEFT → MLX gives identical files', () => {
    const files = serializeMlxAdapter(sampleAdapter());
    const again = peftToMlx(mlxToPeft(files));
    expect(again.config).toBe(files.config);
    expect(Buffer.from(again.weights).equals(Buffer.from(files.weights))).toBe(true);
  });
  it('PEFT config from MLX: lora_alpha = scale·r, layers_to_transform, format pt', () => {
    const peft = mlxToPeft(serializeMlxAdapter(sampleAdapter()), { baseModel: 'meta-llama/Llama-3.2-1B' });
    const config = JSON.parse(peft.config);
    expect(config).toMatchObject({
      peft_type: 'LORA',
      r: 4,
      lora_alpha: 80,
      lora_dropout: 0.05,
      target_modules: ['self_attn.q_proj', 'self_attn.v_proj'],
      layers_to_transform: [2, 3],
      base_model_name_or_path: 'meta-llama/Llama-3.2-1B',
    });
    expect({ ...readSafetensors(peft.weights).metadata }).toEqual({ format: 'pt' });
  });
  it('accepts the legacy config keys lora_layers and use_dora: false', () => {
    const files = serializeMlxAdapter(sampleAdapter());
    const legacy = { lora_layers: 2, use_dora: false, lora_parameters: { rank: 4, scale: 20, dropout: 0.05, alpha: 16 } };
    const adapter = parseMlxAdapter({ weights: files.weights, config: JSON.stringify(legacy) });
    expect(adapter.numLayers).toBe(2);
    expect(adapter.keys).toBeNull();
  });
});

describe('what cannot be represented is refused, not changed', () => {
  const peft = peftFiles('peft-lora');
  const withConfig = (patch: Record<string, unknown>): AdapterFiles => ({
    weights: peft.weights,
    config: JSON.stringify({ ...JSON.parse(peft.config), ...patch }),
  });
  it.each([
    [{ use_dora: true }, /DoRA cannot be represented/],
    [{ lora_bias: true }, /bias on lora_B/],
    [{ fan_in_fan_out: true }, /fan_in_fan_out/],
    [{ bias: 'all' }, /trained base biases/],
    [{ rank_pattern: { q_proj: 8 } }, /rank_pattern gives module 'q_proj' another value/],
    [{ alpha_pattern: { v_proj: 32 } }, /alpha_pattern/],
    [{ peft_type: 'IA3' }, /only LoRA adapters/],
    [{ r: 8 }, /tensor rank differs from the config/],
  ])('PEFT %j', (patch, pattern) => {
    const e = (() => {
      try {
        parsePeftAdapter(withConfig(patch));
      } catch (error) {
        return error;
      }
    })();
    expect(e).toBeInstanceOf(FormatError);
    expect((e as Error).message).toMatch(pattern);
  });
  it('MLX DoRA, full fine-tunes and malformed configs', () => {
    const files = serializeMlxAdapter(sampleAdapter());
    expect(() =>
      parseMlxAdapter({ weights: files.weights, config: '{"fine_tune_type":"dora","num_layers":2,"lora_parameters":{"rank":4,"scale":1,"dropout":0}}' }),
    ).toThrow(/only LoRA adapters/);
    expect(() => parseMlxAdapter({ weights: files.weights, config: '{"fine_tune_type":"full","num_layers":2}' })).toThrow(FormatError);
    expect(() => parseMlxAdapter({ weights: files.weights, config: '{"num_layers":2,"lora_parameters":{"rank":4,"dropout":0}}' })).toThrow(/scale is missing/);
    expect(() => parseMlxAdapter({ weights: files.weights, config: 'nope' })).toThrow(/not valid JSON/);
  });
  it('module paths equal to Object.prototype members are kept, not dropped', () => {
    const adapter = sampleAdapter();
    const w = adapter.modules['model.layers.2.self_attn.q_proj'];
    adapter.modules = Object.assign(Object.create(null), { ['__proto__']: w, toString: adapter.modules['model.layers.2.self_attn.v_proj'] });
    expect(Object.keys(adapter.modules)).toEqual(['__proto__', 'toString']);
    const mlx = serializeMlxAdapter(adapter);
    expect(Object.keys(readSafetensors(mlx.weights).tensors).sort()).toEqual(['__proto__.lora_a', '__proto__.lora_b', 'toString.lora_a', 'toString.lora_b']);
    for (const parsed of [parseMlxAdapter(mlx), parsePeftAdapter(mlxToPeft(mlx))]) {
      expect(Object.keys(parsed.modules).sort()).toEqual(['__proto__', 'toString']);
      const protoKey = '__proto__';
      expect(Array.from(parsed.modules[protoKey].a)).toEqual(Array.from(w.a));
    }
  });
  it('refuses adapters that would load and compute nonsense: rank 0, NaN weights, no tensors, dropout 5', () => {
    const mlx = serializeMlxAdapter(sampleAdapter());
    const peft = mlxToPeft(mlx);
    const peftConfig = JSON.parse(peft.config);
    const refuse = (f: () => unknown, message: string) => {
      expect(f).toThrow(FormatError);
      expect(f).toThrow(message);
    };
    refuse(
      () => parsePeftAdapter({ ...peft, config: JSON.stringify({ ...peftConfig, r: 0 }) }),
      'parsePeftAdapter: the rank must be a positive integer; expected an integer ≥ 1, got 0',
    );
    const mlxConfig = JSON.parse(mlx.config);
    mlxConfig.lora_parameters.dropout = 5;
    refuse(
      () => parseMlxAdapter({ ...mlx, config: JSON.stringify(mlxConfig) }),
      'parseMlxAdapter: dropout is out of range; expected a probability in [0, 1), got 5',
    );
    mlxConfig.lora_parameters.dropout = 0;
    mlxConfig.lora_parameters.keys = 'self_attn.q_proj';
    refuse(
      () => parseMlxAdapter({ ...mlx, config: JSON.stringify(mlxConfig) }),
      'parseMlxAdapter: lora_parameters.keys must be a list of strings; expected string[] or null, got "self_attn.q_proj"',
    );
    const nan = sampleAdapter();
    nan.modules['model.layers.3.self_attn.v_proj'].b[5] = Number.NaN;
    refuse(
      () => serializeMlxAdapter(nan),
      "serializeMlxAdapter: the B matrix of 'model.layers.3.self_attn.v_proj' holds a non-finite value at element 5; expected finite weights, got NaN",
    );
    const nanFiles = serializeMlxAdapter(sampleAdapter());
    const parsed = readSafetensors(nanFiles.weights);
    const a = parsed.tensors['model.layers.2.self_attn.q_proj.lora_a'];
    new DataView(a.data.buffer, a.data.byteOffset).setFloat32(0, Number.POSITIVE_INFINITY, true);
    refuse(
      () => parseMlxAdapter(nanFiles),
      "parseMlxAdapter: the A matrix of 'model.layers.2.self_attn.q_proj' holds a non-finite value at element 0; expected finite weights, got Infinity",
    );
    const empty = { ...sampleAdapter(), modules: {} };
    refuse(() => serializeMlxAdapter(empty), 'serializeMlxAdapter: the adapter has no LoRA tensors; expected at least one pair of A and B matrices, got none');
    refuse(() => parseMlxAdapter({ weights: writeSafetensors({}), config: mlx.config }), 'parseMlxAdapter: the adapter has no LoRA tensors');
  });
});

describe('Node files', () => {
  it('saveAdapter / loadAdapter in both formats, detecting the format', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'adapter-'));
    await saveAdapter(join(dir, 'mlx'), sampleAdapter(), { format: 'mlx' });
    await saveAdapter(join(dir, 'peft'), sampleAdapter(), { format: 'peft' });
    expect(readdirSync(join(dir, 'mlx')).sort()).toEqual(['adapter_config.json', 'adapters.safetensors']);
    expect(readdirSync(join(dir, 'peft')).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const fromMlx = loadAdapter(join(dir, 'mlx'));
    const fromPeft = loadAdapter(join(dir, 'peft'));
    expect(fromMlx.format).toBe('mlx');
    expect(fromPeft.format).toBe('peft');
    for (const a of [fromMlx, fromPeft]) {
      expect(a.scale).toBe(20);
      expect(Array.from(a.modules['model.layers.3.self_attn.v_proj'].b)).toEqual(Array.from(sampleAdapter().modules['model.layers.3.self_attn.v_proj'].b));
    }
    expect(() => loadAdapter(dir)).toThrow(/no adapter weights found/);
  });
  it('openSafetensors reads the header only and single tensors on demand', () => {
    const path = fx('reference.safetensors').pathname;
    const lazy = openSafetensors(path);
    const full = loadSafetensors(path);
    expect(Object.keys(lazy.info).sort()).toEqual(Object.keys(full.tensors).sort());
    expect(Array.from(lazy.read('weight').data)).toEqual(Array.from(full.tensors.weight.data));
    expect(() => lazy.read('missing')).toThrow(/no such tensor/);
    lazy.close();
    expect(() => lazy.read('weight')).toThrow(/closed/);
  });
  it('writes atomically: the old file survives a failed save, no temp files remain', () => {
    const dir = mkdtempSync(join(tmpdir(), 'atomic-'));
    const path = join(dir, 'a.safetensors');
    saveSafetensors(path, { x: { dtype: 'F32', shape: [1], data: new Float32Array([1]) } });
    const before = readFileSync(path);
    expect(() => saveSafetensors(path, { x: { dtype: 'F32', shape: [2], data: new Float32Array([1]) } })).toThrow(FormatError);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(() => writeFileAtomic(join(dir, 'missing-dir', 'b'), 'x')).toThrow();
    writeFileSync(join(dir, 'c'), 'old');
    writeFileAtomic(join(dir, 'c'), 'new');
    expect(readFileSync(join(dir, 'c'), 'utf8')).toBe('new');
    expect(readdirSync(dir).sort()).toEqual(['a.safetensors', 'c']);
  });
});

describe('tensors ⇄ adapters', () => {
  it('a layer computes the same outputs after save and load in either format', async () => {
    const { loraLinear, randn, tidy } = await import('@metal-lora/tensor');
    const {
      adapterFromTensors,
      adapterTensors,
      parseMlxAdapter: parseMlx,
      parsePeftAdapter: parsePeft,
      serializeMlxAdapter: toMlx,
      serializePeftAdapter: toPeft,
    } = await import('../src/index');
    const x = randn([5, 16], { seed: 1 });
    const w = randn([8, 16], { seed: 2 });
    const trained = { 'model.layers.0.mlp.up_proj': { loraA: randn([4, 16], { seed: 3 }), loraB: randn([8, 4], { seed: 4 }) } };
    const before = tidy(() =>
      loraLinear(x, w, trained['model.layers.0.mlp.up_proj'].loraA, trained['model.layers.0.mlp.up_proj'].loraB, { scale: 2.5 }),
    ).dataSync();
    const adapter = await adapterFromTensors(trained, { scale: 2.5 });
    expect(adapter.keys).toEqual(['mlp.up_proj']);
    for (const reloaded of [parseMlx(toMlx(adapter)), parsePeft(toPeft(adapter))]) {
      const t = adapterTensors(reloaded)['model.layers.0.mlp.up_proj'];
      const after = loraLinear(x, w, t.loraA, t.loraB, { scale: reloaded.scale }).dataSync();
      expect(Array.from(after)).toEqual(Array.from(before));
    }
  });
});

describe('mlx-lm checkpoints', () => {
  it('saveAdapter writes 0000100_adapters.safetensors; loadAdapter reads a checkpoint file', async () => {
    const { mlxCheckpointName } = await import('../src/node');
    expect(mlxCheckpointName(100)).toBe('0000100_adapters.safetensors');
    const dir = mkdtempSync(join(tmpdir(), 'ckpt-'));
    await saveAdapter(dir, sampleAdapter(), { format: 'mlx', checkpoint: 100 });
    expect(readdirSync(dir).sort()).toEqual(['0000100_adapters.safetensors', 'adapter_config.json', 'adapters.safetensors']);
    const a = loadAdapter(join(dir, '0000100_adapters.safetensors'));
    expect(a.format).toBe('mlx');
    expect(Array.from(a.modules['model.layers.2.self_attn.q_proj'].a)).toEqual(Array.from(sampleAdapter().modules['model.layers.2.self_attn.q_proj'].a));
  });
});

describe('browser helpers', () => {
  it('adapterFromBlobs detects the format from File-like blobs; fetchAdapter reads over HTTP', async () => {
    const { adapterFromBlobs, fetchAdapter } = await import('../src/index');
    const files = serializeMlxAdapter(sampleAdapter());
    const blob = (name: string, bytes: Uint8Array | string) => ({
      name,
      arrayBuffer: async () => (typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes).slice().buffer,
    });
    const picked = await adapterFromBlobs([blob('dir/adapters.safetensors', files.weights), blob('dir/adapter_config.json', files.config)]);
    expect(picked.format).toBe('mlx');
    expect(parseMlxAdapter(picked.files).scale).toBe(20);
    const served = new Map([
      ['/a/adapters.safetensors', files.weights],
      ['/a/adapter_config.json', new TextEncoder().encode(files.config)],
    ]);
    const fakeFetch = (async (url: string) => {
      const body = served.get(url);
      return { ok: !!body, status: body ? 200 : 404, arrayBuffer: async () => body!.slice().buffer };
    }) as unknown as typeof fetch;
    expect(parseMlxAdapter(await fetchAdapter('/a/', 'mlx', fakeFetch)).rank).toBe(4);
    await expect(fetchAdapter('/missing', 'mlx', fakeFetch)).rejects.toThrow(/HTTP 404/);
  });
});

describe("mlx-lm's full fine-tunes", () => {
  const weights = {
    'model.layers.1.mlp.up_proj.weight': { dtype: 'F32' as const, shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    'model.layers.1.input_layernorm.weight': { dtype: 'F32' as const, shape: [2], data: Float32Array.from([0.5, 1.5]) },
  };
  it('round-trips through the files and is told apart from a LoRA adapter', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'full-'));
    await saveFullFineTune(dir, weights, { numLayers: 1, checkpoint: 20 });
    expect(
      readdirSync(dir)
        .filter((n) => !n.startsWith('.'))
        .sort(),
    ).toEqual(['0000020_adapters.safetensors', 'adapter_config.json', 'adapters.safetensors']);
    expect(JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'))).toEqual({ fine_tune_type: 'full', lora_parameters: null, num_layers: 1 });
    expect(adapterFineTuneType(dir)).toBe('full');
    const back = loadFullFineTune(dir);
    expect(back.numLayers).toBe(1);
    expect(Array.from(toFloat32(back.tensors['model.layers.1.mlp.up_proj.weight']))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(() => loadAdapter(dir)).toThrow(/a full fine-tune's weights, not a LoRA adapter \(metal-lora's loadFineTune applies it\)/);
    const files = serializeMlxFullFineTune(weights, 1);
    expect(() => parseMlxFullFineTune({ ...files, config: '{"fine_tune_type": "lora"}' })).toThrow(/not a full fine-tune/);
    expect(() => serializeMlxFullFineTune({}, 1)).toThrow(/no tensors to save/);
    const lora = serializeMlxFullFineTune({ 'a.lora_a': weights['model.layers.1.input_layernorm.weight'] }, 1);
    expect(() => parseMlxFullFineTune(lora)).toThrow(/a LoRA tensor in a full fine-tune/);
    expect(mlxFineTuneType('{"use_dora": true}')).toBe('dora');
    expect(mlxFineTuneType('{}')).toBe('lora');
  });
});
