import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/browser.ts', 'src/internal.ts'],
  format: ['esm'],
  // The published declarations name WebGPU's types (GPUBuffer, GPUDevice): `@webgpu/types` is a
  // dependency, and every declaration file references it.
  dts: { banner: '/// <reference types="@webgpu/types" />' },
  sourcemap: true,
  clean: true,
  target: 'es2022',
  loader: { '.wgsl': 'text' },
  external: ['webgpu'],
});
