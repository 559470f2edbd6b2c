import { defineConfig } from 'vitest/config';

/**
 * The one vitest configuration every package uses. Packages resolve each other's TypeScript
 * sources through the `source` export condition, so tests never need a prior build.
 */
export function packageTestConfig(options: { testTimeout?: number } = {}) {
  return defineConfig({
    plugins: [
      {
        // WGSL kernels are imported as text, as tsup's `text` loader does for builds.
        name: 'wgsl-text',
        transform(code: string, id: string) {
          if (id.endsWith('.wgsl')) return { code: `export default ${JSON.stringify(code)};`, map: null };
        },
      },
    ],
    resolve: { conditions: ['source'] },
    // Vite's default server conditions, with `source` first.
    ssr: { resolve: { conditions: ['source', 'module', 'node', 'development|production'] } },
    test: {
      include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
      // Lavapipe only (other drivers ignore them): 4-wide SIMD and no LLVM optimization passes make
      // its shader compilation, which is most of a cold GPU suite's time, about 3x faster.
      env: { LP_NATIVE_VECTOR_WIDTH: process.env.LP_NATIVE_VECTOR_WIDTH ?? '128', GALLIVM_PERF: process.env.GALLIVM_PERF ?? 'nopt' },
      testTimeout: options.testTimeout ?? 60_000,
      reporters: ['default', ['json', { outputFile: 'test-results.json' }]],
    },
  });
}
