/**
 * CPU GEMM: C[M, N] = A[M, K] · Bt[N, K]ᵀ with both operands row-major along K, so every inner
 * loop walks two contiguous rows. A 4×4 register block (16 accumulators, 8 loads per k step)
 * over K-panels that stay in L1/L2 keeps V8 at several GFLOP/s per core. Accumulation is in
 * double precision (JavaScript numbers) whatever the storage type.
 */
type Floats = Float32Array | Float64Array;

const K_PANEL = 256;
const N_PANEL = 64;

/** C = A·Btᵀ (+ C when `accumulate`). `a` is [M, K], `bt` is [N, K], `c` is [M, N]. */
export function gemmABt(
  m: number,
  n: number,
  k: number,
  a: Floats,
  aOff: number,
  bt: Floats,
  bOff: number,
  c: Floats,
  cOff: number,
  accumulate: boolean,
): void {
  if (!accumulate) c.fill(0, cOff, cOff + m * n);
  for (let k0 = 0; k0 < k; k0 += K_PANEL) {
    const k1 = Math.min(k, k0 + K_PANEL);
    for (let j0 = 0; j0 < n; j0 += N_PANEL) {
      const j1 = Math.min(n, j0 + N_PANEL);
      let i = 0;
      for (; i + 4 <= m; i += 4) {
        const a0 = aOff + i * k;
        const a1 = a0 + k;
        const a2 = a1 + k;
        const a3 = a2 + k;
        let j = j0;
        for (; j + 4 <= j1; j += 4) {
          const b0 = bOff + j * k;
          const b1 = b0 + k;
          const b2 = b1 + k;
          const b3 = b2 + k;
          let c00 = 0,
            c01 = 0,
            c02 = 0,
            c03 = 0,
            c10 = 0,
            c11 = 0,
            c12 = 0,
            c13 = 0;
          let c20 = 0,
            c21 = 0,
            c22 = 0,
            c23 = 0,
            c30 = 0,
            c31 = 0,
            c32 = 0,
            c33 = 0;
          for (let p = k0; p < k1; p++) {
            const x0 = a[a0 + p],
              x1 = a[a1 + p],
              x2 = a[a2 + p],
              x3 = a[a3 + p];
            const y0 = bt[b0 + p],
              y1 = bt[b1 + p],
              y2 = bt[b2 + p],
              y3 = bt[b3 + p];
            c00 += x0 * y0;
            c01 += x0 * y1;
            c02 += x0 * y2;
            c03 += x0 * y3;
            c10 += x1 * y0;
            c11 += x1 * y1;
            c12 += x1 * y2;
            c13 += x1 * y3;
            c20 += x2 * y0;
            c21 += x2 * y1;
            c22 += x2 * y2;
            c23 += x2 * y3;
            c30 += x3 * y0;
            c31 += x3 * y1;
            c32 += x3 * y2;
            c33 += x3 * y3;
          }
          let o = cOff + i * n + j;
          c[o] += c00;
          c[o + 1] += c01;
          c[o + 2] += c02;
          c[o + 3] += c03;
          o += n;
          c[o] += c10;
          c[o + 1] += c11;
          c[o + 2] += c12;
          c[o + 3] += c13;
          o += n;
          c[o] += c20;
          c[o + 1] += c21;
          c[o + 2] += c22;
          c[o + 3] += c23;
          o += n;
          c[o] += c30;
          c[o + 1] += c31;
          c[o + 2] += c32;
          c[o + 3] += c33;
        }
        for (; j < j1; j++) {
          const b0 = bOff + j * k;
          let s0 = 0,
            s1 = 0,
            s2 = 0,
            s3 = 0;
          for (let p = k0; p < k1; p++) {
            const y = bt[b0 + p];
            s0 += a[a0 + p] * y;
            s1 += a[a1 + p] * y;
            s2 += a[a2 + p] * y;
            s3 += a[a3 + p] * y;
          }
          const o = cOff + i * n + j;
          c[o] += s0;
          c[o + n] += s1;
          c[o + 2 * n] += s2;
          c[o + 3 * n] += s3;
        }
      }
      for (; i < m; i++) {
        const a0 = aOff + i * k;
        for (let j = j0; j < j1; j++) {
          const b0 = bOff + j * k;
          let s = 0;
          for (let p = k0; p < k1; p++) s += a[a0 + p] * bt[b0 + p];
          c[cOff + i * n + j] += s;
        }
      }
    }
  }
}

/** Row-major transpose of a [rows, cols] block into [cols, rows]. */
export function transpose2d(src: Floats, srcOff: number, rows: number, cols: number, dst: Floats, dstOff: number): void {
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) dst[dstOff + c * rows + r] = src[srcOff + r * cols + c];
    }
  }
}
