import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as T from '@metal-lora/tensor';
import { expect, it } from 'vitest';
import * as api from '../src/index';

/** Runs a README's quick start as written (imports mapped to the sources, files in a temp dir). */
async function runQuickStart(readmePath: URL, heading: string): Promise<unknown[][]> {
  const readme = readFileSync(readmePath, 'utf8');
  const code = readme.match(new RegExp(`## ${heading}\\n[\\s\\S]*?\`\`\`ts\\n([\\s\\S]*?)\`\`\``))![1];
  const dir = mkdtempSync(join(tmpdir(), 'quickstart-'));
  const body = code
    .replace(/^import \{([^}]*)\} from 'metal-lora';$/m, (_m, names: string) => `const {${names}} = api;`)
    .replace(/'my-adapter'/g, JSON.stringify(join(dir, 'my-adapter')));
  const logs: unknown[][] = [];
  await new Function('api', 'console', `return (async () => {${body}})();`)(api, { log: (...args: unknown[]) => logs.push(args) });
  await T.setBackend('cpu');
  return logs;
}

for (const [name, url] of [
  ['package README', new URL('../README.md', import.meta.url)],
  ['root README', new URL('../../../README.md', import.meta.url)],
] as const) {
  it(`the ${name}'s quick start runs as written`, async () => {
    const logs = await runQuickStart(url, name === 'root README' ? 'Quick start \\(TypeScript\\)' : 'Quick start');
    expect(logs[0]).toEqual([[8, 64], null]);
    expect(logs[1]).toEqual([true]);
  });
}

it("the package README's fine-tuning example runs as written on a model folder", async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = readme.match(/### From TypeScript\n[\s\S]*?```ts\n([\s\S]*?)```/)![1];
  const dir = mkdtempSync(join(tmpdir(), 'finetune-example-'));
  const chat = (i: number) => ({
    messages: [
      { role: 'user', content: `What comes after ${i}?` },
      { role: 'assistant', content: `${i + 1} comes after ${i}.` },
    ],
  });
  mkdirSync(join(dir, 'data'));
  for (const [split, n] of [
    ['train', 16],
    ['valid', 4],
  ] as const)
    writeFileSync(join(dir, 'data', `${split}.jsonl`), Array.from({ length: n }, (_, i) => JSON.stringify(chat(i + (split === 'valid' ? 50 : 0)))).join('\n'));
  const body = code
    .replace(/^import \{([^}]*)\} from 'metal-lora';$/m, (_m, names: string) => `const {${names}} = api;`)
    .replace("'models/SmolLM2-135M-Instruct'", JSON.stringify(new URL('./fixtures/models/llama/', import.meta.url).pathname))
    .replace("'data/'", JSON.stringify(join(dir, 'data')))
    .replace(/'my-adapter'/g, JSON.stringify(join(dir, 'my-adapter')));
  const logs: unknown[][] = [];
  await new Function('api', 'console', `return (async () => {${body}})();`)(api, { log: (...args: unknown[]) => logs.push(args) });
  await T.setBackend('cpu');
  expect(String(logs[0][0])).toMatch(/^train: 16 chat examples/);
  const evals = logs
    .map((l) => /validation loss (\d+\.\d+)/.exec(String(l[0]))?.[1])
    .filter(Boolean)
    .map(Number);
  expect(evals).toHaveLength(3);
  expect(evals[2]).toBeLessThan(evals[0]);
  expect(logs.at(-1)?.[0]).toBe('done');
  expect(existsSync(join(dir, 'my-adapter', 'adapters.safetensors'))).toBe(true);
}, 120_000);
