/**
 * What the two bandwidth-bound kernels (gemv-rows, gemv-cols) share: one operand is large and read
 * once, the other has few rows (decode, M ≤ 16) or is a rank-sized adapter matrix (N or M = r).
 * Their inner statements are generated in TypeScript, one scalar or vec4 per accumulator, because
 * accumulator arrays spill to local memory.
 */
import { enableFor } from '../kernels/common';
import { epilogueConstants } from './uniform';

export interface GemvOperands {
  a: GPUBuffer;
  b: GPUBuffer;
  bias?: GPUBuffer;
  /** gemv-rows streaming B only: add s·T·Bᵀ (T [M, r], B [N, r]) before α. */
  lora?: { t: GPUBuffer; b: GPUBuffer; r: number; scale: number };
  /**
   * gemv-rows streaming B, no `lora`: a second matrix W2 [rows, K] streamed after B's rows, X·W2ᵀ
   * written to `c` ([M, rows], no α, β or bias), or with `split` to columns N..N + rows of the
   * workspace ([splits, M, N + rows]; `c` unused). The decode LoRA forward's T = x·Aᵀ.
   */
  concat?: { w: GPUBuffer; c: GPUBuffer; rows: number };
  /** C, or the split-K workspace [splits, M·N] (f32) when `split`. */
  c: GPUBuffer;
  /** The operands' element type (C's too, unless `split`). */
  t: 'f32' | 'f16';
  alpha: number;
  beta: number;
  split: boolean;
}

/** Element types of a gemv dispatch: T for the operands, TC for C (f32 when C is the split-K workspace). */
export interface GemvTypes {
  t: 'f32' | 'f16';
  tc: 'f32' | 'f16';
}

export function gemvTypeValues(types: GemvTypes): Record<string, string> {
  return { ENABLE: enableFor(types.t, types.tc), T: types.t, TC: types.tc };
}

/** The overrides both gemv kernels share: which operand is streamed (C stored transposed to it when A is) and the epilogue. */
export function gemvEpilogueFlags(ops: GemvOperands, streamB: boolean): Record<string, number> {
  return { OUT_T: streamB ? 0 : 1, ...epilogueConstants(ops), SPLIT: ops.split ? 1 : 0 };
}
