import attentionKeyChunks from './attention-key-chunks.wgsl';
import attentionScores from './attention-scores.wgsl';
import counterHash from './counter-hash.wgsl';
import gemmEpilogue from './gemm-epilogue.wgsl';
import gemmQuant from './gemm-quant.wgsl';
import gemmUniform from './gemm-uniform.wgsl';
import quantUnpack from './quant-unpack.wgsl';
import ropePair from './rope-pair.wgsl';
import rowReduce from './row-reduce.wgsl';
import sigmoid from './sigmoid.wgsl';
import stridedIndex from './strided-index.wgsl';

/**
 * The shared WGSL pieces by name (the file's name without `.wgsl`): what `specialize` splices in
 * for `{{>name}}`. A static table of imported sources, so includes work in browsers too.
 */
export const wgslPieces: Readonly<Record<string, string>> = {
  'attention-key-chunks': attentionKeyChunks,
  'attention-scores': attentionScores,
  'counter-hash': counterHash,
  'gemm-epilogue': gemmEpilogue,
  'gemm-quant': gemmQuant,
  'gemm-uniform': gemmUniform,
  'quant-unpack': quantUnpack,
  'rope-pair': ropePair,
  'row-reduce': rowReduce,
  sigmoid,
  'strided-index': stridedIndex,
};
