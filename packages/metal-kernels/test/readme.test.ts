import { readFileSync } from 'node:fs';
import * as tensor from '@metal-lora/tensor';
import { expect } from 'vitest';
import { gpuIt } from '../../../test-support/gpu';

/**
 * The README's example runs as written (imports mapped to the workspace sources), on webgpu even
 * where 'auto' would take the CPU over a software adapter.
 */
gpuIt('the README example runs on webgpu', async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = readme.match(/## Example\n\n```ts\n([\s\S]*?)```/)![1];
  const body = code
    .replace(/^import '@metal-lora\/metal-kernels';.*$/m, '')
    .replace(/^import \{([^}]*)\} from '@metal-lora\/tensor';$/m, (_m, names: string) => `const {${names}} = tensor;`)
    .replace("await setBackend('auto');", "await setBackend('webgpu');");
  const logs: unknown[][] = [];
  await new Function('tensor', 'console', `return (async () => {${body}})();`)(tensor, { log: (...args: unknown[]) => logs.push(args) });
  expect(logs[0]).toEqual(['webgpu']);
  expect(logs[1]).toEqual([[64, 128], 64 * 128]);
  await tensor.setBackend('cpu');
});
