import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LlamaForCausalLM, linearToLoRALayers, trainLoop, ValueError } from '../src/index';
import { cli, root } from './run-cli';

const base = join(root, 'packages/metal-lora/assets/base');

/** Runs the CLI expecting one clear error line and exit 1; returns that line. */
async function refused(args: string[]): Promise<string> {
  const r = await cli(args);
  expect(r.code, r.out + r.err).toBe(1);
  const lines = r.err.trim().split('\n');
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0]).toMatch(/^metal-lora: /);
  expect(r.err).not.toMatch(/TypeError|RangeError|Cannot read properties|is not a function|\n\s+at /);
  return lines[0];
}

describe('the CLI under bad input: one clear line, and nothing of the user lost', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metal-lora-hostile-'));

  it('a run that fails its checks leaves an existing adapter untouched', async () => {
    const adapters = join(dir, 'adapters');
    const good = await cli(['--quick', '--iters', '4', '--backend', 'cpu', '--adapter-path', adapters]);
    expect(good.code, good.err).toBe(0);
    const before = readFileSync(join(adapters, 'adapters.safetensors'));
    const config = readFileSync(join(adapters, 'adapter_config.json'), 'utf8');
    // A learning rate too small to move the loss: the embedded default's self-test fails, after training.
    const failed = await refused(['--quick', '--iters', '2', '--learning-rate', '1e-12', '--rank', '4', '--backend', 'cpu', '--adapter-path', adapters]);
    expect(failed).toMatch(/validation loss did not fall .* nothing was saved/);
    // A model whose config is refused: nothing is trained or written.
    const model = join(dir, 'bad-model');
    cpSync(base, model, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
    writeFileSync(join(model, 'config.json'), JSON.stringify({ ...cfg, rope_theta: -1 }));
    expect(await refused(['--model', model, '--backend', 'cpu', '--adapter-path', adapters])).toBe(
      'metal-lora: loadModel: rope_theta must be a positive number; expected a number > 0, got -1',
    );
    expect(readFileSync(join(adapters, 'adapters.safetensors')).equals(before)).toBe(true);
    expect(readFileSync(join(adapters, 'adapter_config.json'), 'utf8')).toBe(config);
  }, 180_000);

  it('trainLoop stops at a non-finite loss instead of training on NaN', async () => {
    const model = new LlamaForCausalLM({ vocab_size: 16, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 1, num_attention_heads: 2 }, { seed: 1 });
    linearToLoRALayers(model, { numLayers: 1, rank: 2, scale: 1e6, seed: 2 });
    const stream = Int32Array.from({ length: 200 }, (_, i) => (i * 7) % 16);
    const run = trainLoop(model, stream, { iters: 30, batch: 2, length: 8, lr: 1e30, reportEvery: 1 });
    await expect(run).rejects.toThrow(ValueError);
    await expect(trainLoop(model, stream, { iters: 30, batch: 2, length: 8, lr: 1e30, reportEvery: 1 })).rejects.toThrow(
      /^trainLoop: the loss is (NaN|-?Infinity) at step \d+: training diverged/,
    );
  });

  it('bad data files name the file and line', async () => {
    const write = (name: string, text: string) => {
      writeFileSync(join(dir, name), text);
      return join(dir, name);
    };
    expect(await refused(['--data', write('one.jsonl', '{"text": "only one"}\n'), '--backend', 'cpu'])).toMatch(
      /one\.jsonl: holds 1 example, too few to keep one for validation/,
    );
    expect(await refused(['--data', write('null.jsonl', 'null\n{"text": "a"}\n'), '--backend', 'cpu'])).toMatch(/null\.jsonl:1: not a JSON object/);
    expect(await refused(['--data', write('empty.jsonl', '{"text": "a"}\n{"text": ""}\n{"text": "b"}\n'), '--backend', 'cpu'])).toMatch(
      /empty\.jsonl:2: "text" is empty/,
    );
    expect(await refused(['--data', write('broken.jsonl', '{"text": "a"}\n{"text": \n'), '--backend', 'cpu'])).toMatch(/broken\.jsonl:2: not valid JSON/);
    expect(await refused(['--data', join(dir, 'missing.jsonl'), '--backend', 'cpu'])).toMatch(/missing\.jsonl: not found/);
    expect(await refused(['--data', write('nothing.jsonl', '\n\n'), '--backend', 'cpu'])).toMatch(/nothing\.jsonl: holds no examples/);
  }, 120_000);

  it('sizes from flags are refused before anything is allocated', async () => {
    expect(await refused(['--rank', '5000000'])).toBe("metal-lora: --rank is out of range; expected an integer in 1..4096, got '5000000'");
    expect(await refused(['--max-seq-length', '10000000'])).toBe(
      "metal-lora: --max-seq-length is out of range; expected an integer in 1..1048576, got '10000000'",
    );
    expect(await refused(['--rank', '4000', '--backend', 'cpu'])).toMatch(/--rank exceeds the model's layer sizes .*; expected at most \d+, got 4000/);
    expect(await refused(['--resume-adapter-file', join(dir, 'nope'), '--backend', 'cpu', '--quick'])).toMatch(
      /^metal-lora: loadAdapter: no such file or folder: .*nope/,
    );
  }, 120_000);
});
