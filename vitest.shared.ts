import { defineConfig } from 'vitest/config';

/**
 * The one vitest configuration every package uses. Packages resolve each other's TypeScript
 * sources through the `source` export condition, so tests never need a prior build.
 */
export function packageTestConfig(options: { testTimeout?: number } = {}) {
  return defineConfig({
    resolve: { conditions: ['source'] },
    // Vite's default server conditions, with `source` first.
    ssr: { resolve: { conditions: ['source', 'module', 'node', 'development|production'] } },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      testTimeout: options.testTimeout ?? 60_000,
      reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    },
  });
}
