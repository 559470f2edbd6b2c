import {
  type BinaryOp,
  broadcastShapes,
  broadcastStrides,
  type DType,
  type KernelOutput,
  registerKernel,
  sizeOf,
  type TensorRef,
  type UnaryOp,
} from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import binarySource from '../wgsl/binary.wgsl';
import castSource from '../wgsl/cast.wgsl';
import fillSource from '../wgsl/fill.wgsl';
import unaryIntSource from '../wgsl/unary-int.wgsl';
import unarySource from '../wgsl/unary.wgsl';
import whereSource from '../wgsl/where.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform, vec8 } from './common';

const UNARY_CODES: Record<UnaryOp, number> = { neg: 0, exp: 1, log: 2, sqrt: 3, tanh: 4, sigmoid: 5, silu: 6, relu: 7, erf: 8, abs: 9, gelu: 10 };
const BINARY_CODES: Record<BinaryOp, number> = { add: 0, sub: 1, mul: 2, div: 3, pow: 4, maximum: 5, equal: 6, greater: 7, less: 8 };

function unaryKernel(op: UnaryOp) {
  return ({ inputs: [x], attrs, backend }: Args<UnaryOp>): KernelOutput => {
    const t = typeOf(backend, x.dtype, op);
    const n = sizeOf(x.shape);
    const y = backend.allocate(x.dtype, n, `${op} out`);
    const { workgroups, gridX } = grid1d(n);
    const isInt = t === 'i32';
    const { key, source } = isInt ? shader('unary-int', unaryIntSource, {}) : shader('unary', unarySource, { ENABLE: enableFor(t), T: t });
    const constants: Record<string, number> = { OP: UNARY_CODES[op] };
    if (op === 'gelu') constants.GELU_TANH = attrs.approximate === 'tanh' ? 1 : 0;
    backend.dispatch({ key, source, constants, buffers: [buf(x), y.buffer], uniform: uniform([n, gridX]), workgroups, label: op });
    return out(y, [...x.shape], x.dtype);
  };
}

function binaryKernel(op: BinaryOp) {
  const compare = op === 'equal' || op === 'greater' || op === 'less';
  return ({ inputs: [a, b], backend }: Args<BinaryOp>): KernelOutput => {
    const t = typeOf(backend, a.dtype, op);
    const shape = broadcastShapes(op, a.shape, b.shape);
    const n = sizeOf(shape);
    const dtype: DType = compare ? 'bool' : a.dtype;
    const o = compare ? 'u32' : t;
    const c = t === 'i32' ? 'i32' : t === 'u32' ? 'u32' : 'f32';
    const pow = c === 'f32' ? 'pow_f(x, y)' : 'i32(round(pow_f(f32(x), f32(y))))';
    const y = backend.allocate(dtype, n, `${op} out`);
    const { workgroups, gridX } = grid1d(n);
    const { key, source } = shader('binary', binarySource, { ENABLE: enableFor(t), T: t, O: o, C: c, POW: pow });
    const params = uniform([n, shape.length, gridX, 0, ...vec8(shape), ...vec8(broadcastStrides(a.shape, shape)), ...vec8(broadcastStrides(b.shape, shape))]);
    backend.dispatch({ key, source, constants: { OP: BINARY_CODES[op] }, buffers: [buf(a), buf(b), y.buffer], uniform: params, workgroups, label: op });
    return out(y, shape, dtype);
  };
}

function whereKernel({ inputs: [cond, a, b], backend }: Args<'where'>): KernelOutput {
  const t = typeOf(backend, a.dtype, 'where');
  const tc = typeOf(backend, cond.dtype, 'where');
  const shape = broadcastShapes('where', cond.shape, a.shape, b.shape);
  const n = sizeOf(shape);
  const y = backend.allocate(a.dtype, n, 'where out');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('where', whereSource, { ENABLE: enableFor(t, tc), T: t, TC: tc });
  const params = uniform([
    n,
    shape.length,
    gridX,
    0,
    ...vec8(shape),
    ...vec8(broadcastStrides(cond.shape, shape)),
    ...vec8(broadcastStrides(a.shape, shape)),
    ...vec8(broadcastStrides(b.shape, shape)),
  ]);
  backend.dispatch({ key, source, buffers: [buf(cond), buf(a), buf(b), y.buffer], uniform: params, workgroups, label: 'where' });
  return out(y, shape, a.dtype);
}

function castKernel({ inputs: [x], attrs, backend }: Args<'cast'>): KernelOutput {
  const to: DType = attrs.dtype;
  const ti = typeOf(backend, x.dtype, 'cast');
  const tt = typeOf(backend, to, 'cast');
  const n = sizeOf(x.shape);
  const y = backend.allocate(to, n, 'cast out');
  const { workgroups, gridX } = grid1d(n);
  // bool targets test != 0; int sources of bool become 0/1; float → int truncates (WGSL conversion).
  const convert = to === 'bool' ? `select(0u, 1u, x[i] != ${ti}(0))` : `${tt}(x[i])`;
  const { key, source } = shader('cast', castSource, { ENABLE: enableFor(ti, tt), TI: ti, TO: tt, CONVERT: convert });
  backend.dispatch({ key, source, buffers: [buf(x), y.buffer], uniform: uniform([n, gridX]), workgroups, label: 'cast' });
  return out(y, [...x.shape], to);
}

/** Fills a fresh buffer of `n` elements with `value`. */
export function fill(backend: WebGPUBackend, dtype: DType, n: number, value: number, label: string) {
  const t = typeOf(backend, dtype, label);
  const y = backend.allocate(dtype, n, label);
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('fill', fillSource, { ENABLE: enableFor(t), T: t });
  backend.dispatch({ key, source, buffers: [y.buffer], uniform: uniform([n, gridX, { f32: value }]), workgroups, label });
  return y;
}

export function registerElementwiseKernels(): void {
  for (const op of Object.keys(UNARY_CODES) as UnaryOp[]) registerKernel('webgpu', op, unaryKernel(op));
  for (const op of Object.keys(BINARY_CODES) as BinaryOp[]) registerKernel('webgpu', op, binaryKernel(op));
  registerKernel('webgpu', 'where', whereKernel);
  registerKernel('webgpu', 'cast', castKernel);
}

export type { TensorRef };
