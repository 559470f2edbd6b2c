export * from './elementwise';
export * from './indexing';
export * from './layout';
export * from './loss';
export * from './lora';
export * from './matmul';
export * from './optim';
export * from './reduce';
