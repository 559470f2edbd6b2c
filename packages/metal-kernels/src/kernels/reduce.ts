import { type KernelOutput, reducedShapeOf, registerKernel, sizeOf } from '@metal-lora/tensor';
import reduceSource from '../wgsl/reduce-rows.wgsl';
import softmaxSource from '../wgsl/softmax.wgsl';
import { type Args, buf, enableFor, gridRows, out, shader, typeOf, uniform } from './common';
import { permuteData } from './layout';

/** Moves `axes` to the end (no copy when they already are). Returns the buffer and its row view. */
function rowsView(args: Args<'sum' | 'max' | 'softmax' | 'logSoftmax'>, axes: readonly number[]) {
  const [x] = args.inputs;
  const rank = x.shape.length;
  const keep = Array.from({ length: rank }, (_, i) => i).filter((i) => !axes.includes(i));
  const perm = [...keep, ...axes];
  const trailing = perm.every((p, i) => p === i);
  const len = sizeOf(axes.map((a) => x.shape[a]));
  const rows = sizeOf(keep.map((a) => x.shape[a]));
  if (trailing) return { buffer: buf(x), rows, len, perm, temp: null };
  const temp = permuteData(args.backend, { buffer: buf(x), shape: x.shape, dtype: x.dtype }, perm, 'reduce permute');
  return { buffer: temp.buffer, rows, len, perm, temp };
}

function reduceKernel(op: 'sum' | 'max') {
  return (args: Args<'sum' | 'max'>): KernelOutput => {
    const {
      inputs: [x],
      attrs,
      backend,
    } = args;
    const t = typeOf(backend, x.dtype, op);
    const view = rowsView(args, attrs.axes);
    const y = backend.allocate(x.dtype, view.rows, op);
    const { workgroups, gridX } = gridRows(view.rows);
    const { key, source } = shader('reduce-rows', reduceSource, { ENABLE: enableFor(t), T: t });
    if (view.rows > 0)
      backend.dispatch({
        key,
        source,
        constants: { OP: op === 'sum' ? 0 : 1 },
        buffers: [view.buffer, y.buffer],
        uniform: uniform([view.rows, view.len, gridX]),
        workgroups,
        label: op,
      });
    if (view.temp) backend.release(view.temp.buffer);
    return out(y, reducedShapeOf(x.shape, attrs.axes, attrs.keepDims), x.dtype);
  };
}

function softmaxKernel(log: boolean) {
  return (args: Args<'softmax' | 'logSoftmax'>): KernelOutput => {
    const {
      inputs: [x],
      attrs,
      backend,
    } = args;
    const t = typeOf(backend, x.dtype, log ? 'logSoftmax' : 'softmax');
    const view = rowsView(args, [attrs.axis]);
    const y = backend.allocate(x.dtype, sizeOf(x.shape), 'softmax');
    const { workgroups, gridX } = gridRows(view.rows);
    const { key, source } = shader('softmax', softmaxSource, { ENABLE: enableFor(t), T: t, MASK: '0', BACKWARD: '0' });
    if (view.rows > 0)
      backend.dispatch({
        key,
        source,
        constants: { LOG: log ? 1 : 0 },
        buffers: [view.buffer, null, y.buffer],
        uniform: uniform([view.rows, view.len, 1, view.rows, gridX, { f32: 1 }]),
        workgroups,
        label: 'softmax',
      });
    if (!view.temp) return out(y, [...x.shape], x.dtype);
    // Undo the permutation: the result was computed in the permuted layout.
    backend.release(view.temp.buffer);
    const permutedShape = view.perm.map((p) => x.shape[p]);
    const inverse = new Array<number>(view.perm.length);
    view.perm.forEach((p, i) => {
      inverse[p] = i;
    });
    const back = permuteData(backend, { buffer: y.buffer, shape: permutedShape, dtype: x.dtype }, inverse, 'softmax unpermute');
    backend.release(y.buffer);
    return out(back, [...x.shape], x.dtype);
  };
}

export function registerReduceKernels(): void {
  registerKernel('webgpu', 'sum', reduceKernel('sum'));
  registerKernel('webgpu', 'max', reduceKernel('max'));
  registerKernel('webgpu', 'softmax', softmaxKernel(false));
  registerKernel('webgpu', 'logSoftmax', softmaxKernel(true));
}
