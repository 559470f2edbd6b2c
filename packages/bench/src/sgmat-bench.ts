/**
 * The subgroup-matrix GEMM (gemm-sgmat.wgsl) where the adapter offers a float configuration:
 * checked against float64 on awkward shapes first (every transpose, batches, a bias epilogue,
 * through the selector), then timed against the portable f16 and f32 kernels and, where `torch`
 * with CUDA exists, cuBLAS fp16 in the same run. The GPU is requested with Dawn's toggles for
 * experimental features and NVIDIA's f16 (`f16OnNvidia`), as a user opting in would.
 *
 *   node sgmat-bench.mjs [--shape 2048x4096x4096] [--json out.json] [--no-peers]
 *
 * Where the adapter offers no float configuration (lavapipe, Dawn without the toggles) it says
 * why, and checks and times the portable kernels alone.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createWebGPUBackend, gemmDevice, subgroupMatrixConfigsText, type WebGPUBackend } from '@metal-lora/metal-kernels';
import { quantConfig, type SgmatConfig, sgmatConfig, subgroupMatrixChoice } from '@metal-lora/metal-kernels/internal';
import * as T from '@metal-lora/tensor';
import { assertClose, gemmTolerance, randomValues, storedValues } from '@metal-lora/tensor/testing';
import { settleAfterUploads, timeKernel, useClockWarmer } from './timing';

type Stored = 'float32' | 'float16';

/** The largest |actual - expected| relative to the largest |expected|. */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let [maxAbs, maxErr] = [0, 0];
  for (let i = 0; i < expected.length; i++) [maxAbs, maxErr] = [Math.max(maxAbs, Math.abs(expected[i])), Math.max(maxErr, Math.abs(actual[i] - expected[i]))];
  return maxErr / maxAbs;
}

/** One product through `cfg` (or the selector when null) against float64; returns the largest error relative to the largest |expected|. */
async function check(
  backend: WebGPUBackend,
  cfg: SgmatConfig | null,
  dtype: Stored,
  aShape: number[],
  bShape: number[],
  options: T.MatmulOptions,
  withBias = false,
): Promise<number> {
  const [a, b] = [storedValues(T.sizeOf(aShape), 1, dtype), storedValues(T.sizeOf(bShape), 2, dtype)];
  const N = options.transposeB ? bShape[bShape.length - 2] : bShape[bShape.length - 1];
  const bias = storedValues(N, 3, dtype);
  const cpu = (v: Float64Array, s: number[]) => T.tensor(v, s, { dtype: 'float64', backend: T.cpuBackend });
  const gpu = (v: Float64Array, s: number[]) => T.tensor(v, s, { dtype, backend });
  let ref = T.matmul(cpu(a, aShape), cpu(b, bShape), options);
  if (withBias) ref = T.add(ref, cpu(bias, [N]));
  if (cfg) backend.overrides.gemm = cfg;
  const previous = backend.subgroupMatrix;
  backend.subgroupMatrix = true;
  try {
    let got = T.matmul(gpu(a, aShape), gpu(b, bShape), options);
    if (withBias) got = T.add(got, gpu(bias, [N]));
    const expected = ref.dataSync();
    const actual = await got.data();
    const label = `${cfg?.name ?? 'selector'} ${dtype} [${aShape}]·[${bShape}]${options.transposeA ? ' Aᵀ' : ''}${options.transposeB ? ' Bᵀ' : ''}${withBias ? ' + bias' : ''}`;
    assertClose(actual, expected, gemmTolerance(dtype, expected), label);
    const rel = relativeError(actual, expected);
    console.log(`  ok ${label}: max |error| / max |expected| = ${rel.toExponential(2)}`);
    got.dispose();
    return rel;
  } finally {
    backend.overrides = {};
    backend.subgroupMatrix = previous;
  }
}

/**
 * x·Wᵀ (`transpose`) or x·W with W quantized (`quantizedMatmul`, f16) through the subgroup-matrix
 * configuration's section QUANT (refused here if the product would take another kernel), against
 * float64 of x and of W dequantized as the kernel stages it (rounded to f16). Returns the largest
 * error relative to the largest |expected|.
 */
async function checkQuant(backend: WebGPUBackend, bits: number, groupSize: number, M: number, rows: number, cols: number, transpose: boolean): Promise<number> {
  const [K, N] = transpose ? [cols, rows] : [rows, cols];
  const x = storedValues(M * K, 40 + bits, 'float16');
  const host = T.tensor(randomValues(rows * cols, 41 + groupSize, 0.05), [rows, cols], { dtype: 'float16', backend: T.cpuBackend });
  const q = T.quantize(host, { bits, groupSize });
  const parts = [q.weight, q.scales, q.biases].map((t) => ({ data: t.dataSync(), shape: [...t.shape], dtype: t.dtype }));
  const wRef = T.dequantize(q.weight, q.scales, q.biases, { bits, groupSize }).cast('float64');
  const ref = T.matmul(T.tensor(x, [M, K], { dtype: 'float64', backend: T.cpuBackend }), wRef, { transposeB: transpose }).dataSync();
  const previous = backend.subgroupMatrix;
  backend.subgroupMatrix = true;
  const label = `q${bits}/g${groupSize} f16 [${M}, ${K}]·W${transpose ? 'ᵀ' : ''} (W [${rows}, ${cols}])`;
  try {
    const shape = { M, N, K, batch: 1, transA: false, transB: transpose, dtype: 'float16' as const };
    const cfg = quantConfig(shape, gemmDevice(backend, 'f16'), { bits, groupSize });
    if (cfg.kind !== 'sgmat') throw new Error(`${label}: the quantized product took ${cfg.name}, not the subgroup-matrix kernel`);
    const [wq, sc, bi] = parts.map((t) => T.tensor(t.data, t.shape, { dtype: t.dtype, backend }));
    const got = await T.tidy(() => T.quantizedMatmul(T.tensor(x, [M, K], { dtype: 'float16', backend }), wq, sc, bi, { bits, groupSize, transpose })).data();
    for (const t of [wq, sc, bi]) t.dispose();
    assertClose(got, ref, gemmTolerance('float16', ref), `${cfg.name} ${label}`);
    const rel = relativeError(got, ref);
    console.log(`  ok ${cfg.name} ${label}: max |error| / max |expected| = ${rel.toExponential(2)}`);
    return rel;
  } finally {
    backend.subgroupMatrix = previous;
    for (const t of [host, q.weight, q.scales, q.biases, wRef]) t.dispose();
  }
}

/**
 * QLoRA's loraLinear over a 4-bit f16 base through the selector (its base products on the matrix
 * units), forward and backward (y, dx, dA, dB), against the CPU backend's float64 run of the same
 * op on the same packed weight; throws where it differs or where the base products took another
 * kernel. Returns the largest error relative to the largest |expected| over the four.
 */
async function checkQLoRA(backend: WebGPUBackend, path: string): Promise<number> {
  const [m, inF, outF, r, bits, groupSize] = [256, 512, 384, 8, 4, 64];
  const q = T.quantize(T.tensor(randomValues(outF * inF, 60, 0.4), [outF, inF], { dtype: 'float16', backend: T.cpuBackend }), { bits, groupSize });
  const parts = [q.weight, q.scales, q.biases].map((t) => T.tensor(t.dataSync(), [...t.shape], { dtype: t.dtype, backend }));
  const values = [
    storedValues(m * inF, 61, 'float16'),
    storedValues(r * inF, 62, 'float16'),
    storedValues(outF * r, 63, 'float16'),
    storedValues(m * outF, 64, 'float16'),
  ];
  const run = async (be: T.Backend, [weight, scales, biases]: T.Tensor[], dtype: 'float16' | 'float64') => {
    const [x, a, lb, dy] = [
      [m, inF],
      [r, inF],
      [outF, r],
      [m, outF],
    ].map((shape, i) => T.tensor(values[i], shape, { dtype, backend: be, requiresGrad: i < 3 }));
    const cast = (t: T.Tensor) => (dtype === 'float64' ? t.cast('float64') : t);
    const y = T.loraLinear(x, weight, a, lb, { scale: 1.5, dropout: 0.1, seed: 7, quant: { scales: cast(scales), biases: cast(biases), bits, groupSize } });
    T.sum(T.mul(y, dy)).backward();
    return Promise.all([y, x.grad!, a.grad!, lb.grad!].map((t) => t.data()));
  };
  const previous = backend.subgroupMatrix;
  backend.subgroupMatrix = true;
  backend.startProfile();
  try {
    const want = await run(T.cpuBackend, [q.weight, q.scales, q.biases], 'float64');
    const got = await run(backend, parts, 'float16');
    const ran = await backend.stopProfile();
    // y = x·Wᵀ and dx's dy·W, and nothing on the portable quantized or fused LoRA kernels.
    if (ran.get(path)?.count !== 2 || [...ran.keys()].some((l) => l.startsWith('qmm-') || l === 'vec4-128x128'))
      throw new Error(`QLoRA's base products did not both take ${path}: the kernels that ran were ${[...ran].map(([l, v]) => `${l} ×${v.count}`).join(', ')}`);
    let worst = 0;
    for (const [i, name] of ['y', 'dx', 'dA', 'dB'].entries()) {
      assertClose(got[i], want[i], gemmTolerance('float16', want[i]), `QLoRA ${name}`);
      worst = Math.max(worst, relativeError(got[i], want[i]));
    }
    console.log(`  ok QLoRA loraLinear q${bits}/g${groupSize} f16 on ${path}: y, dx, dA, dB; max |error| / max |expected| = ${worst.toExponential(2)}`);
    return worst;
  } finally {
    backend.subgroupMatrix = previous;
    for (const t of [...parts, q.weight, q.scales, q.biases]) t.dispose();
  }
}

interface Timed {
  label: string;
  path: string;
  ms: number;
  tflops: number;
}

/** cuBLAS through PyTorch for the same products, in fp16 and f32 (TF32 off); a string where it is unavailable. */
function torchTimes(M: number, N: number, K: number, ranks: number[]): Record<string, number> | string {
  const script = `
import json, torch
torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")
M, N, K, ranks = ${M}, ${N}, ${K}, ${JSON.stringify(ranks)}
def med(fn):
    for _ in range(5): fn(0)
    torch.cuda.synchronize()
    out = []
    for _ in range(7):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for i in range(20): fn(i)
        e.record(); torch.cuda.synchronize(); out.append(s.elapsed_time(e) / 20)
    return sorted(out)[3]
res = {}
for name, dt in (("fp16", torch.float16), ("f32", torch.float32)):
    xs = [torch.randn(M, K, device=dev, dtype=dt) for _ in range(3)]
    ws = [torch.randn(N, K, device=dev, dtype=dt) for _ in range(3)]
    res["gemm " + name] = med(lambda i: xs[i % 3] @ ws[i % 3].t())
    if name == "fp16":
        for r in ranks:
            a = torch.randn(r, K, device=dev, dtype=dt); b = torch.randn(N, r, device=dev, dtype=dt)
            res[f"lora r={r} fp16"] = med(lambda i: torch.addmm(xs[i % 3] @ ws[i % 3].t(), xs[i % 3] @ a.t(), b.t(), alpha=2.0))
print(json.dumps({"device": torch.cuda.get_device_name(), "ms": res}))
`;
  const run = spawnSync('python3', ['-c', script], { encoding: 'utf8', maxBuffer: 1 << 22 });
  if (run.error || run.status !== 0) return `pytorch: unavailable (${(run.stderr || String(run.error)).trim().split('\n').pop()})`;
  return (JSON.parse(run.stdout) as { ms: Record<string, number> }).ms;
}

export async function runSgmatBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: 'string' }, 'no-peers': { type: 'boolean', default: false }, shape: { type: 'string', default: '2048x4096x4096' } },
    strict: true,
  });
  const [M, N, K] = values.shape.split('x').map(Number);
  if (![M, N, K].every((d) => Number.isInteger(d) && d > 0) || values.shape.split('x').length !== 3)
    throw new T.ValueError('sgmat-bench', '--shape must be MxNxK', 'e.g. 2048x4096x4096', values.shape);
  const backend = await createWebGPUBackend({ f16OnNvidia: true, preciseTimestamps: true });
  T.setBackendSync(backend);
  // Outputs are filled with NaN before kernels write them while checking (turned off to time).
  backend.poisonOutputs = true;
  const report = backend.context.report;
  console.log(`${report.vendor} ${report.architecture} ${report.description}; subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`);
  console.log(`subgroup-matrix configurations: ${subgroupMatrixConfigsText(report) || 'none'}; layouts as ${report.subgroupMatrixMajorness} arguments`);
  for (const note of report.precisionNotes) console.log(`note: ${note}`);
  const choices = (['float32', 'float16'] as const)
    .map((d) => [d, subgroupMatrixChoice(report, d)] as const)
    .filter((c): c is readonly [Stored, SgmatConfig] => c[1] !== null && (c[0] === 'float32' || report.shaderF16));
  if (choices.length === 0) console.log('no float subgroup-matrix configuration on this adapter: the portable kernels alone');
  const checks: { config: string; dtype: string; relError: number }[] = [];
  /** The adapter's choice and other blockings of the same configuration, each checked; those that fail are reported and dropped. */
  const variants: [Stored, SgmatConfig][] = [];
  for (const [dtype, choice] of choices) {
    const blockings: [number, number, boolean][] = [
      [choice.rm, choice.rn, choice.prefetch],
      [2, 2, false],
      [4, 4, false],
      [2, 4, true],
      [4, 2, true],
      [4, 4, true],
    ];
    for (const [rm, rn, prefetch] of blockings.filter(([m, n, d], i, all) => all.findIndex(([m2, n2, d2]) => m2 === m && n2 === n && d2 === d) === i)) {
      const cfg = sgmatConfig(choice.component, choice.sm, choice.sn, choice.sk, choice.subgroupSize, rm, rn, prefetch);
      console.log(`checking ${cfg.name} on ${dtype} operands against float64:`);
      try {
        const [M, N, K] = [70, 45, 101];
        for (const [ta, tb] of [
          [false, false],
          [true, false],
          [false, true],
          [true, true],
        ] as const)
          checks.push({
            config: cfg.name,
            dtype,
            relError: await check(backend, cfg, dtype, ta ? [K, M] : [M, K], tb ? [N, K] : [K, N], { transposeA: ta, transposeB: tb }),
          });
        for (const [a, b, o] of [
          [[3, 33, 40], [40, 37], {}],
          [[2, 65, 17], [2, 17, 130], {}],
          [[1, 1], [1, 1], {}],
          [[257, 1000], [129, 1000], { transposeB: true }],
          [[300, 130], [300, 200], { transposeA: true }],
          [[200, 256], [136, 256], { transposeB: true }],
          [[256, 200], [256, 136], { transposeA: true }],
          [[512, 256], [256, 384], {}],
          [[256, 1024], [384, 1024], { transposeB: true }],
          [[2, 256, 512], [2, 384, 512], { transposeB: true }],
          [[2, 256, 512], [2, 512, 384], {}],
          [[256, 264], [264, 384], {}],
        ] as [number[], number[], T.MatmulOptions][])
          checks.push({ config: cfg.name, dtype, relError: await check(backend, cfg, dtype, a, b, o) });
        variants.push([dtype, cfg]);
      } catch (error) {
        console.log(`  FAILED ${cfg.name}: ${(error as Error).message.split('\n').slice(0, 3).join(' | ')}`);
      }
    }
  }
  // Quantized B (QLoRA's base products, x·Wᵀ and dy·W) on the f16 choice's section QUANT: every bit width and group size.
  if (choices.some(([d, c]) => d === 'float16' && c.prefetch)) {
    // A failure is reported and recorded (NaN), and the run goes on to the timings.
    const attempt = async (config: string, run: () => Promise<number>) => {
      try {
        checks.push({ config, dtype: 'float16', relError: await run() });
      } catch (error) {
        console.log(`  FAILED ${config}: ${(error as Error).message.split('\n').slice(0, 3).join(' | ')}`);
        checks.push({ config, dtype: 'float16', relError: Number.NaN });
      }
    };
    console.log('checking quantized B (section QUANT) against float64 of the dequantized weight:');
    for (const bits of [2, 3, 4, 5, 6, 8])
      for (const groupSize of [32, 64, 128])
        for (const transpose of [true, false])
          await attempt(`quant q${bits}/g${groupSize}${transpose ? ' Wᵀ' : ' W'}`, () => checkQuant(backend, bits, groupSize, 256, 384, 512, transpose));
    const path = choices.find(([d]) => d === 'float16')![1].name;
    await attempt(`QLoRA ${path}`, () => checkQLoRA(backend, path));
  }
  // Through the selector (subgroup matrices on, where it sends a product this big), with a linear layer's bias.
  for (const dtype of report.shaderF16 ? (['float32', 'float16'] as const) : (['float32'] as const))
    checks.push({ config: 'selector', dtype, relError: await check(backend, null, dtype, [130, 96], [100, 96], { transposeB: true }, true) });

  backend.poisonOutputs = false;
  const ranks = [8, 16, 64];
  const timed: Timed[] = [];
  await useClockWarmer(backend);
  const record = (label: string, path: string, ms: number, flops: number) => {
    const row = { label, path, ms, tflops: flops / (ms * 1e-3) / 1e12 };
    timed.push(row);
    console.log(`${label.padEnd(34)} ${path.padEnd(28)} ${ms.toFixed(3).padStart(8)} ms ${row.tflops.toFixed(1).padStart(7)} TFLOP/s`);
  };
  const time = async (label: string, path: string, dtype: Stored, sgmat: SgmatConfig | boolean, rank?: number, transposeB = true) => {
    const xs = Array.from({ length: 3 }, (_, i) => T.tensor(randomValues(M * K, 10 + i), [M, K], { dtype, backend }));
    const ws = Array.from({ length: 3 }, (_, i) => T.tensor(randomValues(N * K, 20 + i), [N, K], { dtype, backend }));
    const a = rank ? T.tensor(randomValues(rank * K, 30), [rank, K], { dtype, backend }) : null;
    const b = rank ? T.tensor(randomValues(N * rank, 31), [N, rank], { dtype, backend }) : null;
    const uploaded = performance.now();
    backend.subgroupMatrix = sgmat !== false;
    const run = (i: number) =>
      T.tidy(() => {
        if (typeof sgmat === 'object') backend.overrides.gemm = sgmat;
        try {
          if (a && b) T.loraLinear(xs[i % 3], ws[i % 3], a, b, { scale: 2 });
          else T.matmul(xs[i % 3], ws[i % 3], { transposeB });
        } finally {
          backend.overrides = {};
        }
      });
    await settleAfterUploads(backend, run, uploaded, 1000);
    const { ms } = await timeKernel(backend, run);
    backend.subgroupMatrix = false;
    for (const t of [...xs, ...ws, a, b]) t?.dispose();
    record(label, path, ms, 2 * M * N * K + (rank ? 2 * M * rank * (K + N) : 0));
  };
  console.log(`timing x·Wᵀ ${M}×${N}×${K} and the LoRA forward (composed in f16) at r = ${ranks.join(', ')}:`);
  for (const [dtype, cfg] of variants) await time(`gemm ${dtype === 'float16' ? 'f16' : 'f32'}`, cfg.name, dtype, cfg);
  // dx = dy·W, backward's product over a frozen weight (no transposes), where the shape allows it (N = K).
  if (N === K) {
    for (const [dtype, cfg] of variants) await time(`dy·W ${dtype === 'float16' ? 'f16' : 'f32'}`, cfg.name, dtype, cfg, undefined, false);
    if (report.shaderF16) await time('dy·W f16', 'portable', 'float16', false, undefined, false);
  }
  const f16 = variants.some(([d]) => d === 'float16');
  if (report.shaderF16) {
    await time('gemm f16', 'portable', 'float16', false);
    for (const r of ranks) {
      if (f16) await time(`lora r=${r} f16`, 'selector, subgroup matrices on', 'float16', true, r);
      await time(`lora r=${r} f16`, 'portable', 'float16', false, r);
    }
  }
  if (f16) {
    // QLoRA's base products at this shape: W at 4 bits in groups of 64 (the weight as [N, K], or [K, N] for dy·W).
    for (const transpose of N === K ? [true, false] : [true]) {
      const host = T.tensor(randomValues(N * K, 50, 0.05), [N, K], { dtype: 'float16', backend: T.cpuBackend });
      const q = T.quantize(host, { bits: 4, groupSize: 64 });
      const copies = Array.from({ length: 3 }, () =>
        [q.weight, q.scales, q.biases].map((t) => T.tensor(t.dataSync(), [...t.shape], { dtype: t.dtype, backend })),
      );
      for (const t of [host, q.weight, q.scales, q.biases]) t.dispose();
      const xs = Array.from({ length: 3 }, (_, i) => T.tensor(randomValues(M * K, 10 + i), [M, K], { dtype: 'float16', backend }));
      for (const sgmat of [true, false]) {
        const uploaded = performance.now();
        backend.subgroupMatrix = sgmat;
        const shape = { M, N, K, batch: 1, transA: false, transB: transpose, dtype: 'float16' as const };
        const path = quantConfig(shape, gemmDevice(backend, 'f16'), { bits: 4, groupSize: 64 }).name;
        const run = (i: number) =>
          T.tidy(() => {
            const [wq, s, b] = copies[i % 3];
            T.quantizedMatmul(xs[i % 3], wq, s, b, { bits: 4, groupSize: 64, transpose });
          });
        await settleAfterUploads(backend, run, uploaded, 1000);
        const { ms } = await timeKernel(backend, run);
        record(`q4 ${transpose ? 'x·Wᵀ' : 'dy·W'} f16`, path, ms, 2 * M * N * K);
      }
      backend.subgroupMatrix = false;
      for (const t of [...xs, ...copies.flat()]) t.dispose();
    }
  }
  await time('gemm f32', 'portable', 'float32', false);
  const torch = values['no-peers'] ? 'pytorch: not run (--no-peers)' : torchTimes(M, N, K, ranks);
  if (typeof torch === 'string') console.log(torch);
  else {
    for (const [label, ms] of Object.entries(torch)) {
      const ours = timed.filter((t) => t.label.replace(' f16', ' fp16') === label || t.label === label);
      const best = ours.length ? Math.min(...ours.map((t) => t.ms)) : undefined;
      console.log(
        `cuBLAS ${label.padEnd(20)} ${ms.toFixed(3).padStart(8)} ms${best !== undefined ? `; ours (best path) / cuBLAS speed ${(ms / best).toFixed(2)}×` : ''}`,
      );
    }
  }
  if (values.json)
    writeFileSync(
      values.json,
      JSON.stringify({ device: report.description, date: new Date().toISOString(), configs: report.subgroupMatrixConfigs, checks, timed, torch }, null, 2),
    );
  await backend.sync();
  backend.context.device.destroy();
}

if (process.argv[1]?.match(/sgmat-bench\.(ts|mjs|js)$/)) await runSgmatBench(process.argv.slice(2));
