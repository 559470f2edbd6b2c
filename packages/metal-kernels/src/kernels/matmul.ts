import { broadcastShapes, broadcastStrides, type KernelOutput, registerKernel, sizeOf, stridesOf } from '@metal-lora/tensor';
import { gemmOutput, recordGemm } from '../gemm/record';
import { type Args, buf, out } from './common';
import { stridedCopy } from './layout';

function matmulKernel({ inputs: [a, b], attrs, backend }: Args<'matmul'>): KernelOutput {
  const transA: boolean = attrs.transposeA;
  const transB: boolean = attrs.transposeB;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batchShape = broadcastShapes('matmul', batchA, batchB);
  const batch = sizeOf(batchShape);
  // One stride per operand covers "same batch" and "no batch (broadcast)"; other broadcast
  // patterns are materialized first.
  const operand = (buffer: GPUBuffer, shape: readonly number[], own: readonly number[], rows: number, cols: number) => {
    const count = sizeOf(own);
    if (count === batch) return { buffer, stride: rows * cols, temp: null };
    if (count === 1) return { buffer, stride: 0, temp: null };
    const full = [...batchShape, rows, cols];
    const temp = backend.allocate(a.dtype, sizeOf(full), 'matmul broadcast');
    stridedCopy(
      backend,
      a.dtype,
      buffer,
      temp.buffer,
      { shape: full, srcOffset: 0, srcStrides: broadcastStrides(shape, full), dstOffset: 0, dstStrides: stridesOf(full) },
      'matmul broadcast',
    );
    return { buffer: temp.buffer, stride: rows * cols, temp };
  };
  const A = operand(buf(a), a.shape, batchA, a.shape[ra - 2], a.shape[ra - 1]);
  const B = operand(buf(b), b.shape, batchB, b.shape[rb - 2], b.shape[rb - 1]);
  const c = gemmOutput(backend, a.dtype, batch, M, N);
  try {
    recordGemm(
      backend,
      { M, N, K, batch, transA, transB, dtype: a.dtype === 'float16' ? 'float16' : 'float32' },
      { a: A.buffer, b: B.buffer, c: c.buffer, aBatchStride: A.stride, bBatchStride: B.stride, alpha: 1, beta: 0, dtype: a.dtype },
    );
  } catch (error) {
    // A refused product leaves nothing allocated behind.
    backend.release(c.buffer);
    throw error;
  } finally {
    if (A.temp) backend.release(A.temp.buffer);
    if (B.temp) backend.release(B.temp.buffer);
  }
  return out(c, [...batchShape, M, N], a.dtype);
}

export function registerMatmulKernel(): void {
  registerKernel('webgpu', 'matmul', matmulKernel);
}
