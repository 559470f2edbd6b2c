export * from './elementwise';
export * from './indexing';
export * from './layout';
export * from './lora';
export * from './matmul';
export * from './reduce';
