import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = new URL('../../..', import.meta.url).pathname;

/** Runs the CLI from source, as `pnpm start` does. */
function cli(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--conditions=source', '--import', './scripts/register-wgsl.mjs', '--import', 'tsx', 'packages/metal-lora/src/cli.ts', ...args], {
    cwd: root,
    encoding: 'utf8',
    env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir() },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('the main job (reduced mode)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metal-lora-'));
  it('trains, saves an MLX adapter, reloads and merges it', () => {
    const r = cli(['--quick', '--backend', 'cpu', '--adapter-path', join(dir, 'adapters')]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/backend: cpu/);
    expect(r.out).toMatch(/validation loss after: .* \(down from/);
    expect(r.out).toMatch(/reloaded adapter: max \|Δlogit\| .* ok; merged weights: max \|Δlogit\| .* ok/);
    const config = JSON.parse(readFileSync(join(dir, 'adapters', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ fine_tune_type: 'lora', num_layers: 2, lora_parameters: { rank: 8, scale: 2 } });
    expect(existsSync(join(dir, 'adapters', 'adapters.safetensors'))).toBe(true);
  });
  it('fuse writes a merged model that loads again as a base', () => {
    const r = cli(['fuse', '--backend', 'cpu', '--model', join(root, 'packages/metal-lora/assets/base'), '--adapter-path', join(dir, 'adapters'), '--save-path', join(dir, 'fused')]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/fused \d+ layers of a MLX adapter/);
    const again = cli(['--quick', '--backend', 'cpu', '--iters', '2', '--model', join(dir, 'fused'), '--adapter-path', join(dir, 'again')]);
    expect(again.out).toMatch(/model: .*fused/);
  });
  it('resumes from an MLX adapter file and saves PEFT', () => {
    const r = cli(['--quick', '--backend', 'cpu', '--iters', '2', '--resume-adapter-file', join(dir, 'adapters', 'adapters.safetensors'), '--format', 'peft', '--adapter-path', join(dir, 'peft')]);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/resumed from .*adapters\.safetensors/);
    expect(r.out).toMatch(/saved PEFT adapter/);
    const config = JSON.parse(readFileSync(join(dir, 'peft', 'adapter_config.json'), 'utf8'));
    expect(config).toMatchObject({ peft_type: 'LORA', r: 8, lora_alpha: 16 });
  });
  it('bad input ends with one clear line and a non-zero exit', () => {
    const missing = cli(['--model', join(dir, 'nope'), '--backend', 'cpu']);
    expect(missing.code).toBe(1);
    expect(missing.err.trim().split('\n')).toHaveLength(1);
    expect(missing.err).toMatch(/^metal-lora: loadModel: config.json not found/);
    const badFlag = cli(['--iters', 'many']);
    expect(badFlag.err.trim()).toBe("metal-lora: --iters must be a positive integer; got 'many'");
    const badFormat = cli(['--format', 'gguf', '--backend', 'cpu', '--quick']);
    expect(badFormat.err.trim()).toBe("metal-lora: --format must be mlx or peft; got 'gguf'");
  });
});
