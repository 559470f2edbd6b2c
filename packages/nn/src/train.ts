import { type GradOf, grad, type Tensor, valueAndGrad as functionValueAndGrad, ValueError } from '@metal-lora/tensor';
import { Module } from './module';

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
export function valueAndGrad<A extends unknown[]>(model: Module, lossFn: (...args: A) => Tensor): (...args: A) => [Tensor, Record<string, Tensor>];
export function valueAndGrad<Args extends unknown[], N extends number = 0>(
  fn: (...args: Args) => Tensor,
  argnums?: N,
): (...args: Args) => [Tensor, GradOf<Args[N]>];
export function valueAndGrad<Args extends unknown[], const Ns extends readonly number[]>(
  fn: (...args: Args) => Tensor,
  argnums: Ns,
): (...args: Args) => [Tensor, { -readonly [K in keyof Ns]: GradOf<Args[Ns[K]]> }];
export function valueAndGrad(first: Module | ((...args: unknown[]) => Tensor), second?: unknown): unknown {
  if (first instanceof Module) return moduleValueAndGrad(first, second as (...args: unknown[]) => Tensor);
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
