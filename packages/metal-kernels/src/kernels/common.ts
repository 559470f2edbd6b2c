import { type DType, DTypeError, type KernelArgs, type KernelOutput, type OpName, type TensorRef } from '@metal-lora/tensor';
import { type GpuData, type WebGPUBackend, wgslType } from '../backend';
import { specialize } from '../shader';

export type Args<K extends OpName = OpName> = KernelArgs<K, WebGPUBackend>;

export const WG = 256;

/** Workgroup counts for n threads in groups of `wg`, folded into (x, y) under the 65535 limit. */
export function grid1d(n: number, wg = WG): { workgroups: [number, number, number]; gridX: number } {
  const groups = Math.max(1, Math.ceil(n / wg));
  const x = Math.min(groups, 65535);
  const y = Math.ceil(groups / x);
  return { workgroups: [x, y, 1], gridX: x * wg };
}

/** Workgroup counts for `rows` one-workgroup-per-row kernels. */
export function gridRows(rows: number): { workgroups: [number, number, number]; gridX: number } {
  const x = Math.max(1, Math.min(rows, 65535));
  return { workgroups: [x, Math.ceil(Math.max(rows, 1) / x), 1], gridX: x };
}

/** `enable f16;` where the source touches f16 (the device must have `shader-f16`). */
export function enableFor(...types: string[]): string {
  return types.includes('f16') ? 'enable f16;' : '';
}

const sourceCache = new Map<string, string>();

/** Specialized WGSL text, cached by kernel and substitutions. */
export function shader(kernel: string, template: string, values: Record<string, string>): { key: string; source: string } {
  return generatedShader(kernel, template, values, () => values);
}

/**
 * Like {@link shader} for templates whose substitutions are generated code: the key is built from
 * the small `params` that determine the text, and `values` runs only the first time, so recording
 * a dispatch never rebuilds or hashes kilobytes of WGSL (that was a visible share of a gemv dispatch's host time).
 */
export function generatedShader(
  kernel: string,
  template: string,
  params: Record<string, string | number>,
  values: () => Record<string, string>,
): { key: string; source: string } {
  const key = `${kernel}<${Object.entries(params)
    .map(([k, v]) => `${k}=${v}`)
    .join(',')}>`;
  let source = sourceCache.get(key);
  if (!source) {
    source = specialize(kernel, template, values());
    sourceCache.set(key, source);
  }
  return { key, source };
}

/** `n` lines of generated WGSL, line i from `f(i)` (the straight-line statements of the gemv and lora-dual kernels). */
export function lines(n: number, f: (i: number) => string): string {
  return Array.from({ length: n }, (_, i) => f(i)).join('\n');
}

/** A uniform block from 32-bit fields: integers as u32, and `f32` markers for floats. */
export function uniform(fields: (number | { f32: number })[]): ArrayBuffer {
  const buf = new ArrayBuffer(Math.ceil((fields.length * 4) / 16) * 16);
  const u = new Uint32Array(buf);
  const f = new Float32Array(buf);
  fields.forEach((v, i) => {
    if (typeof v === 'number') u[i] = v >>> 0;
    else f[i] = v.f32;
  });
  return buf;
}

/** Fields for `array<vec4u, 2>` (8 entries), zero-padded. */
export function vec8(values: readonly number[]): number[] {
  const out = new Array<number>(8).fill(0);
  values.forEach((v, i) => {
    out[i] = v;
  });
  return out;
}

export function buf(ref: TensorRef): GPUBuffer {
  return (ref.data as GpuData).buffer;
}

export function out(data: GpuData, shape: number[], dtype: DType): KernelOutput {
  return { data, shape, dtype };
}

/** WGSL type, checking f16 support on this device. */
export function typeOf(backend: WebGPUBackend, dtype: DType, op: string): 'f32' | 'f16' | 'i32' | 'u32' {
  const t = wgslType(dtype, op);
  if (t === 'f16' && !backend.context.report.shaderF16) {
    throw new DTypeError(
      op,
      "float16 on webgpu needs the 'shader-f16' feature",
      'an adapter with shader-f16',
      backend.context.report.description || 'an adapter without it',
    );
  }
  return t;
}

/** A 4-byte buffer standing in for an unused optional binding. */
export function dummy(backend: WebGPUBackend): GPUBuffer {
  const cached = dummies.get(backend);
  if (cached) return cached;
  const b = backend.device.createBuffer({ label: 'unused binding', size: 16, usage: GPUBufferUsage.STORAGE });
  dummies.set(backend, b);
  return b;
}
const dummies = new WeakMap<WebGPUBackend, GPUBuffer>();
