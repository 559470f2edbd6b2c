/**
 * A counter-based generator: the n-th random number of a stream is a pure function of
 * (key, n), so results do not depend on the backend, on the order numbers are drawn in, or on
 * how work is split across GPU threads. The same integer hash is written in WGSL for dropout
 * masks, so a GPU kernel and the CPU reference produce the same mask bit for bit.
 *
 * The hash is a 32-bit avalanche mixer (xor-shift / multiply rounds); it is not cryptographic.
 */

/** One 32-bit avalanche round, as `mix32` in metal-kernels' one WGSL copy (`wgsl/lib/counter-hash.wgsl`; its test compares them bit for bit). */
export function mix32(x: number): number {
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  return (x ^ (x >>> 16)) >>> 0;
}

/** The u32 at position `counter` of the stream `key`. */
export function randomBits(key: number, counter: number): number {
  const k = mix32((key ^ 0x9e3779b9) >>> 0);
  return mix32((mix32((counter + k) >>> 0) ^ k) >>> 0);
}

/** Uniform in [0, 1) with 24 bits, exactly representable in f32 (so the GPU agrees). */
export function uniformAt(key: number, counter: number): number {
  return (randomBits(key, counter) >>> 8) * 2 ** -24;
}

/** Whether element `index` survives dropout with probability `p` under `seed`. */
export function dropoutKeep(seed: number, index: number, p: number): boolean {
  return uniformAt(seed, index) >= p;
}

let globalSeed = 0x5eed;
let streamCounter = 0;

/** Seeds the global generator: random ops without an explicit seed draw their keys from it. */
export function manualSeed(seed: number): void {
  globalSeed = seed >>> 0;
  streamCounter = 0;
}

/** The global generator's position, to draw the same keys again (`checkpoint`'s recomputation). */
export function rngState(): readonly [number, number] {
  return [globalSeed, streamCounter];
}

export function setRngState(state: readonly [number, number]): void {
  [globalSeed, streamCounter] = state;
}

/** A fresh stream key from the global generator (used when an op gets no seed). */
export function nextSeed(): number {
  return randomBits(globalSeed, streamCounter++);
}

/** `n` uniforms in [low, high) from stream `key`. */
export function uniformValues(key: number, n: number, low: number, high: number, out: Float64Array | Float32Array): void {
  const span = high - low;
  for (let i = 0; i < n; i++) out[i] = low + span * uniformAt(key, i);
}

/** `n` normals (Box-Muller on counters 2i and 2i+1) from stream `key`. */
export function normalValues(key: number, n: number, mean: number, std: number, out: Float64Array | Float32Array): void {
  for (let i = 0; i < n; i += 2) {
    const u1 = ((randomBits(key, 2 * i) >>> 8) + 1) * 2 ** -24; // (0, 1]: log is finite
    const u2 = uniformAt(key, 2 * i + 1);
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = mean + std * r * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = mean + std * r * Math.sin(2 * Math.PI * u2);
  }
}
