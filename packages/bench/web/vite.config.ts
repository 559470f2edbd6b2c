import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

/**
 * The benchmark page (index.html) and the fine-tuning page (finetune.html): `pnpm bench:web`
 * serves them, `pnpm -F @metal-lora/bench build:web` builds them into dist-web/. Workspace packages resolve to their sources; WGSL loads as text; the bundled
 * base model comes from packages/metal-lora/assets (served as /base and /data).
 */
export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  // A multi-page app: a missing file is a 404, not index.html (fetchModelFolder asks for optional files).
  appType: 'mpa',
  publicDir: fileURLToPath(new URL('../../metal-lora/assets', import.meta.url)),
  resolve: { conditions: ['source', 'browser', 'module', 'import', 'default'] },
  plugins: [
    {
      name: 'wgsl-text',
      transform(code: string, id: string) {
        if (id.endsWith('.wgsl')) return { code: `export default ${JSON.stringify(code)};`, map: null };
      },
    },
  ],
  optimizeDeps: { exclude: ['webgpu'] },
  build: {
    outDir: fileURLToPath(new URL('../dist-web', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    rollupOptions: {
      external: ['webgpu'],
      input: {
        index: fileURLToPath(new URL('./index.html', import.meta.url)),
        finetune: fileURLToPath(new URL('./finetune.html', import.meta.url)),
      },
    },
  },
});
