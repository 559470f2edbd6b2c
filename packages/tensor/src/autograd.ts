import { assertDifferentiable, computeGradients, isGradEnabled, noGrad, record, releaseGraph, withGrad } from './engine';
import { ShapeError, StateError, ValueError } from './errors';
import { formatShape } from './shape';
import { rngState, setRngState } from './random';
import { tidy } from './scope';
import { full, Tensor } from './tensor';

/** Tensors in a tree: a tensor, an array of trees, or a plain object of trees. */
export type TensorTree = Tensor | readonly TensorTree[] | { readonly [key: string]: TensorTree };

function mapTree(tree: TensorTree, fn: (t: Tensor) => Tensor): TensorTree {
  if (tree instanceof Tensor) return fn(tree);
  if (Array.isArray(tree)) return tree.map((t) => mapTree(t, fn));
  const out: Record<string, TensorTree> = {};
  for (const [k, v] of Object.entries(tree)) out[k] = mapTree(v as TensorTree, fn);
  return out;
}

function leaves(tree: TensorTree, out: Tensor[] = []): Tensor[] {
  if (tree instanceof Tensor) out.push(tree);
  else if (Array.isArray(tree)) for (const t of tree) leaves(t, out);
  else for (const v of Object.values(tree)) leaves(v as TensorTree, out);
  return out;
}

/**
 * Gradients of a one-element `output` with respect to `inputs`, without touching any `.grad`
 * (like `torch.autograd.grad`). Inputs that do not influence the output get zeros.
 */
export function grad(output: Tensor, inputs: readonly Tensor[], options: { retainGraph?: boolean } = {}): Tensor[] {
  if (output.size !== 1) throw new ShapeError('grad', 'output must have one element', 'a scalar loss', formatShape(output.shape));
  if (output.graphReleased) assertDifferentiable(output, 'grad');
  const targets = new Set(inputs);
  let found = new Map<Tensor, Tensor>();
  if (output.requiresGrad) {
    const seed = full(output.shape, 1, { dtype: output.dtype, backend: output.backend });
    found = computeGradients(output, seed, (t) => targets.has(t));
    const fromSeed = [...found.values()].includes(seed);
    if (!fromSeed) seed.dispose();
    if (!options.retainGraph) releaseGraph(output);
  }
  return inputs.map((t) => found.get(t) ?? full(t.shape, 0, { dtype: t.dtype, backend: t.backend }));
}

/** The gradient structure of an argument: a tensor for a tensor, the same tree shape for trees. */
export type GradOf<A> = A extends Tensor
  ? Tensor
  : A extends readonly unknown[]
    ? { -readonly [K in keyof A]: GradOf<A[K]> }
    : A extends object
      ? { -readonly [K in keyof A]: GradOf<A[K]> }
      : never;

/**
 * MLX-style transform: `valueAndGrad(fn, argnums)(...args)` returns `[value, grads]`, the gradient
 * of `fn`'s one-element result with respect to the arguments at `argnums` (default 0). Those
 * arguments may be tensors or trees (arrays / plain objects) of tensors; gradients come back in
 * the same structure. The originals are not modified and no `.grad` is set.
 *
 * @example
 * const f = (w: Tensor) => w.mul(w).sum();
 * const [value, dw] = valueAndGrad(f)(tensor([1, 2, 3])); // 14, [2, 4, 6]
 */
export function valueAndGrad<Args extends unknown[], N extends number = 0>(
  fn: (...args: Args) => Tensor,
  argnums?: N,
): (...args: Args) => [Tensor, GradOf<Args[N]>];
export function valueAndGrad<Args extends unknown[], const Ns extends readonly number[]>(
  fn: (...args: Args) => Tensor,
  argnums: Ns,
): (...args: Args) => [Tensor, { -readonly [K in keyof Ns]: GradOf<Args[Ns[K]]> }];
export function valueAndGrad<Args extends unknown[]>(fn: (...args: Args) => Tensor, argnums: number | readonly number[] = 0) {
  const list = typeof argnums === 'number' ? [argnums] : [...argnums];
  return (...args: Args): [Tensor, TensorTree | TensorTree[]] => {
    if (!isGradEnabled()) throw new StateError('valueAndGrad', 'gradients are disabled; expected a call outside noGrad(), got one inside');
    for (const i of list) {
      if (!Number.isInteger(i) || i < 0 || i >= args.length)
        throw new ValueError('valueAndGrad', 'argnum out of range', `an index below ${args.length}`, String(i));
    }
    const callArgs = [...args] as unknown[];
    const watched: Tensor[] = [];
    for (const i of list) {
      callArgs[i] = mapTree(args[i] as TensorTree, (t) => {
        const leaf = t.detach();
        leaf.requiresGrad = true;
        watched.push(leaf);
        return leaf;
      });
    }
    const value = fn(...(callArgs as Args));
    if (!(value instanceof Tensor)) throw new ValueError('valueAndGrad', 'fn must return a Tensor', 'a one-element Tensor', typeof value);
    const grads = grad(value, watched);
    const byLeaf = new Map(watched.map((w, i) => [w, grads[i]]));
    const shaped = list.map((i) => mapTree(callArgs[i] as TensorTree, (leaf) => byLeaf.get(leaf)!));
    for (const w of watched) w.dispose();
    const result = noGrad(() => value.detach());
    value.dispose();
    return [result, typeof argnums === 'number' ? shaped[0] : shaped];
  };
}

/**
 * Gradient checkpointing: `fn(x)` computed without keeping its intermediate tensors, and computed
 * again in the backward pass to get the gradients of `x` and of `params` (the tensors requiring
 * grad that `fn` reads besides `x`, such as a block's LoRA factors). Only `x` is kept between the
 * passes, so a model of checkpointed blocks holds one activation per block instead of every
 * intermediate, for about one more forward pass of compute. Random ops inside `fn` (dropout) draw
 * the same keys in both passes. `fn` must be a pure function of `x`, `params` and tensors that do
 * not change before backward. With a list of inputs `fn` takes them in order (attention's q, k
 * and v, whose probabilities are then recomputed rather than kept).
 *
 * @example
 * h = checkpoint((t) => block.forward(t), h, block.trainableParameters().map(([, p]) => p));
 */
export function checkpoint(fn: (x: Tensor) => Tensor, x: Tensor, params: readonly Tensor[]): Tensor;
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, xs: readonly Tensor[], params: readonly Tensor[]): Tensor;
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, input: Tensor | readonly Tensor[], params: readonly Tensor[]): Tensor {
  const xs = input instanceof Tensor ? [input] : Array.isArray(input) ? [...(input as readonly Tensor[])] : null;
  if (!xs || xs.length === 0 || !xs.every((t) => t instanceof Tensor))
    throw new ValueError(
      'checkpoint',
      'x must be a Tensor (or a non-empty list of them)',
      'a Tensor',
      Array.isArray(input) ? 'a list of other values' : typeof input,
    );
  const watched = params.filter((p) => p.requiresGrad);
  const random = rngState();
  // Without recording: the intermediates are freed as soon as the output exists.
  const y = tidy(() => noGrad(() => fn(...xs)));
  if (!(y instanceof Tensor)) throw new ValueError('checkpoint', 'fn must return a Tensor', 'a Tensor', typeof y);
  return record(
    y,
    [...xs, ...watched],
    'checkpoint',
    (dy, inputs) =>
      tidy(() => {
        const leaves = inputs.map((t, i) => {
          const leaf = t.detach();
          leaf.requiresGrad = xs[i].requiresGrad;
          return leaf;
        });
        const after = rngState();
        setRngState(random);
        let out: Tensor;
        try {
          out = withGrad(() => fn(...leaves));
        } finally {
          setRngState(after);
        }
        const targets = new Set<Tensor>([...leaves, ...watched]);
        const found = out.requiresGrad ? computeGradients(out, dy, (t) => targets.has(t)) : new Map<Tensor, Tensor>();
        releaseGraph(out);
        const grads = [...leaves, ...watched].map((t) => {
          const g = found.get(t);
          // The seed itself comes back when fn is the identity on a target: give it its own handle.
          return g === dy ? dy.share() : (g ?? null);
        });
        for (const leaf of leaves) leaf.dispose();
        return [...xs.map((x, i) => (x.requiresGrad ? grads[i] : null)), ...grads.slice(xs.length)];
      }),
    xs,
  );
}

export { leaves as treeLeaves, mapTree };
