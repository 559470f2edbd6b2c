import type { DType } from '../dtype';
import type { Shape } from '../shape';
import type { Tensor } from '../tensor';
import type { QuantSpec } from '../quantize';
import type { OpAttrs } from './op-names';

/**
 * An op's gradient rule: the output's gradient `dy`, the tensors its forward pass saved (in the
 * order saved), the forward pass's context and the op's inputs → one gradient per input, or null
 * where none flows. Rules are written with other ops, so they run on every backend.
 */
export type GradientRule<C> = (dy: Tensor, saved: readonly Tensor[], context: C, inputs: readonly Tensor[]) => readonly (Tensor | null)[];

/** A broadcasting binary op: its operands' shapes and which of them needed a gradient. */
export interface BinaryContext {
  aShape: Shape;
  bShape: Shape;
  needA: boolean;
  needB: boolean;
}

type None = Record<string, never>;

/**
 * What the forward pass of each differentiable op hands its rule in `ops/gradients.ts` (shapes,
 * attrs, which inputs needed a gradient), and in comments the tensors it saves for it.
 */
export interface GradientContexts {
  neg: None;
  /** saves [y] */
  exp: None;
  /** saves [x] */
  log: None;
  /** saves [y] */
  sqrt: None;
  /** saves [y] */
  tanh: None;
  /** saves [y] */
  sigmoid: None;
  /** saves [x] */
  silu: None;
  /** saves [x] */
  relu: None;
  /** saves [x] */
  erf: None;
  /** saves [x] */
  abs: None;
  /** saves [x] */
  gelu: { approximate: OpAttrs['gelu']['approximate'] };
  add: BinaryContext;
  sub: BinaryContext;
  /** saves [a, b] */
  mul: BinaryContext;
  /** saves [b, y] */
  div: BinaryContext;
  /** saves [a, b, y] */
  pow: BinaryContext;
  /** saves [a, b] */
  maximum: BinaryContext;
  /** saves [cond] */
  where: { aShape: Shape; bShape: Shape };
  /** `from`: the input's dtype, null when the cast changed nothing. */
  cast: { from: DType | null };
  /** `shape`: the input's. */
  broadcastTo: { shape: Shape };
  /** `shape`: the input's; `kept`: the output's with the reduced axes kept as 1. */
  sum: { shape: Shape; kept: Shape };
  /** saves [x, y] */
  max: { axes: readonly number[]; kept: Shape };
  /** saves [y] */
  softmax: { axis: number };
  /** saves [y] */
  logSoftmax: { axis: number };
  /** `shape`: the input's. */
  reshape: { shape: Shape };
  transpose: { inverse: readonly number[] };
  slice: { paddings: readonly (readonly [number, number])[] };
  pad: { begin: readonly number[]; end: readonly number[] };
  concat: { axis: number };
  /** saves [indices] */
  gather: { axis: number; shape: readonly number[] };
  /** saves [indices] */
  scatterAdd: { axis: number };
  /** saves [a, b] */
  matmul: { transposeA: boolean; transposeB: boolean } & BinaryContext;
  /** saves [x as [M, in], weight, loraA, loraB, t]; `needs`: per input (x, weight, loraA, loraB, bias?). */
  loraLinear: { scale: number; dropout: number; seed: number; needs: readonly boolean[]; xShape: Shape; outFeatures: number; quant: QuantSpec | null };
  /** saves [logits, targets, weights, logsumexp] */
  softmaxCrossEntropy: None;
  /** saves [the gradient in h of the summed loss rows, per row] */
  linearCrossEntropy: None;
  /** saves [x as [rows, D], weight, rstd] */
  rmsNorm: { features: number; xShape: Shape; offset: boolean };
  /** saves [cos, sin]; `bthd`: x came in the projection's layout. */
  rope: { inverse: boolean; bthd: boolean };
  /** saves [gate, up] */
  gatedActivation: { activation: OpAttrs['gatedActivation']['activation'] };
  /** saves [y] */
  maskedSoftmax: { scale: number };
  attention: { scale: number; causal: boolean };
  /** saves [weight, scales, biases] */
  quantizedMatmul: { bits: number; groupSize: number; transpose: boolean };
}

/** One rule per differentiable op. */
export type GradientTable = { readonly [K in keyof GradientContexts]: GradientRule<GradientContexts[K]> };
