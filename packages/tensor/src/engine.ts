import { StateError } from './errors';
import type { GradientContexts, GradientTable } from './ops/gradient-contexts';
import type { Tensor } from './tensor';

/** A recorded op application: how to turn the output's gradient into its inputs' gradients. */
export interface GradNode {
  readonly op: string;
  readonly inputs: readonly Tensor[];
  /** One entry per input: its gradient, or null where none flows (not differentiable / not needed). */
  readonly backward: (dy: Tensor) => readonly (Tensor | null)[];
  /** Handles on the tensors the rule needs, owned by the node and dropped with the graph. */
  readonly saved: readonly Tensor[];
}

/** A backward rule: the output's gradient and the saved tensors → one gradient per input. */
export type BackwardRule = (dy: Tensor, saved: readonly Tensor[]) => readonly (Tensor | null)[];

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/**
 * Runs `fn` without recording gradients (inference, optimizer updates). Synchronous work only:
 * an async `fn` records again after its first `await`.
 */
export function noGrad<T>(fn: () => T): T {
  const before = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = before;
  }
}

/** Runs `fn` recording gradients, also inside `noGrad` (a backward rule that re-runs a forward pass). @internal */
export function withGrad<T>(fn: () => T): T {
  const before = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = before;
  }
}

/**
 * Records `output` as computed from `inputs` with the given backward rule, when gradients are
 * enabled and some input requires them. The rule gets its own handles on `save` (so the caller
 * may dispose the originals) and must return new tensors shaped like the inputs, or `dy` itself.
 */
export function record(output: Tensor, inputs: readonly Tensor[], op: string, rule: BackwardRule, save: readonly Tensor[] = []): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return output;
  const saved = save.map((t) => t.share());
  output.requiresGrad = true;
  output.node = { op, inputs, saved, backward: (dy) => rule(dy, saved) };
  return output;
}

let gradients: GradientTable | null = null;

/** Installs the table of gradient rules (`ops/gradients.ts`); the package entry does it once. @internal */
export function setGradientTable(table: GradientTable): void {
  gradients = table;
}

/**
 * {@link record} with `op`'s rule from the gradient table: the rule gets the saved tensors,
 * `context` (what the forward pass knew: shapes, attrs, which inputs needed a gradient) and the
 * inputs. Ops call this rather than writing their rule inline, so that all derivatives live in one
 * module and the op modules do not import each other for their gradients. @internal
 */
export function recordOp<K extends keyof GradientContexts>(
  op: K,
  output: Tensor,
  inputs: readonly Tensor[],
  context: GradientContexts[K],
  save: readonly Tensor[] = [],
): Tensor {
  if (!gradEnabled || !inputs.some((t) => t.requiresGrad)) return output;
  const rule = gradients?.[op];
  if (!rule)
    throw new StateError(op, "no gradient rules are installed; expected the package entry ('@metal-lora/tensor') to be imported, got ops used without it");
  return record(output, inputs, op, (dy, saved) => rule(dy, saved, context, inputs), save);
}

function topoOrder(roots: readonly Tensor[]): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: deep graphs (long training loops) must not overflow the stack.
  const stack: [Tensor, number][] = roots.map((r) => [r, 0]);
  for (const r of roots) seen.add(r);
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [t, i] = top;
    const inputs = t.node?.inputs ?? [];
    if (i < inputs.length) {
      top[1]++;
      const next = inputs[i];
      if (next.requiresGrad && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      stack.pop();
      order.push(t);
    }
  }
  return order.reverse();
}

/**
 * Gradients of `root` (seeded with `seed`) with respect to every tensor requiring grad that it
 * depends on. Intermediate gradients are disposed as soon as they have been propagated.
 */
export function computeGradients(root: Tensor, seed: Tensor, isTarget: (t: Tensor) => boolean): Map<Tensor, Tensor> {
  const order = topoOrder([root]);
  // A tensor whose graph an earlier backward released would stop the gradient there and leave its
  // inputs with a partial .grad: refuse, as PyTorch does, before anything is accumulated.
  const released = order.find((t) => t.graphReleased);
  if (released) assertDifferentiable(released, 'backward');
  const grads = new Map<Tensor, Tensor>([[root, seed]]);
  const kept = new Map<Tensor, Tensor>();
  noGrad(() => {
    for (const t of order) {
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      if (isTarget(t)) kept.set(t, g);
      const node = t.node;
      if (!node) continue;
      const inputGrads = node.backward(g);
      // A rule may hand back `g` itself or one tensor for several inputs (add, reshape): give each
      // its own handle so that disposing one gradient never frees another's storage.
      const handedOut = new Set<Tensor>([g]);
      node.inputs.forEach((input, i) => {
        let gi = inputGrads[i];
        if (!gi || !input.requiresGrad) return;
        if (handedOut.has(gi)) gi = gi.share();
        handedOut.add(gi);
        const prev = grads.get(input);
        if (prev) {
          // The chaining method (tensor-methods.ts): the engine sits below the ops and cannot import them.
          grads.set(input, prev.add(gi));
          prev.dispose();
          gi.dispose();
        } else grads.set(input, gi);
      });
      if (!isTarget(t) && g !== seed) g.dispose();
    }
  });
  return kept;
}

/** Drops the recorded graph below `root` and releases the tensors its nodes saved. */
export function releaseGraph(root: Tensor): void {
  for (const t of topoOrder([root])) {
    if (!t.node) continue;
    for (const s of t.node.saved) s.dispose();
    t.node = null;
    t.graphReleased = true;
  }
}

export function assertDifferentiable(root: Tensor, op: string): void {
  if (root.graphReleased) {
    throw new StateError(
      op,
      'the graph of this tensor (or of a tensor it was computed from) was released by an earlier backward; expected a live graph (pass { retainGraph: true } to the first backward to go through it again), got a released one',
    );
  }
  if (!root.requiresGrad) {
    throw new StateError(
      op,
      'the tensor does not require grad; expected an output computed from a tensor with requiresGrad: true, got one with no recorded graph',
    );
  }
}
