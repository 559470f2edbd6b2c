import { type KernelOutput, type OpOutputs, registerKernel } from '@metal-lora/tensor';
import backwardSource from '../wgsl/cross-entropy-backward.wgsl';
import forwardSource from '../wgsl/cross-entropy.wgsl';
import { type Args, buf, enableFor, grid1d, gridRows, out, shader, typeOf, uniform } from './common';

/** `softmaxCrossEntropy`: one workgroup per row, one pass (cross-entropy.wgsl). */
function crossEntropyKernel({ inputs: [logits, targets, weights], backend }: Args<'softmaxCrossEntropy'>): OpOutputs['softmaxCrossEntropy'] {
  const t = typeOf(backend, logits.dtype, 'softmaxCrossEntropy');
  const [rows, len] = logits.shape;
  const loss = backend.allocate(logits.dtype, rows, 'softmaxCrossEntropy loss');
  const lse = backend.allocate(logits.dtype, rows, 'softmaxCrossEntropy lse');
  const { workgroups, gridX } = gridRows(rows);
  const { key, source } = shader('cross-entropy', forwardSource, { ENABLE: enableFor(t), T: t });
  if (rows > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(logits), buf(targets), buf(weights), loss.buffer, lse.buffer],
      uniform: uniform([rows, len, gridX]),
      workgroups,
      label: 'softmaxCrossEntropy',
    });
  return { loss: out(loss, [rows], logits.dtype), logsumexp: out(lse, [rows], logits.dtype) };
}

/** `softmaxCrossEntropyBackward`: elementwise over the logits (cross-entropy-backward.wgsl). */
function crossEntropyBackwardKernel({ inputs: [logits, targets, weights, lse, dloss], backend }: Args<'softmaxCrossEntropyBackward'>): KernelOutput {
  const t = typeOf(backend, logits.dtype, 'softmaxCrossEntropyBackward');
  const [rows, len] = logits.shape;
  const n = rows * len;
  const dx = backend.allocate(logits.dtype, n, 'softmaxCrossEntropy dlogits');
  const { workgroups, gridX } = grid1d(n);
  const { key, source } = shader('cross-entropy-backward', backwardSource, { ENABLE: enableFor(t), T: t });
  if (n > 0)
    backend.dispatch({
      key,
      source,
      buffers: [buf(logits), buf(targets), buf(weights), buf(lse), buf(dloss), dx.buffer],
      uniform: uniform([n, len, gridX]),
      workgroups,
      label: 'softmaxCrossEntropyBackward',
    });
  return out(dx, [rows, len], logits.dtype);
}

export function registerLossKernels(): void {
  registerKernel('webgpu', 'softmaxCrossEntropy', crossEntropyKernel);
  registerKernel('webgpu', 'softmaxCrossEntropyBackward', crossEntropyBackwardKernel);
}
