import { Module, valueAndGrad as moduleValueAndGrad } from '@metal-lora/nn';
import { type Tensor, valueAndGrad as functionValueAndGrad } from '@metal-lora/tensor';

/**
 * Both forms under one name: `valueAndGrad(model, lossFn)` (gradients of the model's trainable
 * parameters by name, as MLX's `nn.value_and_grad`) and `valueAndGrad(fn, argnums)` (gradients
 * with respect to arguments, as `mx.value_and_grad`).
 */
export function valueAndGrad<A extends unknown[]>(model: Module, lossFn: (...args: A) => Tensor): (...args: A) => [Tensor, Record<string, Tensor>];
export function valueAndGrad<A extends unknown[]>(fn: (...args: A) => Tensor, argnums?: number | readonly number[]): (...args: A) => [Tensor, unknown];
export function valueAndGrad(first: unknown, second?: unknown): unknown {
  if (first instanceof Module) return moduleValueAndGrad(first, second as (...args: unknown[]) => Tensor);
  return functionValueAndGrad(first as (...args: unknown[]) => Tensor, second as number);
}
