import { packageTestConfig } from '../../vitest.shared';

// Software Vulkan (lavapipe) compiles shaders slowly: allow GPU tests more time. (Two workers
// were tried: in CI, beside the other packages' suites on 2 cores, metal-kernels ran no faster
// with an empty shader cache, 968 s against 972, and another package's vitest worker timed out.)
// The fused attention test took 143 s with an empty shader cache in CI (2026-12-04): 300 s, as in
// nn and metal-lora, leaves room on a slower machine.
export default packageTestConfig({ testTimeout: 300_000 });
