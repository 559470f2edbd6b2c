import { broadcastStrides, type DType, type KernelOutput, registerKernel, sizeOf, stridesOf } from '@metal-lora/tensor';
import type { GpuData, WebGPUBackend } from '../backend';
import copySource from '../wgsl/copy-strided.wgsl';
import gatherSource from '../wgsl/gather.wgsl';
import scatterSource from '../wgsl/scatter-add.wgsl';
import writeKVSource from '../wgsl/write-kv.wgsl';
import writeSliceSource from '../wgsl/write-slice.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform, vec8 } from './common';
import { fill } from './elementwise';

export interface StridedCopy {
  shape: readonly number[];
  srcOffset: number;
  srcStrides: readonly number[];
  dstOffset: number;
  dstStrides: readonly number[];
}

/** Records dst[...] = src[...] over an index space (see copy-strided.wgsl). */
export function stridedCopy(backend: WebGPUBackend, dtype: DType, src: GPUBuffer, dst: GPUBuffer, copy: StridedCopy, label: string): void {
  const n = sizeOf(copy.shape);
  if (n === 0) return;
  if (copy.shape.length > 8) throw new RangeError(`${label}: rank ${copy.shape.length} exceeds the GPU kernels' limit of 8`);
  const t = typeOf(backend, dtype, label);
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('copy-strided', copySource, { ENABLE: enableFor(t), T: t });
  const params = uniform([
    n,
    copy.shape.length,
    gridX,
    copy.srcOffset,
    copy.dstOffset,
    0,
    0,
    0,
    ...vec8(copy.shape),
    ...vec8(copy.srcStrides),
    ...vec8(copy.dstStrides),
  ]);
  backend.dispatch({ key, source, buffers: [src, dst], uniform: params, workgroups, label });
}

/** A contiguous permuted copy of a tensor's buffer: out[i...] = x[perm-indexed]. */
export function permuteData(
  backend: WebGPUBackend,
  x: { buffer: GPUBuffer; shape: readonly number[]; dtype: DType },
  perm: readonly number[],
  label: string,
): GpuData {
  const outShape = perm.map((p) => x.shape[p]);
  const inStrides = stridesOf(x.shape);
  const y = backend.allocate(x.dtype, sizeOf(outShape), label);
  stridedCopy(
    backend,
    x.dtype,
    x.buffer,
    y.buffer,
    { shape: outShape, srcOffset: 0, srcStrides: perm.map((p) => inStrides[p]), dstOffset: 0, dstStrides: stridesOf(outShape) },
    label,
  );
  return y;
}

function transposeKernel({ inputs: [x], attrs, backend }: Args<'transpose'>): KernelOutput {
  const perm: number[] = attrs.perm;
  const y = permuteData(backend, { buffer: buf(x), shape: x.shape, dtype: x.dtype }, perm, 'transpose');
  return out(
    y,
    perm.map((p) => x.shape[p]),
    x.dtype,
  );
}

function broadcastToKernel({ inputs: [x], attrs, backend }: Args<'broadcastTo'>): KernelOutput {
  const shape: number[] = attrs.shape;
  const y = backend.allocate(x.dtype, sizeOf(shape), 'broadcastTo');
  stridedCopy(
    backend,
    x.dtype,
    buf(x),
    y.buffer,
    { shape, srcOffset: 0, srcStrides: broadcastStrides(x.shape, shape), dstOffset: 0, dstStrides: stridesOf(shape) },
    'broadcastTo',
  );
  return out(y, [...shape], x.dtype);
}

function sliceKernel({ inputs: [x], attrs, backend }: Args<'slice'>): KernelOutput {
  const { begin, size }: { begin: number[]; size: number[] } = attrs;
  const strides = stridesOf(x.shape);
  const y = backend.allocate(x.dtype, sizeOf(size), 'slice');
  const srcOffset = begin.reduce((acc, b, d) => acc + b * strides[d], 0);
  stridedCopy(backend, x.dtype, buf(x), y.buffer, { shape: size, srcOffset, srcStrides: strides, dstOffset: 0, dstStrides: stridesOf(size) }, 'slice');
  return out(y, [...size], x.dtype);
}

function padKernel({ inputs: [x], attrs, backend }: Args<'pad'>): KernelOutput {
  const paddings: [number, number][] = attrs.paddings;
  const outShape = x.shape.map((d, i) => d + paddings[i][0] + paddings[i][1]);
  const y = fill(backend, x.dtype, sizeOf(outShape), attrs.value, 'pad');
  const outStrides = stridesOf(outShape);
  const dstOffset = paddings.reduce((acc, [before], d) => acc + before * outStrides[d], 0);
  stridedCopy(backend, x.dtype, buf(x), y.buffer, { shape: x.shape, srcOffset: 0, srcStrides: stridesOf(x.shape), dstOffset, dstStrides: outStrides }, 'pad');
  return out(y, outShape, x.dtype);
}

function concatKernel({ inputs, attrs, backend }: Args<'concat'>): KernelOutput {
  const axis: number = attrs.axis;
  const first = inputs[0];
  const outShape = [...first.shape];
  outShape[axis] = inputs.reduce((acc, t) => acc + t.shape[axis], 0);
  const outStrides = stridesOf(outShape);
  const y = backend.allocate(first.dtype, sizeOf(outShape), 'concat');
  let offset = 0;
  for (const t of inputs) {
    stridedCopy(
      backend,
      t.dtype,
      buf(t),
      y.buffer,
      { shape: t.shape, srcOffset: 0, srcStrides: stridesOf(t.shape), dstOffset: offset * outStrides[axis], dstStrides: outStrides },
      'concat',
    );
    offset += t.shape[axis];
  }
  return out(y, outShape, first.dtype);
}

function gatherKernel({ inputs: [table, indices], attrs, backend }: Args<'gather'>): KernelOutput {
  const axis: number = attrs.axis;
  const t = typeOf(backend, table.dtype, 'gather');
  const outer = sizeOf(table.shape.slice(0, axis));
  const len = table.shape[axis];
  const inner = sizeOf(table.shape.slice(axis + 1));
  const count = sizeOf(indices.shape);
  const outShape = [...table.shape.slice(0, axis), ...indices.shape, ...table.shape.slice(axis + 1)];
  const n = outer * count * inner;
  const y = backend.allocate(table.dtype, n, 'gather');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('gather', gatherSource, { ENABLE: enableFor(t), T: t });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(table), buf(indices), y.buffer],
      uniform: uniform([n, len, inner, count, gridX]),
      workgroups,
      label: 'gather',
    });
  return out(y, outShape, table.dtype);
}

function scatterAddKernel({ inputs: [indices, updates], attrs, backend }: Args<'scatterAdd'>): KernelOutput {
  const axis: number = attrs.axis;
  const shape: number[] = attrs.shape;
  const t = typeOf(backend, updates.dtype, 'scatterAdd');
  const len = shape[axis];
  const inner = sizeOf(shape.slice(axis + 1));
  const count = sizeOf(indices.shape);
  const n = sizeOf(shape);
  const y = backend.allocate(updates.dtype, n, 'scatterAdd');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('scatter-add', scatterSource, { ENABLE: enableFor(t), T: t });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(indices), buf(updates), y.buffer],
      uniform: uniform([n, len, inner, count, gridX]),
      workgroups,
      label: 'scatterAdd',
    });
  return out(y, [...shape], updates.dtype);
}

/** `writeSlice`: values copied into the target's own buffer from the start its buffer holds (write-slice.wgsl). */
function writeSliceKernel({ inputs: [target, values, start], attrs: { axis }, backend }: Args<'writeSlice'>): Record<string, never> {
  const t = typeOf(backend, target.dtype, 'writeSlice');
  const span = values.shape[axis];
  const inner = sizeOf(target.shape.slice(axis + 1));
  const n = sizeOf(values.shape);
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('write-slice', writeSliceSource, { ENABLE: enableFor(t), T: t });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(values), buf(start), buf(target)],
      uniform: uniform([n, span, inner, target.shape[axis], gridX]),
      workgroups,
      label: 'writeSlice',
    });
  return {};
}

/** `writeKV`: k (rotated by the tables when given) and v into the cache from the start its buffer holds (write-kv.wgsl). */
function writeKVKernel({ inputs: [keys, values, k, v, start, cos, sin], backend }: Args<'writeKV'>): Record<string, never> {
  const t = typeOf(backend, keys.dtype, 'writeKV');
  const [, H, S, D] = keys.shape;
  const n = sizeOf(k.shape);
  const rotary = cos && sin ? { cos, sin } : null;
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('write-kv', writeKVSource, { ENABLE: enableFor(t), T: t, ROTARY: rotary ? '1' : '0' });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      constants: rotary ? { PER_SEQ: rotary.cos.shape.length === 4 ? 1 : 0 } : {},
      buffers: [buf(k), buf(v), buf(start), buf(keys), buf(values), rotary ? buf(rotary.cos) : null, rotary ? buf(rotary.sin) : null],
      uniform: uniform([n, D, H, k.shape[1], S, rotary ? rotary.cos.shape[rotary.cos.shape.length - 1] : 0, gridX]),
      workgroups,
      label: 'writeKV',
    });
  return {};
}

export function registerLayoutKernels(): void {
  registerKernel('webgpu', 'writeSlice', writeSliceKernel);
  registerKernel('webgpu', 'writeKV', writeKVKernel);
  registerKernel('webgpu', 'transpose', transposeKernel);
  registerKernel('webgpu', 'broadcastTo', broadcastToKernel);
  registerKernel('webgpu', 'slice', sliceKernel);
  registerKernel('webgpu', 'pad', padKernel);
  registerKernel('webgpu', 'concat', concatKernel);
  registerKernel('webgpu', 'gather', gatherKernel);
  registerKernel('webgpu', 'scatterAdd', scatterAddKernel);
}
