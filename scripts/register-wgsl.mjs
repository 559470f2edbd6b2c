// `node --import ./scripts/register-wgsl.mjs`: lets Node import the kernels' .wgsl sources as
// text when running TypeScript sources directly (tsx), as tsup's text loader does for builds.
import { register } from 'node:module';

register('./wgsl-hooks.mjs', import.meta.url);
