import { ValueError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { closestFlag, FLAGS, helpText, parseCommandLine, UsageError } from '../src/cli-args';

function usage(argv: string[]): string {
  try {
    parseCommandLine(argv);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    expect(error).toBeInstanceOf(ValueError);
    return (error as Error).message;
  }
  throw new Error(`parsed without error: ${argv.join(' ')}`);
}

describe('the CLI flags (node:util parseArgs, strict)', () => {
  it('reads --name value and --name=value, with train as the default command', () => {
    expect(parseCommandLine(['--iters', '5', '--learning-rate=3e-4', '--quick'])).toEqual({
      command: 'train',
      flags: { iters: 5, 'learning-rate': 3e-4, quick: true },
    });
    expect(parseCommandLine(['-c', 'lora.yaml', '--num-layers', '-1', '--val-batches=-1'])).toEqual({
      command: 'train',
      flags: { config: 'lora.yaml', 'num-layers': -1, 'val-batches': -1 },
    });
    expect(parseCommandLine(['fuse', '--model', 'm', '--adapter-path=a', '--save-path', 's'])).toEqual({
      command: 'fuse',
      flags: { model: 'm', 'adapter-path': 'a', 'save-path': 's' },
    });
  });

  it("ignores the '--' that pnpm passes before the script's arguments", () => {
    expect(parseCommandLine(['--', '--help'])).toEqual({ command: 'train', flags: { help: true } });
    expect(parseCommandLine(['--', 'fuse', '--backend', 'cpu']).command).toBe('fuse');
  });

  it('refuses unknown and misspelt flags, naming the closest valid one', () => {
    expect(usage(['--adapter_path', 'mine'])).toBe(
      "metal-lora: unknown flag --adapter_path (did you mean --adapter-path?); expected a flag listed by 'metal-lora --help', got --adapter_path",
    );
    expect(usage(['--lr', '1e-5'])).toMatch(/^metal-lora: unknown flag --lr \(did you mean --learning-rate\?\)/);
    expect(usage(['--lora-layers', '4'])).toContain('did you mean --num-layers?');
    expect(usage(['--batch_size', '4'])).toContain('did you mean --batch-size?');
    expect(usage(['--learning_rate', '1e-5'])).toContain('did you mean --learning-rate?');
    expect(usage(['--iter=5'])).toContain('did you mean --iters?');
    expect(usage(['-x'])).toContain('unknown flag -x');
    expect(closestFlag('save_path')).toBe('save-path');
    expect(closestFlag('batch')).toBe('batch-size');
    expect(closestFlag('max_seq_len')).toBe('max-seq-length');
  });

  it('refuses bad values with the range in the message', () => {
    expect(usage(['--iters', 'many'])).toBe("metal-lora: --iters must be a positive integer; expected an integer ≥ 1, got 'many'");
    expect(usage(['--iters', '2.5'])).toContain('positive integer');
    expect(usage(['--rank', '0'])).toContain('positive integer');
    expect(usage(['--learning-rate=0'])).toBe("metal-lora: --learning-rate is out of range; expected a number > 0 and ≤ 1, got '0'");
    expect(usage(['--learning-rate=-1'])).toContain('out of range');
    expect(usage(['--learning-rate', '1e30'])).toContain('out of range');
    expect(usage(['--learning-rate', 'NaN'])).toContain('finite number');
    expect(usage(['--num-layers', '-2'])).toBe("metal-lora: --num-layers must be an integer in -1..4096; expected an integer in -1..4096, got '-2'");
    expect(usage(['--optimizer', 'muon'])).toContain("expected adam or adamw or sgd, got 'muon'");
    expect(usage(['--dropout', '1'])).toBe("metal-lora: --dropout is out of range; expected a number ≥ 0 and < 1, got '1'");
    expect(usage(['--scale', '1e308'])).toContain('out of range');
    expect(usage(['--format', 'gguf'])).toBe("metal-lora: --format must be one of mlx, peft; expected mlx or peft, got 'gguf'");
    expect(usage(['--backend', 'metal'])).toContain("got 'metal'");
    expect(usage(['--model='])).toContain('--model is empty');
  });

  it('refuses a missing value, a value for a switch, stray words and flags of the other command', () => {
    expect(usage(['--iters'])).toBe('metal-lora: --iters needs a value; expected --iters N, got nothing');
    expect(usage(['--quick=yes'])).toContain('--quick takes no value');
    expect(usage(['train', 'extra'])).toContain("unexpected argument 'extra'");
    expect(usage(['fuse', '--iters', '3'])).toContain("--iters does not apply to 'fuse'");
    expect(usage(['--save-path', 'x'])).toContain("--save-path does not apply to 'train'");
  });

  it('documents every flag the parser takes, and only those', () => {
    const text = helpText();
    const documented = [...text.matchAll(/^ {2}--([\w-]+)/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual(Object.keys(FLAGS).sort());
  });
});
