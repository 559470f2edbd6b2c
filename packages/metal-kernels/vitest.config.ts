import { packageTestConfig } from '../../vitest.shared';

// Software Vulkan (lavapipe) compiles shaders slowly: allow GPU tests more time.
export default packageTestConfig({ testTimeout: 180_000 });
