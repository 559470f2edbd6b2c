import { mkdtempSync, readFileSync } from 'node:fs';
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
