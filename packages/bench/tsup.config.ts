import { defineConfig } from 'tsup';

/**
 * Self-contained bundles for machines without the workspace (the GPU machine): everything
 * inlined except Dawn's `webgpu`, WGSL as text.
 */
export default defineConfig({
  entry: {
    'gemm-bench': 'src/gemm-bench.ts',
    'probe-decode': 'src/probe-decode.ts',
    'probe-lora': 'src/probe-lora.ts',
    'probe-sgmat': 'src/probe-sgmat.ts',
    'probe-mma': 'src/probe-mma.ts',
    'probe-sgmat-gemm': 'src/probe-sgmat-gemm.ts',
    'sgmat-bench': 'src/sgmat-bench.ts',
    'qmm-bench': 'src/qmm-bench.ts',
    'lora-bench': 'src/lora-bench.ts',
    'decode-bench': 'src/decode-bench.ts',
    'e2e-bench': 'src/e2e-bench.ts',
    'attention-bench': 'src/attention-bench.ts',
    cli: 'src/cli.ts',
  },
  format: ['esm'],
  outExtension: () => ({ js: '.mjs' }),
  platform: 'node',
  target: 'node20',
  clean: true,
  // Everything but Dawn's binding (a native addon found next to the bundle) is inlined.
  noExternal: [/^(?!webgpu$).*/],
  external: ['webgpu'],
  loader: { '.wgsl': 'text' },
  // tfjs calls require('util') and friends: give the ESM bundle a require.
  banner: { js: "import { createRequire as __createRequire } from 'module'; const require = __createRequire(import.meta.url);" },
  esbuildOptions(options) {
    options.conditions = ['source'];
  },
});
