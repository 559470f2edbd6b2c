import { packageTestConfig } from '../../vitest.shared';

export default packageTestConfig({ testTimeout: 300_000 });
