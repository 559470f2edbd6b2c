import type { Backend, KernelOutput, MemoryInfo, TensorRef } from '../backend';
import { type DType, type StorageArray, type ValueArray, allocValues, fromStorage, toStorage } from '../dtype';

/**
 * The reference backend: data in typed arrays, kernels in plain loops. It is also the fallback
 * users train on without a GPU, so matmul is cache-blocked (see `cpu/matmul.ts`).
 */
export class CpuBackend implements Backend {
  readonly name = 'cpu';
  private live = 0;
  private peak = 0;
  private buffers = 0;

  upload(values: StorageArray): StorageArray {
    this.live += values.byteLength;
    this.buffers++;
    if (this.live > this.peak) this.peak = this.live;
    return values;
  }

  async read(data: unknown): Promise<StorageArray> {
    return (data as StorageArray).slice();
  }

  readSync(data: unknown): StorageArray {
    return (data as StorageArray).slice();
  }

  write(data: unknown, values: StorageArray): void {
    (data as StorageArray).set(values);
  }

  free(data: unknown): void {
    this.live -= (data as StorageArray).byteLength;
    this.buffers--;
  }

  memory(): MemoryInfo {
    return { liveBytes: this.live, peakBytes: this.peak, liveBuffers: this.buffers };
  }

  resetPeak(): void {
    this.peak = this.live;
  }

  /** An input's values in compute layout (float16 decoded to f32). */
  values(ref: TensorRef): ValueArray {
    return fromStorage(ref.data as StorageArray, ref.dtype);
  }

  /** Wraps computed values as a kernel output, encoding to the dtype's storage. */
  output(values: ArrayLike<number>, shape: number[], dtype: DType): KernelOutput {
    return { data: this.upload(toStorage(values, dtype)), shape, dtype };
  }

  alloc(dtype: DType, size: number): ValueArray {
    return allocValues(dtype, size);
  }
}

export const cpuBackend = new CpuBackend();
