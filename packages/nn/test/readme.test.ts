import { readFileSync } from 'node:fs';
import * as tensor from '@metal-lora/tensor';
import { expect, it } from 'vitest';
import * as nn from '../src/index';

it('the README example runs as written', async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = readme.match(/## Example: LoRA fine-tuning, MLX style\n\n```ts\n([\s\S]*?)```/)![1];
  const body = code
    .replace(/^import \{([^}]*)\} from '@metal-lora\/tensor';$/m, (_m, names: string) => `const {${names.replace(/\btype \w+,?/g, '')}} = tensorApi;`)
    .replace(/^import \{([^}]*)\} from '@metal-lora\/nn';$/m, (_m, names: string) => `const {${names}} = nn;`)
    .replace(/: Tensor\b/g, '');
  const logs: unknown[][] = [];
  await new Function('tensorApi', 'nn', 'console', `return (async () => {${body}})();`)(tensor, nn, { log: (...args: unknown[]) => logs.push(args) });
  expect(logs).toHaveLength(3);
  expect(logs[1][1] as number).toBeLessThan(logs[0][1] as number);
  expect(logs[2]).toEqual([4, 'layers adapted']);
});
