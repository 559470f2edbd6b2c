import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import * as api from '../src/index';

it('the README example runs as written', () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = readme.match(/## Example\n\n```ts\n([\s\S]*?)```/)![1];
  const body = code
    .replace(/^import \{([^}]*)\} from '@metal-lora\/adapter-io';$/m, (_m, names: string) => `const {${names}} = api;`)
    .replace(/ as const/g, '');
  const logs: unknown[][] = [];
  new Function('api', 'console', body)(api, { log: (...args: unknown[]) => logs.push(args) });
  expect(logs[0][0]).toEqual([
    'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
    'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
  ]);
  expect(logs[1][0]).toBe(20);
  expect(Array.from(logs[1][1] as Float32Array)).toEqual([1, 2, 3, 4, 5, 6]);
});
