import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import * as api from '../src/index';

/** The README's example is code users paste: run it as written (imports mapped to the source). */
it('the README example runs', async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = readme.match(/## Example\n\n```ts\n([\s\S]*?)```/)![1];
  const body = code
    .replace(/^import \{([^}]*)\} from '@metal-lora\/tensor';$/m, (_m, names: string) => `const {${names.replace(/\btype \w+,?/g, '')}} = api;`)
    .replace(/: Tensor\b/g, '')
    .replace(/!\./g, '.');
  const logs: unknown[][] = [];
  const run = new Function('api', 'console', `return (async () => {${body}})();`);
  await run(api, { log: (...args: unknown[]) => logs.push(args) });
  expect(logs[0]).toEqual([[2, 16]]);
  expect(logs[1][0]).toBeTypeOf('number');
  expect(logs[1].slice(1)).toEqual([
    [2, 16],
    [8, 2],
  ]);
});
