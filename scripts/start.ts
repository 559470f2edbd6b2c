/**
 * The main job on its embedded default: fine-tune a LoRA adapter on a frozen linear layer.
 *
 * A frozen base layer W [out, in] is given; the task's true map is W + ΔW with ΔW of rank 4 that
 * the adapter must discover from input/output pairs alone. LoRA (rank 8, A uniform, B zero, as
 * PEFT and MLX initialise them) is trained with Adam through the `loraLinear` op and autograd;
 * the loss falls while W stays bit-identical. Everything is seeded: two runs print the same.
 *
 *   pnpm start [--steps N] [--rank R] [--backend auto|webgpu|cpu]
 */
import '@metal-lora/metal-kernels';
import { loraLinear, manualSeed, matmul, mean, mul, noGrad, rand, randn, setBackend, sub, type Tensor, tidy } from '@metal-lora/tensor';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isInteger(v) || v <= 0) {
    console.error(`start: --${name} must be a positive integer; expected e.g. --${name} ${fallback}, got ${process.argv[i + 1]}`);
    process.exit(2);
  }
  return v;
}

const steps = flag('steps', 300);
const rank = flag('rank', 8);
const [inF, outF, samples] = [96, 64, 512];
manualSeed(2026);

const wanted = process.argv.includes('--backend') ? process.argv[process.argv.indexOf('--backend') + 1] : 'auto';
const backend = await setBackend(wanted);
const report = (backend as { context?: { report: { vendor: string; description: string; runtime: string } } }).context?.report;
console.log(`MetalLoRA-TS main job: LoRA fine-tuning of a frozen ${outF}x${inF} linear layer`);
console.log(`backend: ${backend.name}${report ? ` (${report.vendor} ${report.description}, ${report.runtime})` : wanted === 'auto' ? ' (no WebGPU adapter found)' : ''}`);

// The task: inputs x and targets y = x·(W + ΔW)ᵀ with a hidden rank-4 ΔW.
const weight = randn([outF, inF], { seed: 1, std: 1 / Math.sqrt(inF) });
const hiddenB = randn([outF, 4], { seed: 2, std: 0.5 });
const hiddenA = randn([4, inF], { seed: 3, std: 0.5 / Math.sqrt(inF) });
const x = randn([samples, inF], { seed: 4 });
const target = tidy(() => matmul(x, weight.add(matmul(hiddenB, hiddenA)), { transposeB: true }));
const weightBefore = Float32Array.from(await weight.data());

// The adapter, initialised as PEFT / MLX do: A ~ U(±1/√in), B = 0 (so training starts at the base).
const bound = 1 / Math.sqrt(inF);
const loraA = rand([rank, inF], { seed: 5, low: -bound, high: bound, requiresGrad: true });
const loraB = randn([outF, rank], { seed: 6, std: 0 });
loraB.requiresGrad = true;
const scale = 16 / rank;

// Adam (PyTorch semantics), written with tensor ops.
const lr = 1e-2;
const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
const params = [loraA, loraB];
const m = params.map((p) => mul(p, 0));
const v = params.map((p) => mul(p, 0));
function adamStep(t: number): void {
  noGrad(() => {
    params.forEach((p, i) => {
      const g = p.grad!;
      const nm = tidy(() => m[i].mul(beta1).add(g.mul(1 - beta1)));
      const nv = tidy(() => v[i].mul(beta2).add(g.mul(g).mul(1 - beta2)));
      m[i].dispose();
      v[i].dispose();
      m[i] = nm;
      v[i] = nv;
      const update = tidy(() => nm.div(1 - beta1 ** t).div(nv.div(1 - beta2 ** t).sqrt().add(eps)).mul(lr));
      const next = sub(p, update);
      update.dispose();
      p.assign(next);
      next.dispose();
      g.dispose();
      p.grad = null;
    });
  });
}

const lossOf = (): Tensor => {
  const pred = loraLinear(x, weight, loraA, loraB, { scale });
  const diff = sub(pred, target);
  return mean(mul(diff, diff));
};
const baseLoss = await tidy(() => noGrad(() => mean(sub(matmul(x, weight, { transposeB: true }), target).pow(2)))).item();
console.log(`loss of the frozen base alone: ${baseLoss.toFixed(5)}`);

const t0 = performance.now();
let loss = 0;
for (let step = 1; step <= steps; step++) {
  const l = tidy(() => {
    const value = lossOf();
    value.backward();
    return value;
  });
  adamStep(step);
  if (step === 1 || step % 50 === 0 || step === steps) loss = await l.item();
  l.dispose();
  if (step === 1 || step % 50 === 0 || step === steps) {
    const bar = '#'.repeat(Math.round((30 * step) / steps)).padEnd(30, '.');
    console.log(`[${bar}] step ${String(step).padStart(4)}  loss ${loss.toExponential(3)}`);
  }
}
await weight.data(); // wait for queued GPU work before stopping the clock
const seconds = (performance.now() - t0) / 1000;
const flops = steps * samples * (2 * inF * outF + 2 * rank * (inF + outF)) * 3;
console.log(`trained ${steps} steps in ${seconds.toFixed(2)} s (${(flops / seconds / 1e9).toFixed(2)} GFLOP/s of forward+backward work)`);

const unchanged = (await weight.data()).every((w, i) => Object.is(w, weightBefore[i]));
console.log(`base weight bit-identical after training: ${unchanged}`);
const improved = loss < baseLoss * 0.05;
console.log(`loss ${baseLoss.toFixed(5)} → ${loss.toExponential(3)} (${((1 - loss / baseLoss) * 100).toFixed(1)}% lower): ${improved ? 'the adapter learned the low-rank update' : 'did not converge'}`);
if (!unchanged || !improved) process.exit(1);
