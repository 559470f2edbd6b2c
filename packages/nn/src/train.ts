import {
  type CapturedGraph,
  captureGraph,
  GPUError,
  type GradOf,
  getBackend,
  grad,
  keep,
  noGrad,
  Tensor,
  tensor,
  tidy,
  valueAndGrad as functionValueAndGrad,
  ValueError,
  writeSlice,
  zeros,
} from '@metal-lora/tensor';
import { Dropout } from './layers';
import { LoRALinear } from './lora';
import { Module } from './module';

/** Options of the module form of {@link valueAndGrad}. */
export interface ValueAndGradOptions {
  /**
   * Record the step's forward and backward once and replay them (`captureGraph`): the kernels run
   * again over the same buffers with none of the ops' JavaScript, which is most of a small model's
   * step on a fast GPU. A step is captured on the second call in a row with tensor arguments of
   * one shape and dtype and the parameters' storage unchanged (the first fills the model's caches;
   * an optimizer's first step gives parameters new storage, later ones update them in place);
   * later such calls copy their arguments into the graph's inputs and replay. It runs the plain way
   * where the backend records nothing (the CPU), where a module would draw random numbers (dropout
   * while training), where an argument is not a tensor of rank ≥ 1, and where the loss function
   * does something a capture refuses (a read-back). The returned loss and gradients are handles on
   * the graph's outputs: the next call overwrites them, so use them (or copy them) before it.
   * `dispose()` on the returned function frees the graph. Default false.
   */
  capture?: boolean;
}

/** A module-form step; `dispose()` frees what a captured step holds. */
export type ModuleStep<A extends unknown[]> = ((...args: A) => [Tensor, Record<string, Tensor>]) & { dispose(): void };

/**
 * Both forms of MLX's transform under one name. `valueAndGrad(model, lossFn)` is MLX's
 * `nn.value_and_grad`: calling it returns the loss and the gradients of the model's trainable
 * parameters by name (frozen ones get none). `valueAndGrad(fn, argnums)` is `mx.value_and_grad`:
 * gradients with respect to arguments (tensor's `valueAndGrad`). No `.grad` is touched.
 *
 * @example
 * const step = valueAndGrad(model, (x, y) => crossEntropy(model.forward(x), y));
 * const [loss, grads] = step(inputs, targets);
 * optimizer.update(model, grads);
 */
export function valueAndGrad<A extends unknown[]>(model: Module, lossFn: (...args: A) => Tensor, options?: ValueAndGradOptions): ModuleStep<A>;
export function valueAndGrad<Args extends unknown[], N extends number = 0>(
  fn: (...args: Args) => Tensor,
  argnums?: N,
): (...args: Args) => [Tensor, GradOf<Args[N]>];
export function valueAndGrad<Args extends unknown[], const Ns extends readonly number[]>(
  fn: (...args: Args) => Tensor,
  argnums: Ns,
): (...args: Args) => [Tensor, { -readonly [K in keyof Ns]: GradOf<Args[Ns[K]]> }];
export function valueAndGrad(first: Module | ((...args: unknown[]) => Tensor), second?: unknown, third?: ValueAndGradOptions): unknown {
  if (first instanceof Module) {
    const plain = moduleValueAndGrad(first, second as (...args: unknown[]) => Tensor);
    return third?.capture ? capturedValueAndGrad(first, plain) : Object.assign(plain, { dispose: () => undefined });
  }
  return functionValueAndGrad(first, second as number);
}

function moduleValueAndGrad<A extends unknown[]>(model: Module, lossFn: (...args: A) => Tensor): (...args: A) => [Tensor, Record<string, Tensor>] {
  return (...args: A) => {
    const params = model.trainableParameters();
    if (params.length === 0)
      throw new ValueError('valueAndGrad', 'the model has no trainable parameters', 'at least one unfrozen parameter', 'none (all frozen)');
    const loss = lossFn(...args);
    const grads = grad(
      loss,
      params.map(([, p]) => p),
    );
    return [loss, Object.fromEntries(params.map(([name], i) => [name, grads[i]]))];
  };
}

/** Whether a module of `model` would draw random numbers in its forward (dropout while training). */
function drawsRandom(model: Module): boolean {
  return model.namedModules().some(([, m]) => m.training && ((m instanceof Dropout && m.p > 0) || (m instanceof LoRALinear && m.dropout > 0)));
}

interface StepGraph {
  key: string;
  storages: unknown[];
  inputs: Tensor[];
  start: Tensor;
  graph: CapturedGraph;
  loss: Tensor;
  grads: Record<string, Tensor>;
}

function capturedValueAndGrad<A extends unknown[]>(model: Module, plain: (...args: A) => [Tensor, Record<string, Tensor>]): ModuleStep<A> {
  let captured: StepGraph | null = null;
  // The shape key and parameter storages of the last plain call: a call that matches both is captured.
  let seen: { key: string; storages: unknown[]; count: number } | null = null;
  let refused = false;
  const release = () => {
    if (!captured) return;
    captured.graph.dispose();
    for (const t of [...captured.inputs, captured.start, captured.loss, ...Object.values(captured.grads)]) t.dispose();
    captured = null;
  };
  /** The call's arguments copied into the graph's inputs. */
  const copyIn = (inputs: Tensor[], start: Tensor, args: Tensor[]) =>
    noGrad(() => {
      args.forEach((t, i) => {
        writeSlice(inputs[i], t, start, 0);
      });
    });
  /** Handles on the graph's outputs (the caller may dispose them; the graph keeps its own). */
  const outputs = ({ loss, grads }: StepGraph): [Tensor, Record<string, Tensor>] => [
    loss.share(),
    Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, g.share()])),
  ];
  const step = (...args: A): [Tensor, Record<string, Tensor>] => {
    const backend = getBackend();
    const tensors = args.every((a) => a instanceof Tensor && a.rank >= 1) ? (args as unknown as Tensor[]) : null;
    if (refused || !tensors || !backend.capture || drawsRandom(model) || tensors.some((t) => t.backend !== backend)) {
      release();
      return plain(...args);
    }
    const key = tensors.map((t) => `${t.dtype}[${t.shape.join(',')}]`).join(';');
    const storages = model.parameters().map((p) => p.ref('valueAndGrad').data);
    if (captured && (captured.key !== key || !sameItems(captured.storages, storages))) release();
    if (captured) {
      copyIn(captured.inputs, captured.start, tensors);
      captured.graph.replay();
      // The next replay's commands are encoded now, while the device runs this one.
      captured.graph.prepare();
      return outputs(captured);
    }
    seen = seen && seen.key === key && sameItems(seen.storages, storages) ? { ...seen, count: seen.count + 1 } : { key, storages, count: 1 };
    if (seen.count < 2) return plain(...args);
    const inputs = tensors.map((t) => keep(noGrad(() => zeros([...t.shape], { dtype: t.dtype, backend }))));
    const start = keep(tensor(new Int32Array(1), [1], { dtype: 'int32', backend }));
    copyIn(inputs, start, tensors);
    let run: { result: [Tensor, Record<string, Tensor>]; graph: CapturedGraph } | null = null;
    try {
      run = tidy(() => {
        const r = captureGraph(() => plain(...(inputs as unknown as A)), backend);
        if (r) {
          keep(r.result[0]);
          for (const g of Object.values(r.result[1])) keep(g);
        }
        return r;
      });
    } catch (error) {
      // What a capture refuses (a read-back in the loss function) leaves run null: plain from now on.
      if (!(error instanceof GPUError && /captured/.test(error.message))) {
        for (const t of [...inputs, start]) t.dispose();
        throw error;
      }
    }
    if (!run) {
      for (const t of [...inputs, start]) t.dispose();
      refused = true;
      return plain(...args);
    }
    captured = { key, storages, inputs, start, graph: run.graph, loss: run.result[0], grads: run.result[1] };
    return outputs(captured);
  };
  return Object.assign(step, { dispose: release });
}

/** Whether two lists hold the same items in order (by identity): the storages a captured step was recorded over. */
export function sameItems(a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}
