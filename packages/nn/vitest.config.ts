import { packageTestConfig } from '../../vitest.shared';

// The fine-tuning test also runs on WebGPU (lavapipe in CI), which compiles shaders slowly.
export default packageTestConfig({ testTimeout: 300_000 });
