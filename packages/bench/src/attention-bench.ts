/**
 * Causal attention's core in a training step, forward and backward (dq, dk, dv), for the heads of
 * published models at several sequence lengths: ours fused (`attention`), ours composed as the
 * models run it by default (q·kᵀ, `maskedSoftmax`, ·v, the probabilities recomputed in backward
 * through `checkpoint`) and composed with the probabilities kept, against PyTorch's
 * `scaled_dot_product_attention` (causal, grouped KV heads, f32) in the same run where `torch`
 * with CUDA exists. Each path is checked against the fused one first; then GPU time per step and
 * the allocator's peak of one step (PyTorch: `max_memory_allocated`) above the inputs.
 *
 *   node attention-bench.mjs [--models smollm2-135m,llama-3.2-1b] [--batch 4] [--seq 512,2048] [--json out.json] [--no-peers]
 *
 * `--models tiny` (2 KV heads of 2 query heads, 16 features) runs anywhere, lavapipe included.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createWebGPUBackend, type WebGPUBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';
import { randomValues } from '@metal-lora/tensor/testing';
import { settleAfterUploads, timeKernel, useClockWarmer } from './timing';

/** Query heads, KV heads and head features of the shapes the e2e bench trains. */
export const ATTENTION_SHAPES: Record<string, { heads: number; kvHeads: number; headDim: number }> = {
  tiny: { heads: 4, kvHeads: 2, headDim: 16 },
  'smollm2-135m': { heads: 9, kvHeads: 3, headDim: 64 },
  'qwen2.5-0.5b': { heads: 14, kvHeads: 2, headDim: 64 },
  'llama-3.2-1b': { heads: 32, kvHeads: 8, headDim: 64 },
};

export type AttentionPath = 'fused' | 'recomputed' | 'kept';

export interface PathTiming {
  ms: number;
  peakBytes: number;
  relError: number;
}

export interface AttentionRow {
  model: string;
  batch: number;
  seq: number;
  /**
   * Per path: GPU ms of one forward + backward, the peak bytes above the inputs, and the largest
   * error against the fused path (relative to the largest value); for a composed path the backend
   * refused (scores past a buffer's limit), the reason.
   */
  ours: { fused: PathTiming } & Record<Exclude<AttentionPath, 'fused'>, PathTiming | string>;
  torch?: { ms: number; peakBytes: number } | string;
}

/** One forward and backward of `path`: the gradients of Σ y·dy for q, k and v (disposed unless `keep`). */
function step(path: AttentionPath, q: T.Tensor, k: T.Tensor, v: T.Tensor, dy: T.Tensor, mask: T.Tensor, scale: number, g: number): T.Tensor[] {
  const [B, H, R] = q.shape;
  const S = k.shape[2];
  const core = (qs: T.Tensor, ks: T.Tensor, vs: T.Tensor) => {
    const scores = T.reshape(T.matmul(qs, ks, { transposeB: true }), [B, H, g, R / g, S]);
    return T.matmul(T.reshape(T.maskedSoftmax(scores, mask, scale), [B, H, R, S]), vs);
  };
  const y = path === 'fused' ? T.attention(q, k, v, mask, scale, { causal: true }) : path === 'recomputed' ? T.checkpoint(core, [q, k, v], []) : core(q, k, v);
  return T.grad(T.sum(T.mul(y, dy)), [q, k, v]);
}

/** The largest |a − b| over the largest |b|, over the three gradients. */
async function relError(a: T.Tensor[], b: T.Tensor[]): Promise<number> {
  let err = 0;
  let top = 0;
  for (const [i, t] of a.entries()) {
    const [x, y] = [await t.data(), await b[i].data()];
    for (let e = 0; e < x.length; e++) {
      err = Math.max(err, Math.abs(x[e] - y[e]));
      top = Math.max(top, Math.abs(y[e]));
    }
  }
  return err / Math.max(top, 1e-30);
}

/** Times the three paths for one shape on `backend` (checked against the fused path first). */
export async function measureAttention(backend: T.Backend, model: string, batch: number, seq: number): Promise<AttentionRow> {
  const { heads, kvHeads, headDim } = ATTENTION_SHAPES[model];
  const g = heads / kvHeads;
  const make = (shape: number[], seed: number) => T.tensor(randomValues(T.sizeOf(shape), seed), shape, { dtype: 'float32', backend, requiresGrad: true });
  const q = make([batch, kvHeads, g * seq, headDim], 1);
  const k = make([batch, kvHeads, seq, headDim], 2);
  const v = make([batch, kvHeads, seq, headDim], 3);
  const dy = T.tensor(randomValues(q.size, 4), q.shape, { dtype: 'float32', backend });
  const mask = T.tensor(
    Float32Array.from({ length: seq * seq }, (_, i) => (i % seq > Math.floor(i / seq) ? -1e9 : 0)),
    [seq, seq],
    { dtype: 'float32', backend },
  );
  const scale = headDim ** -0.5;
  const gpu = backend.name === 'webgpu' ? (backend as WebGPUBackend) : null;
  const reference = step('fused', q, k, v, dy, mask, scale, g);
  const ours: Partial<Record<AttentionPath, PathTiming | string>> = {};
  for (const path of ['fused', 'recomputed', 'kept'] as const) {
    let grads: T.Tensor[];
    try {
      grads = step(path, q, k, v, dy, mask, scale, g);
    } catch (e) {
      // The composed paths hold [B, H, T, T] scores: past the largest buffer the backend refuses them.
      const refused = e instanceof T.ValueError || (e instanceof T.GPUError && e.reason === 'out-of-memory');
      if (path === 'fused' || !refused) throw e;
      ours[path] = e.message;
      continue;
    }
    const error = await relError(grads, reference);
    for (const t of grads) t.dispose();
    const uploaded = performance.now();
    const run = () => T.tidy(() => void step(path, q, k, v, dy, mask, scale, g));
    let ms: number;
    if (gpu) {
      await settleAfterUploads(gpu, run, uploaded, 500);
      ms = (await timeKernel(gpu, run)).ms;
    } else {
      const t0 = performance.now();
      run();
      ms = performance.now() - t0;
    }
    const before = backend.memory().liveBytes;
    backend.resetPeak();
    const grads2 = step(path, q, k, v, dy, mask, scale, g);
    await grads2[0].data();
    const peakBytes = backend.memory().peakBytes - before;
    for (const t of grads2) t.dispose();
    ours[path] = { ms, peakBytes, relError: error };
  }
  for (const t of [...reference, q, k, v, dy, mask]) t.dispose();
  return { model, batch, seq, ours: ours as AttentionRow['ours'] };
}

/** PyTorch's SDPA (causal, grouped KV heads, f32, TF32 off) for the same shapes; a string where it is unavailable. */
function torchAttention(rows: { model: string; batch: number; seq: number }[]): Map<string, { ms: number; peakBytes: number }> | string {
  const cases = rows.map((r) => ({ ...ATTENTION_SHAPES[r.model], key: `${r.model} ${r.batch} ${r.seq}`, batch: r.batch, seq: r.seq }));
  const script = `
import json, torch
import torch.nn.functional as F
torch.backends.cuda.matmul.allow_tf32 = False
dev = torch.device("cuda")
out = {}
for c in json.loads(${JSON.stringify(JSON.stringify(cases))}):
    B, T, H, G, D = c["batch"], c["seq"], c["heads"], c["kvHeads"], c["headDim"]
    q = torch.randn(B, H, T, D, device=dev, requires_grad=True)
    k = torch.randn(B, G, T, D, device=dev, requires_grad=True)
    v = torch.randn(B, G, T, D, device=dev, requires_grad=True)
    dy = torch.randn(B, H, T, D, device=dev)
    def run():
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return torch.autograd.grad(y, (q, k, v), dy)
    for _ in range(3): run()
    torch.cuda.synchronize()
    times = []
    for _ in range(7):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(10): run()
        e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e) / 10)
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    g = run(); torch.cuda.synchronize()
    out[c["key"]] = {"ms": sorted(times)[3], "peakBytes": torch.cuda.max_memory_allocated() - before}
    del g, q, k, v, dy
print(json.dumps(out))
`;
  const run = spawnSync('python3', ['-c', script], { encoding: 'utf8', maxBuffer: 1 << 22 });
  if (run.error || run.status !== 0) return `pytorch: unavailable (${(run.stderr || String(run.error)).trim().split('\n').pop()})`;
  return new Map(Object.entries(JSON.parse(run.stdout) as Record<string, { ms: number; peakBytes: number }>));
}

/** The rows as a markdown table, ratios against the fused path. */
export function attentionTable(rows: AttentionRow[], device: string, date: string): string {
  const mb = (b: number) => (b / 1e6).toFixed(1);
  const lines = [
    `Causal attention, forward + backward (dq, dk, dv), f32, on ${device}, ${date}; ms of GPU time per step, peak MB above the inputs.`,
    '',
    '| model | batch × seq | fused: ms | peak | composed, recomputed: ms | peak | composed, kept: ms | peak | PyTorch SDPA: ms | peak | fused speed / recomputed | fused speed / PyTorch |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  const refusals: string[] = [];
  const cells = (t: PathTiming | string) => {
    if (typeof t === 'object') return `${t.ms.toFixed(3)} | ${mb(t.peakBytes)}`;
    if (!refusals.includes(t)) refusals.push(t);
    return `refused (${refusals.indexOf(t) + 1}) | –`;
  };
  for (const r of rows) {
    const { fused, recomputed, kept } = r.ours;
    const torch = typeof r.torch === 'object' ? r.torch : null;
    const speedup = typeof recomputed === 'object' ? `${(recomputed.ms / fused.ms).toFixed(2)}×` : '–';
    lines.push(
      `| ${r.model} | ${r.batch} × ${r.seq} | ${cells(fused)} | ${cells(recomputed)} | ${cells(kept)} | ${torch ? torch.ms.toFixed(3) : '–'} | ${torch ? mb(torch.peakBytes) : '–'} | ${speedup} | ${torch ? `${(torch.ms / fused.ms).toFixed(2)}×` : '–'} |`,
    );
  }
  const torchNote = rows.map((r) => r.torch).find((t): t is string => typeof t === 'string');
  const notes = [...refusals.map((n, i) => `(${i + 1}) ${n}`), ...(torchNote ? [torchNote] : [])];
  if (notes.length) lines.push('', ...notes);
  return lines.join('\n');
}

export async function runAttentionBench(argv: string[]): Promise<{ rows: AttentionRow[]; table: string }> {
  const op = 'metal-lora-bench attention';
  const { values } = parseArgs({
    args: argv,
    options: {
      backend: { type: 'string', default: 'webgpu' },
      models: { type: 'string', default: 'smollm2-135m,llama-3.2-1b' },
      batch: { type: 'string', default: '4' },
      seq: { type: 'string', default: '512,2048' },
      json: { type: 'string' },
      'no-peers': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const positive = (flag: string, v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new T.ValueError(op, `--${flag} must be positive integers`, 'e.g. 512', v);
    return n;
  };
  const models = values.models.split(',');
  for (const m of models) if (!ATTENTION_SHAPES[m]) throw new T.ValueError(op, `unknown model shape '${m}'`, Object.keys(ATTENTION_SHAPES).join(', '), m);
  const batch = positive('batch', values.batch);
  const seqs = values.seq.split(',').map((s) => positive('seq', s));
  if (values.backend !== 'webgpu' && values.backend !== 'cpu') throw new T.ValueError(op, 'unknown --backend', 'webgpu or cpu', values.backend);
  let backend: T.Backend = T.cpuBackend;
  let device = 'CPU backend (JavaScript, one thread)';
  if (values.backend === 'webgpu') {
    const gpu = await createWebGPUBackend({ preciseTimestamps: true });
    await useClockWarmer(gpu);
    backend = gpu;
    const r = gpu.context.report;
    device = `${r.vendor} ${r.device || r.architecture} ${r.description} (WebGPU via ${r.runtime})`.replace(/\s+/g, ' ');
  }
  T.setBackendSync(backend);
  const rows: AttentionRow[] = [];
  for (const model of models)
    for (const seq of seqs) {
      const row = await measureAttention(backend, model, batch, seq);
      rows.push(row);
      const { fused, recomputed, kept } = row.ours;
      const composed = (t: PathTiming | string) => (typeof t === 'string' ? `refused (${t})` : `${t.ms.toFixed(3)} ms (error ${t.relError.toExponential(1)})`);
      console.log(`${model} ${batch} × ${seq}: fused ${fused.ms.toFixed(3)} ms, recomputed ${composed(recomputed)}, kept ${composed(kept)}`);
    }
  if (!values['no-peers'] && values.backend === 'webgpu') {
    const torch = torchAttention(rows);
    for (const row of rows) row.torch = typeof torch === 'string' ? torch : torch.get(`${row.model} ${row.batch} ${row.seq}`);
  }
  const table = attentionTable(rows, device, new Date().toISOString().slice(0, 10));
  console.log(table);
  if (values.json) writeFileSync(values.json, JSON.stringify({ device, date: new Date().toISOString(), rows }, null, 2));
  return { rows, table };
}

if (process.argv[1]?.match(/attention-bench\.(ts|mjs|js)$/)) await runAttentionBench(process.argv.slice(2));
