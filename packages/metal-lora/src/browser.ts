/**
 * `metal-lora/browser`: the parts of the main job that run in a browser (no Node built-ins):
 * models from fetched bytes, the tokenizer, the embedded texts, training and sampling.
 */
import '@metal-lora/metal-kernels';

export { batchOf } from './batches';
export { kitchenJournal, shipsLog } from './corpus';
export { generate } from './generate';
export { modelFromFiles } from './model-bytes';
export { CharTokenizer } from './tokenizer';
export { evaluate, type TrainOptions, trainLoop } from './trainer';
