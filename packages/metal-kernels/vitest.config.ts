import { packageTestConfig } from '../../vitest.shared';

// Software Vulkan (lavapipe) compiles shaders slowly: allow GPU tests more time, and two test
// files at once (compiling is single-threaded; on a 2-core machine with no shader cache the GEMM
// and gemv files took 828 s in one worker).
export default packageTestConfig({ testTimeout: 180_000, maxWorkers: 2 });
