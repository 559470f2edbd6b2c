import { rope, type Tensor, tensor } from '@metal-lora/tensor';

/** Llama 3's RoPE scaling: low frequencies divided by `factor`, high ones kept, the band between smoothed. */
export interface Llama3RopeScaling {
  rope_type: 'llama3';
  factor: number;
  low_freq_factor: number;
  high_freq_factor: number;
  original_max_position_embeddings: number;
}

/** Linear ("position interpolation") scaling: every frequency divided by `factor` (Gemma 3's global layers). */
export interface LinearRopeScaling {
  rope_type: 'linear';
  factor: number;
}

/** The RoPE scalings a model may use; any other `rope_type` is refused when the config is read. */
export type RopeScaling = Llama3RopeScaling | LinearRopeScaling;

/**
 * RoPE's inverse frequencies for a rotary dimension: `theta^(-2i/d)`, scaled where the config says
 * (transformers' `_compute_llama3_parameters` / `_compute_linear_scaling_rope_parameters`).
 */
export function ropeInverseFrequencies(rotaryDim: number, theta: number, scaling: RopeScaling | null = null): Float64Array {
  const half = rotaryDim / 2;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / theta ** ((2 * i) / rotaryDim));
  if (!scaling) return inv;
  if (scaling.rope_type === 'linear') return inv.map((f) => f / scaling.factor);
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: context } = scaling;
  const lowWavelen = context / low;
  const highWavelen = context / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / factor;
    const smooth = (context / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/** cos and sin of every position's angles, `[T, rotaryDim]` (or `[B, 1, T, rotaryDim]` with a row per sequence), both halves equal. */
export interface RopeTables {
  cos: Tensor;
  sin: Tensor;
}

/**
 * The tables for `positions`: one list shared by every sequence of the batch, or one list per
 * sequence (left-padded batches, whose rows start at different cache slots).
 */
export function ropeTables(invFreq: Float64Array, positions: readonly number[] | readonly (readonly number[])[], like: Tensor): RopeTables {
  const { cos, sin, shape } = ropeTableValues(invFreq, positions);
  const options = { dtype: like.dtype, backend: like.backend };
  return { cos: tensor(cos, shape, options), sin: tensor(sin, shape, options) };
}

/** The values and shape of {@link ropeTables}' tables. */
export function ropeTableValues(
  invFreq: Float64Array,
  positions: readonly number[] | readonly (readonly number[])[],
): { cos: Float64Array; sin: Float64Array; shape: number[] } {
  const rows = (typeof positions[0] === 'number' ? [positions] : positions) as readonly (readonly number[])[];
  const T = rows[0].length;
  const half = invFreq.length;
  const dim = 2 * half;
  const cos = new Float64Array(rows.length * T * dim);
  const sin = new Float64Array(rows.length * T * dim);
  rows.forEach((row, b) => {
    for (let t = 0; t < T; t++) {
      const base = (b * T + t) * dim;
      for (let i = 0; i < half; i++) {
        const angle = row[t] * invFreq[i];
        cos[base + i] = cos[base + half + i] = Math.cos(angle);
        sin[base + i] = sin[base + half + i] = Math.sin(angle);
      }
    }
  });
  return { cos, sin, shape: rows === positions ? [rows.length, 1, T, dim] : [T, dim] };
}

/**
 * Rotary position embedding (the "rotate half" form of Hugging Face models) of x `[B, H, T, Dh]`:
 * the first `rotaryDim` features of each head are rotated (all of them unless the model rotates
 * only part, as Phi-3's `partial_rotary_factor`), the rest pass through. Either `theta` (a RoPE
 * base or inverse frequencies) with positions `offset..offset+T`, or precomputed tables.
 */
export function applyRope(x: Tensor, source: number | Float64Array | RopeTables, offset = 0): Tensor {
  const [, , T, dh] = x.shape;
  if (typeof source !== 'number' && !(source instanceof Float64Array)) return rope(x, source.cos, source.sin);
  const inv = typeof source === 'number' ? ropeInverseFrequencies(dh, source) : source;
  const tables = ropeTables(
    inv,
    Array.from({ length: T }, (_, t) => t + offset),
    x,
  );
  const y = rope(x, tables.cos, tables.sin);
  tables.cos.dispose();
  tables.sin.dispose();
  return y;
}
