import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FLAGS } from '../src/cli-args';
import { cli, root } from './run-cli';

describe('the command line as users pass it', () => {
  it("takes pnpm's '--' and lists every flag of the parser in --help", async () => {
    const help = await cli(['--', '--help']);
    expect(help.code).toBe(0);
    for (const flag of Object.keys(FLAGS)) expect(help.out).toContain(`--${flag}`);
  });
});

describe('the main job (reduced mode)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metal-lora-'));
  it('trains, saves an MLX adapter, reloads and merges it', async () => {
    const r = await cli(['--quick', '--backend', 'cpu', '--adapter-path', join(dir, 'adapters')]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/backend: cpu/);
    expect(r.out).toMatch(/trained 12 steps in .* s; validation loss (\d+\.\d+) → (\d+\.\d+)/);
    const [, before, after] = /validation loss (\d+\.\d+) → (\d+\.\d+)/.exec(r.out) ?? [];
    expect(Number(after)).toBeLessThan(Number(before));
    expect(r.out).toMatch(/reloaded adapter: max \|Δlogit\| .* ok; merged weights: max \|Δlogit\| .* ok/);
    const config = JSON.parse(readFileSync(join(dir, 'adapters', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ fine_tune_type: 'lora', num_layers: 2, lora_parameters: { rank: 8, scale: 2 } });
    expect(existsSync(join(dir, 'adapters', 'adapters.safetensors'))).toBe(true);
  });
  it('trains in float16 (--dtype float16): the loss falls, the adapter reloads and generates', async () => {
    const r = await cli(['--quick', '--iters', '6', '--dtype', 'float16', '--backend', 'cpu', '--adapter-path', join(dir, 'half')]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const [, before, after] = /validation loss (\d+\.\d+) → (\d+\.\d+)/.exec(r.out) ?? [];
    expect(Number(after)).toBeLessThan(Number(before));
    expect(r.out).toMatch(/reloaded adapter: max \|Δlogit\| .* ok; merged weights: max \|Δlogit\| .* ok/);
    const g = await cli([
      'generate',
      '--dtype',
      'float16',
      '--backend',
      'cpu',
      '--adapter-path',
      join(dir, 'half'),
      '--prompt',
      'day 3: ',
      '--max-tokens',
      '5',
    ]);
    expect(g.code).toBe(0);
    expect(g.out).toMatch(/generation: 5 tokens/);
    const bad = await cli(['--dtype', 'bfloat16', '--backend', 'cpu', '--quick']);
    expect(bad.code).not.toBe(0);
    expect(bad.err.trim().split('\n')).toHaveLength(1);
    expect(bad.err).toMatch(/--dtype/);
  });
  it('fuse writes a merged model that loads again as a base', async () => {
    const r = await cli([
      'fuse',
      '--backend',
      'cpu',
      '--model',
      join(root, 'packages/metal-lora/assets/base'),
      '--adapter-path',
      join(dir, 'adapters'),
      '--save-path',
      join(dir, 'fused'),
    ]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/fused \d+ layers of a MLX adapter/);
    const again = await cli(['--quick', '--backend', 'cpu', '--iters', '2', '--model', join(dir, 'fused'), '--adapter-path', join(dir, 'again')]);
    expect(again.out).toMatch(/model: .*fused/);
  });
  it('resumes from an MLX adapter file and saves PEFT', async () => {
    const r = await cli([
      '--quick',
      '--backend',
      'cpu',
      '--iters',
      '2',
      '--resume-adapter-file',
      join(dir, 'adapters', 'adapters.safetensors'),
      '--format',
      'peft',
      '--adapter-path',
      join(dir, 'peft'),
    ]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/resumed from .*adapters\.safetensors/);
    expect(r.out).toMatch(/saved PEFT adapter/);
    const config = JSON.parse(readFileSync(join(dir, 'peft', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16 });
  });
  it('bad input ends with one clear line and a non-zero exit', async () => {
    const missing = await cli(['--model', join(dir, 'nope'), '--backend', 'cpu']);
    expect(missing.code).toBe(1);
    expect(missing.err.trim().split('\n')).toHaveLength(1);
    expect(missing.err).toMatch(/^metal-lora: loadModel: config.json not found/);
    const badFlag = await cli(['--iters', 'many']);
    expect(badFlag.err.trim()).toBe("metal-lora: --iters must be a positive integer; expected an integer ≥ 1, got 'many'");
    const badFormat = await cli(['--format', 'gguf', '--backend', 'cpu', '--quick']);
    expect(badFormat.err.trim()).toBe("metal-lora: --format must be one of mlx, peft; expected mlx or peft, got 'gguf'");
    // An unknown flag stops the run before anything is trained or written.
    const misspelt = await cli(['--adapter_path', join(dir, 'mine'), '--backend', 'cpu', '--quick']);
    expect(misspelt.code).toBe(1);
    expect(misspelt.err.trim()).toBe(
      "metal-lora: unknown flag --adapter_path (did you mean --adapter-path?); expected a flag listed by 'metal-lora --help', got --adapter_path",
    );
    expect(misspelt.out).toBe('');
    expect(existsSync(join(dir, 'mine'))).toBe(false);
  });
});
