/**
 * Products with MLX-quantized weights (`quantizedMatmul`) against the same products on float
 * weights, in one run: decode (M = 1 and 8 rows, Llama-3.2-1B's layer shapes and its LM head) in GB/s
 * of weight bytes read against the copy bandwidth measured here, and prefill / training (M = 2048)
 * in TFLOP/s against the f32 and f16 GEMMs. Each quantized product is first checked against the
 * float product of its dequantized weight. The GPU is requested with Dawn's f16 toggle for NVIDIA.
 *
 *   node qmm-bench.mjs [--bits 4,8] [--group-size 64] [--json out.json] [--quick] [--host] [--explore]
 *                      [--shapes NAMES] [--rows M,...] [--forms FORMS]
 *
 * `--explore`: each decode product (M ≤ 16) also on every team shape of qgemv.wgsl (lanes 8 /
 * 16 / 32 × rows of W 1 / 2 / 4, forced through `backend.overrides.qgemv`), each without and with
 * its section ONCE, and with section GEN's body (rows `q4 f16 L8R4`, `… L8R4 once`, `… L8R4 unroll`);
 * only where `--forms` names them, 8 rows of W and GEN with x staged (`… L16R8 unroll stage`),
 * to choose its defaults; each forced form is checked like the default first.
 * `--shapes lm_head,down`: only the shapes whose names contain one of these (to fit a time limit).
 * `--rows 1,2,4,8,16`: the rows of x timed (default 1, 8 and 2048; the LM head skips 2048);
 * `--forms 'L8R2 once,L8R4,L32R4 unroll'`: with `--explore`, only these forms.
 * `--quick`: one small shape (a check that it runs, on lavapipe). `--host`: only the quantization
 * itself on the host (`quantize` on the CPU backend: what `convert -q` and `quantizeModel` spend
 * per weight), in values per second, for the layer shapes; no GPU.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createWebGPUBackend, type WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { assertClose, randomValues } from '@metal-lora/tensor/testing';
import { copyBandwidth } from './gemm-bench';
import { settleAfterUploads, timeKernel } from './timing';

interface Row {
  shape: string;
  M: number;
  path: string;
  ms: number;
  /** Weight bytes read per product (packed words + scales + biases, or the float weight). */
  weightBytes: number;
  gbps: number;
  tflops: number;
}

/** Llama-3.2-1B's products: [N (out), K (in)]. */
const SHAPES: [string, number, number][] = [
  ['q_proj / o_proj 2048×2048', 2048, 2048],
  ['gate / up 8192×2048', 8192, 2048],
  ['down 2048×8192', 2048, 8192],
  ['lm_head 128256×2048', 128256, 2048],
];

/** A qgemv form `--forms` names: lanes, rows of W, section ONCE or GEN's body, and `stage` (GEN only). */
const FORM = /^L(8|16|32)R([1248])(?:( once)|( unroll)( stage)?)?$/;

/** Bytes of weight copies taken in turn by the decode timings (four times the H200's L2). */
const ROTATE_BYTES = 200e6;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      bits: { type: 'string', default: '4,8' },
      'group-size': { type: 'string', default: '64' },
      json: { type: 'string' },
      quick: { type: 'boolean', default: false },
      host: { type: 'boolean', default: false },
      explore: { type: 'boolean', default: false },
      shapes: { type: 'string' },
      rows: { type: 'string' },
      forms: { type: 'string' },
    },
    strict: true,
  });
  const bitsList = values.bits.split(',').map(Number);
  const groupSize = Number(values['group-size']);
  if (values.host) {
    hostQuantize(bitsList, groupSize, values.json);
    return;
  }
  const backend: WebGPUBackend = await createWebGPUBackend({ preciseTimestamps: true, f16OnNvidia: true });
  T.setBackendSync(backend);
  const r = backend.context.report;
  const device = `${r.vendor} ${r.device || r.architecture} ${r.description}`.replace(/\s+/g, ' ');
  const f16 = r.shaderF16;
  const copy = values.quick ? { best: Number.NaN, forms: {} } : await copyBandwidth(backend);
  console.log(`qmm bench on ${device}; copy bandwidth ${copy.best.toFixed(0)} GB/s (read + written)`);
  const rows: Row[] = [];
  const since = performance.now();
  const only = values.shapes?.split(',');
  const shapes = (values.quick ? ([['small 256×512', 256, 512]] as [string, number, number][]) : SHAPES).filter(
    ([name]) => !only || only.some((part) => name.includes(part)),
  );
  if (shapes.length === 0) throw new T.ValueError('qmm-bench', '--shapes matches no shape', SHAPES.map(([name]) => name).join(', '), values.shapes!);
  const big = values.quick ? 64 : 2048;
  const rowCounts = values.rows ? values.rows.split(',').map(Number) : [1, 8, big];
  if (!rowCounts.every((m) => Number.isInteger(m) && m > 0))
    throw new T.ValueError('qmm-bench', '--rows must list positive integers', 'e.g. 1,2,4,8', values.rows!);
  const forms = values.forms?.split(',').map((f) => f.trim());
  const badForm = forms?.find((f) => !FORM.test(f));
  if (badForm !== undefined)
    throw new T.ValueError('qmm-bench', '--forms names a form qgemv.wgsl does not have', "e.g. 'L8R2 once,L32R4,L16R8 unroll stage'", badForm);
  for (const [name, N, K] of shapes) {
    const w = T.tensor(randomValues(N * K, 2, 0.05), [N, K], { dtype: 'float32', backend: T.cpuBackend });
    for (const dtype of f16 ? (['float32', 'float16'] as const) : (['float32'] as const)) {
      const host = dtype === 'float32' ? w : w.cast('float16');
      // Copies of each weight, taken in turn by the timed runs, so that the bytes read exceed the
      // L2 cache (50 MB on the H200) and the figures are memory reads, not cache hits.
      const copies = (bytes: number) => Math.min(32, Math.max(1, Math.ceil(ROTATE_BYTES / bytes)));
      const hostF = host.dataSync();
      const wf = Array.from({ length: copies(N * K * (dtype === 'float32' ? 4 : 2)) }, () => T.tensor(hostF, [N, K], { dtype, backend }));
      // Each bit width quantized once on the host, then put on the GPU.
      const packed = bitsList.map((bits) => {
        const q = T.quantize(host, { bits, groupSize });
        const parts = [q.weight, q.scales, q.biases].map((t) => ({ data: t.dataSync(), shape: [...t.shape], dtype: t.dtype }));
        for (const t of [q.weight, q.scales, q.biases]) t.dispose();
        const bytes = parts[0].data.length * 4 + 2 * parts[1].data.length * (dtype === 'float32' ? 4 : 2);
        const gpu = Array.from({ length: copies(bytes) }, () => parts.map((t) => T.tensor(t.data, t.shape, { dtype: t.dtype, backend })));
        return { bits, bytes, gpu };
      });
      if (host !== w) host.dispose();
      for (const M of rowCounts) {
        if (M === big && N > 8192) continue;
        const x = T.tensor(randomValues(M * K, 1), [M, K], { dtype, backend });
        const flops = 2 * M * N * K;
        const record = async (path: string, weightBytes: number, run: (i: number) => T.Tensor) => {
          const once = (i: number) => T.tidy(() => run(i)).dispose();
          await settleAfterUploads(backend, once, since, 500);
          const { ms, hostMs } = await timeKernel(backend, once);
          const row = { shape: name, M, path, ms, weightBytes, gbps: weightBytes / (ms * 1e-3) / 1e9, tflops: flops / (ms * 1e-3) / 1e12 };
          rows.push(row);
          console.log(
            `${name.padEnd(28)} M=${String(M).padEnd(5)} ${path.padEnd(20)} ${ms.toFixed(4).padStart(9)} ms ${row.gbps.toFixed(0).padStart(6)} GB/s ${row.tflops.toFixed(2).padStart(7)} TFLOP/s` +
              (hostMs > ms ? ` (host ${hostMs.toFixed(4)} ms per run: the GPU may have waited)` : ''),
          );
        };
        const tag = dtype === 'float32' ? 'f32' : 'f16';
        await record(`${tag}`, N * K * (dtype === 'float32' ? 4 : 2), (i) => T.matmul(x, wf[i % wf.length], { transposeB: true }));
        for (const { bits, bytes, gpu } of packed) {
          const product = (i: number) => {
            const [wq, s, b] = gpu[i % gpu.length];
            return T.quantizedMatmul(x, wq, s, b, { bits, groupSize });
          };
          // Checked first: the float product of the dequantized weight.
          const [wq, s, b] = gpu[0];
          const want = await T.tidy(() => T.matmul(x, T.dequantize(wq, s, b, { bits, groupSize }), { transposeB: true })).data();
          const check = async (path: string) =>
            assertClose(
              await T.tidy(() => product(0)).data(),
              want,
              { atol: dtype === 'float32' ? 1e-3 : 5e-2, rtol: dtype === 'float32' ? 1e-3 : 2e-2 },
              `${name} M=${M} ${path} ${dtype}`,
            );
          await check(`q${bits}`);
          await record(`q${bits} ${tag}`, bytes, product);
          // qgemv takes 3, 5 and 6 bits up to 4 rows of x, and only with GEN's f32 body.
          const whole = 32 % bits === 0;
          if (values.explore && M <= (whole ? 16 : 4)) {
            try {
              // Every team shape without and with ONCE, and GEN's body; 8 rows and `stage` only where named.
              const all = [8, 16, 32].flatMap((lanes) => [1, 2, 4].flatMap((teamRows) => ['', ' once', ' unroll'].map((v) => `L${lanes}R${teamRows}${v}`)));
              for (const form of forms ?? all) {
                const [, lanes, teamRows, once, unroll, stage] = FORM.exec(form)!;
                if (!whole && !unroll) continue;
                backend.overrides.qgemv = {
                  lanes: Number(lanes),
                  rows: Number(teamRows),
                  once: once !== undefined,
                  body: unroll ? 'unroll' : 'loop',
                  stage: stage !== undefined,
                };
                const path = `q${bits} ${tag} ${form}`;
                await check(path);
                await record(path, bytes, product);
              }
            } finally {
              backend.overrides.qgemv = null;
            }
          }
        }
        x.dispose();
      }
      for (const t of wf) t.dispose();
      for (const { gpu } of packed) for (const t of gpu.flat()) t.dispose();
    }
    w.dispose();
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ device, date: new Date().toISOString(), groupSize, copy, rows }, null, 2));
  await backend.sync();
  backend.context.device.destroy();
}

/** Host quantization (`quantize` on the CPU backend) of the layer shapes: the best of three runs each. */
function hostQuantize(bitsList: number[], groupSize: number, json?: string): void {
  const rows: { shape: string; bits: number; ms: number; valuesPerSecond: number }[] = [];
  console.log(`host quantization (quantize on the CPU backend), groups of ${groupSize}; Node ${process.version}`);
  for (const [name, N, K] of SHAPES.slice(0, 3)) {
    const w = T.tensor(randomValues(N * K, 2, 0.05), [N, K], { dtype: 'float32', backend: T.cpuBackend });
    for (const bits of bitsList) {
      let best = Number.POSITIVE_INFINITY;
      for (let i = 0; i < 3; i++) {
        const started = performance.now();
        const q = T.quantize(w, { bits, groupSize });
        best = Math.min(best, performance.now() - started);
        for (const t of [q.weight, q.scales, q.biases]) t.dispose();
      }
      const row = { shape: name, bits, ms: best, valuesPerSecond: (N * K) / (best / 1000) };
      rows.push(row);
      console.log(`${name.padEnd(28)} q${bits} ${best.toFixed(1).padStart(8)} ms ${(row.valuesPerSecond / 1e6).toFixed(1).padStart(7)} M values/s`);
    }
    w.dispose();
  }
  if (json) writeFileSync(json, JSON.stringify({ host: true, date: new Date().toISOString(), node: process.version, groupSize, rows }, null, 2));
}

if (process.argv[1]?.match(/qmm-bench\.(ts|mjs|js)$/)) await main();
