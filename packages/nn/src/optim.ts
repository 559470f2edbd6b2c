import {
  adamSchedule,
  adamUpdate,
  adamUpdateInPlace,
  add,
  type Backend,
  type CapturedGraph,
  captureGraph,
  cast,
  keep,
  mul,
  noGrad,
  sub,
  sum,
  type Tensor,
  tensor,
  tidy,
  ValueError,
  zeros,
} from '@metal-lora/tensor';
import type { Module } from './module';
import { sameItems } from './train';

/** A learning rate: a number or a schedule of the step (0-based). */
export type LearningRate = number | ((step: number) => number);

type Named = [string, Tensor][];

function trainable(target: Module | Named): Named {
  return Array.isArray(target) ? target : target.trainableParameters();
}

/** Refuses a hyperparameter outside `[min, max)` (or `[min, max]` when `maxIncluded`), NaN and infinities included. */
function checkRange(op: string, name: string, value: unknown, min: number, max = Number.POSITIVE_INFINITY, maxIncluded = false): void {
  const ok = typeof value === 'number' && Number.isFinite(value) && value >= min && (maxIncluded ? value <= max : value < max);
  if (!ok)
    throw new ValueError(
      op,
      `${name} is out of range`,
      `a finite number ≥ ${min}${Number.isFinite(max) ? ` and ${maxIncluded ? '≤' : '<'} ${max}` : ''}`,
      String(value),
    );
}

/**
 * Base optimizer: per-parameter state, one `updateOne` per parameter and step (as MLX), used
 * two ways: `optimizer.update(model, grads)` with gradients by name (from `valueAndGrad`), or
 * `loss.backward(); optimizer.step()` with `.grad` (PyTorch style). Updates write into the
 * parameters' own tensors (`assign`), so references to them stay valid.
 *
 * Where every update of a step is written in place (Adam from its second step) on a backend that
 * records device work (WebGPU), the second such step in a row over the same parameters,
 * gradients and state is captured (`captureGraph`) and later ones replay it, the learning rate
 * and step read from a small tensor written before each replay: one submission instead of one
 * dispatch's host work per parameter. Gradients in other tensors than last time (clipped, or
 * summed) run the updates one by one again. `capture = false` turns this off.
 */
export abstract class Optimizer {
  protected readonly state = new Map<Tensor, Record<string, Tensor>>();
  stepCount = 0;
  /** Capture a step's updates and replay them while the same tensors come back (see the class). Default true. */
  capture = true;
  /** The captured updates and the storages they were recorded over. */
  private captured: { storages: unknown[]; graph: CapturedGraph } | null = null;
  /** The storages of the last step that could have been captured. */
  private seen: unknown[] | null = null;
  constructor(
    protected readonly params: Named | null,
    protected readonly lr: LearningRate,
  ) {
    if (typeof lr !== 'function') checkRange(new.target.name, 'lr', lr, 0);
  }

  /** The learning rate for the step about to be taken (a schedule's value is checked like a number). */
  get learningRate(): number {
    if (typeof this.lr !== 'function') return this.lr;
    const lr = this.lr(this.stepCount);
    checkRange(this.constructor.name, `lr at step ${this.stepCount}`, lr, 0);
    return lr;
  }

  protected abstract updateOne(param: Tensor, grad: Tensor, state: Record<string, Tensor>, lr: number, step: number): Tensor;

  /**
   * Whether `updateOne` on this state writes in place and reads the step's values (learning rate,
   * step) only from what {@link writeSchedule} writes, so that it can be captured. None by default.
   */
  protected replayable(_state: Record<string, Tensor>): boolean {
    return false;
  }

  /** Writes the step's values where in-place updates on `backend` (one that captures) read them. */
  protected writeSchedule(_backend: Backend, _lr: number, _step: number): void {}

  private apply(pairs: [Tensor, Tensor][]): void {
    const lr = this.learningRate;
    this.stepCount++;
    const backend = pairs[0]?.[0].backend;
    // Every step, captured or not: the in-place updates on such a backend read these values.
    if (backend?.capture) this.writeSchedule(backend, lr, this.stepCount);
    const storages = this.replayStorages(pairs);
    if (this.captured && !(storages && sameItems(this.captured.storages, storages))) this.releaseCapture();
    if (!storages) {
      this.seen = null;
      this.updateAll(pairs, lr);
      return;
    }
    if (this.captured) {
      this.captured.graph.replay();
      // The next replay's commands are encoded now, while the device runs this one.
      this.captured.graph.prepare();
      return;
    }
    if (!(this.seen && sameItems(this.seen, storages))) {
      this.seen = storages;
      this.updateAll(pairs, lr);
      return;
    }
    const run = captureGraph(() => this.updateAll(pairs, lr), backend);
    if (run) this.captured = { storages, graph: run.graph };
    else this.updateAll(pairs, lr);
  }

  /** The storages a captured step would be bound to, or null where the step cannot be captured. */
  private replayStorages(pairs: [Tensor, Tensor][]): unknown[] | null {
    if (!this.capture || pairs.length === 0) return null;
    const backend = pairs[0][0].backend;
    if (!backend.capture) return null;
    const storages: unknown[] = [];
    for (const [p, g] of pairs) {
      const st = this.state.get(p);
      if (!st || !this.replayable(st) || p.backend !== backend || g.backend !== backend) return null;
      for (const t of [p, g, ...Object.values(st)]) storages.push(t.ref('Optimizer.update').data);
    }
    return storages;
  }

  private updateAll(pairs: [Tensor, Tensor][], lr: number): void {
    noGrad(() => {
      for (const [p, g] of pairs) {
        let st = this.state.get(p);
        if (!st) this.state.set(p, (st = {}));
        const next = tidy(() => this.updateOne(p, g, st!, lr, this.stepCount));
        // An update written in place (Adam after its first step) returns the parameter itself.
        if (next !== p) {
          p.assign(next);
          next.dispose();
        }
      }
    });
  }

  private releaseCapture(): void {
    this.captured?.graph.dispose();
    this.captured = null;
  }

  /** MLX style: gradients by parameter name (those of `valueAndGrad(model, …)`). */
  update(model: Module, grads: Record<string, Tensor>): void {
    const byName = new Map(model.namedParameters());
    const pairs: [Tensor, Tensor][] = [];
    for (const [name, g] of Object.entries(grads)) {
      const p = byName.get(name);
      if (!p) throw new ValueError('Optimizer.update', `no parameter named '${name}'`, 'names of the model', name);
      pairs.push([p, g]);
    }
    this.apply(pairs);
  }

  /** PyTorch style: every parameter given at construction with a `.grad`. */
  step(): void {
    if (!this.params) throw new ValueError('Optimizer.step', 'no parameters were given to the optimizer', 'new Adam(model) or new Adam(params)', 'none');
    this.apply(this.params.filter(([, p]) => p.grad).map(([, p]) => [p, p.grad!] as [Tensor, Tensor]));
  }

  /** Drops every `.grad` of the optimizer's parameters. */
  zeroGrad(): void {
    for (const [, p] of this.params ?? []) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * The state as checkpoints keep it: each tensor under `<parameter name>.<slot>` (Adam: `m`, `v`;
   * SGD: `momentum`) of `model`'s parameters, and the steps taken. The tensors are the optimizer's
   * own: read them, do not dispose them.
   */
  stateDict(model: Module): { step: number; tensors: Record<string, Tensor> } {
    const names = new Map(model.namedParameters().map(([name, p]) => [p, name]));
    const tensors: Record<string, Tensor> = Object.create(null);
    for (const [p, slots] of this.state) {
      const name = names.get(p);
      if (name === undefined)
        throw new ValueError(
          'Optimizer.stateDict',
          'the optimizer holds state for a tensor that is not a parameter of the model',
          'the model it trains',
          'another model',
        );
      for (const [slot, t] of Object.entries(slots)) tensors[`${name}.${slot}`] = t;
    }
    return { step: this.stepCount, tensors };
  }

  /**
   * Restores {@link stateDict}'s result (copies of the tensors are kept): every name must be a
   * parameter of `model` with a slot of the tensor's shape; the current state is replaced.
   */
  loadStateDict(model: Module, state: { step: number; tensors: Record<string, Tensor> }): void {
    const op = 'Optimizer.loadStateDict';
    if (!Number.isSafeInteger(state.step) || state.step < 0)
      throw new ValueError(op, 'step must be a non-negative integer', 'an integer ≥ 0', String(state.step));
    const params = new Map(model.namedParameters());
    const entries: [Tensor, string, Tensor][] = [];
    for (const [key, t] of Object.entries(state.tensors)) {
      const dot = key.lastIndexOf('.');
      const p = dot > 0 ? params.get(key.slice(0, dot)) : undefined;
      if (!p) throw new ValueError(op, `'${key}' is not <parameter>.<slot> of a parameter of the model`, 'a parameter name and a slot', key);
      if (t.shape.join() !== p.shape.join()) throw new ValueError(op, `'${key}' does not fit its parameter`, `[${p.shape}]`, `[${t.shape}]`);
      entries.push([p, key.slice(dot + 1), t]);
    }
    this.dispose();
    for (const [p, slot, t] of entries) {
      let slots = this.state.get(p);
      if (!slots) this.state.set(p, (slots = {}));
      // A copy, not a second handle: updates written in place must not reach the caller's tensor.
      // Half parameters keep f32 state (Adam's master copy and moments).
      slots[slot] = keep(noGrad(() => tidy(() => add(t.cast(p.dtype === 'float16' ? 'float32' : p.dtype), 0))));
    }
    this.stepCount = state.step;
  }

  /** Frees the optimizer's state (moments, momentum buffers); a later step starts it afresh. */
  dispose(): void {
    this.releaseCapture();
    this.seen = null;
    for (const st of this.state.values()) for (const t of Object.values(st)) t.dispose();
    this.state.clear();
  }

  /** Keeps a state tensor out of the step's `tidy` and frees the one it replaces. */
  protected keepState(state: Record<string, Tensor>, key: string, value: Tensor): Tensor {
    state[key]?.dispose();
    state[key] = keep(value.share());
    return value;
  }
}

export interface SGDOptions {
  lr: LearningRate;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
}

/** SGD with momentum, dampening, Nesterov and L2 weight decay (PyTorch's semantics). */
export class SGD extends Optimizer {
  constructor(
    target: Module | Named | null,
    readonly options: SGDOptions,
  ) {
    super(target ? trainable(target) : null, options.lr);
    checkRange('SGD', 'momentum', options.momentum ?? 0, 0);
    checkRange('SGD', 'dampening', options.dampening ?? 0, 0, 1, true);
    checkRange('SGD', 'weightDecay', options.weightDecay ?? 0, 0);
    if (options.nesterov && (!options.momentum || options.dampening))
      throw new ValueError(
        'SGD',
        'Nesterov needs momentum and no dampening',
        'momentum > 0, dampening 0',
        `momentum ${options.momentum}, dampening ${options.dampening}`,
      );
  }
  protected updateOne(p: Tensor, grad: Tensor, state: Record<string, Tensor>, lr: number): Tensor {
    const { momentum = 0, dampening = 0, nesterov = false, weightDecay = 0 } = this.options;
    let g = weightDecay ? add(grad, mul(p, weightDecay)) : grad;
    if (momentum) {
      const buf = state.momentum ? add(mul(state.momentum, momentum), mul(g, 1 - dampening)) : g;
      this.keepState(state, 'momentum', buf);
      g = nesterov ? add(g, mul(buf, momentum)) : buf;
    }
    return sub(p, mul(g, lr));
  }
}

export interface AdamOptions {
  lr: LearningRate;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Adam (PyTorch's semantics: bias-corrected moments; weightDecay adds L2 to the gradient). */
export class Adam extends Optimizer {
  constructor(
    target: Module | Named | null,
    readonly options: AdamOptions,
  ) {
    super(target ? trainable(target) : null, options.lr);
    const [b1, b2] = options.betas ?? [0.9, 0.999];
    checkRange(new.target.name, 'betas[0]', b1, 0, 1);
    checkRange(new.target.name, 'betas[1]', b2, 0, 1);
    checkRange(new.target.name, 'eps', options.eps ?? 1e-8, 0);
    checkRange(new.target.name, 'weightDecay', options.weightDecay ?? 0, 0);
  }
  protected decoupled = false;
  /** The step's values as the in-place updates read them on a backend that captures (`adamSchedule`). */
  private schedule: Tensor | null = null;

  protected override replayable(state: Record<string, Tensor>): boolean {
    return state.m !== undefined && state.v !== undefined;
  }

  protected override writeSchedule(backend: Backend, lr: number, step: number): void {
    if (this.schedule?.backend !== backend) {
      this.schedule?.dispose();
      this.schedule = keep(tensor(new Float32Array(4), [4], { dtype: 'float32', backend }));
    }
    this.schedule.write(adamSchedule(this.stepOptions(lr, step)));
  }

  override dispose(): void {
    super.dispose();
    this.schedule?.dispose();
    this.schedule = null;
  }

  private stepOptions(lr: number, step: number) {
    const [beta1, beta2] = this.options.betas ?? [0.9, 0.999];
    return {
      lr,
      beta1,
      beta2,
      eps: this.options.eps ?? 1e-8,
      weightDecay: this.options.weightDecay ?? (this.decoupled ? 0.01 : 0),
      decoupled: this.decoupled,
      step,
    };
  }

  protected updateOne(p: Tensor, grad: Tensor, state: Record<string, Tensor>, lr: number, step: number): Tensor {
    const options = this.stepOptions(lr, step);
    if (p.dtype !== 'float16') return this.adamStep(p, grad, state, options);
    // A half parameter steps an f32 copy of itself with f32 moments and takes its rounding: in f16
    // the moments underflow (v = g² is 0 below g ≈ 2e-4, eps = 1e-8 is 0), and m / (√v + eps)
    // turns NaN at the first step whose gradient is zero, as LoRA's A is at the start.
    const master = state.master ?? this.keepState(state, 'master', cast(p, 'float32'));
    if (state.m && state.v) {
      // One dispatch: the master steps in place and its rounding is written into p itself, so p's
      // buffer (and every bind group that reads it) stays the same from step to step.
      adamUpdateInPlace(master, grad, state.m, state.v, options, p, this.scheduleFor(p));
      return p;
    }
    const next = this.adamStep(master, cast(grad, 'float32'), state, options);
    if (next !== master) this.keepState(state, 'master', next);
    return cast(next, 'float16');
  }

  /** The schedule tensor where p's backend captures (written by `writeSchedule` this step), else none: the options' values. */
  private scheduleFor(p: Tensor): Tensor | undefined {
    return p.backend.capture && this.schedule?.backend === p.backend ? this.schedule : undefined;
  }

  /** One Adam step of p (moments in `state`, of p's dtype); p itself after the first step (written in place). */
  private adamStep(p: Tensor, grad: Tensor, state: Record<string, Tensor>, options: Parameters<typeof adamUpdate>[4]): Tensor {
    // One fused op per parameter: a dozen elementwise dispatches each were most of a step's host
    // time. After the first step it writes into the parameter and moments themselves, so their GPU
    // buffers (and the bind groups of every dispatch that reads them) stay the same from step to step.
    if (state.m && state.v) {
      adamUpdateInPlace(p, grad, state.m, state.v, options, undefined, this.scheduleFor(p));
      return p;
    }
    const fresh = () => zeros([...p.shape], { dtype: p.dtype, backend: p.backend });
    const [next, m2, v2] = adamUpdate(p, grad, fresh(), fresh(), options);
    this.keepState(state, 'm', m2);
    this.keepState(state, 'v', v2);
    return next;
  }
}

/** AdamW: Adam with decoupled weight decay (default 0.01, as PyTorch). */
export class AdamW extends Adam {
  protected override decoupled = true;
}

/** Global L2 norm of gradients, and the gradients scaled down to `maxNorm` when above it (PyTorch's rule). */
export function clipGradNorm(grads: Record<string, Tensor>, maxNorm: number): { grads: Record<string, Tensor>; norm: number } {
  const values = Object.values(grads);
  if (values.length === 0) return { grads, norm: 0 };
  const norm = Math.sqrt(
    noGrad(() =>
      values.reduce((acc, g) => {
        const sq = tidy(() => sum(mul(g, g)));
        const v = sq.backend.readSync ? sq.itemSync() : Number.NaN;
        sq.dispose();
        return acc + v;
      }, 0),
    ),
  );
  if (Number.isNaN(norm)) throw new ValueError('clipGradNorm', 'this backend reads asynchronously', 'clipGradNormAsync on webgpu', 'a synchronous call');
  return { grads: scaleGrads(grads, norm, maxNorm), norm };
}

/** `clipGradNorm` for backends that read asynchronously (webgpu). */
export async function clipGradNormAsync(grads: Record<string, Tensor>, maxNorm: number): Promise<{ grads: Record<string, Tensor>; norm: number }> {
  let total = 0;
  for (const g of Object.values(grads)) {
    const sq = noGrad(() => tidy(() => sum(mul(g, g))));
    total += await sq.item();
    sq.dispose();
  }
  const norm = Math.sqrt(total);
  return { grads: scaleGrads(grads, norm, maxNorm), norm };
}

function scaleGrads(grads: Record<string, Tensor>, norm: number, maxNorm: number): Record<string, Tensor> {
  const factor = maxNorm / (norm + 1e-6);
  if (factor >= 1) return grads;
  return noGrad(() => Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, mul(g, factor)])));
}

/** Linear warm-up from 0 to `peak` over `steps`, then `peak`. */
export function linearWarmup(peak: number, steps: number): (step: number) => number {
  return (step) => (steps <= 0 ? peak : peak * Math.min(1, (step + 1) / steps));
}

/** Cosine decay from `peak` to `end` over `steps`, then `end`. */
export function cosineDecay(peak: number, steps: number, end = 0): (step: number) => number {
  return (step) => (step >= steps ? end : end + 0.5 * (peak - end) * (1 + Math.cos((Math.PI * step) / steps)));
}

/** Warm-up for `warmup` steps, then cosine decay over the remaining `total - warmup`. */
export function warmupCosine(peak: number, warmup: number, total: number, end = 0): (step: number) => number {
  const up = linearWarmup(peak, warmup);
  const down = cosineDecay(peak, Math.max(1, total - warmup), end);
  return (step) => (step < warmup ? up(step) : down(step - warmup));
}
