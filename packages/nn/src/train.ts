import { grad, type Tensor, ValueError } from '@metal-lora/tensor';
import type { Module } from './module';

/**
 * MLX's `nn.value_and_grad`: wraps `lossFn` so that calling it returns the loss and the gradients
 * of the model's trainable parameters by name (frozen ones get none). No `.grad` is touched.
 *
 * @example
 * const step = valueAndGrad(model, (x, y) => crossEntropy(model.forward(x), y));
 * const [loss, grads] = step(inputs, targets);
 * optimizer.update(model, grads);
 */
export function valueAndGrad<A extends unknown[]>(model: Module, lossFn: (...args: A) => Tensor): (...args: A) => [Tensor, Record<string, Tensor>] {
  return (...args: A) => {
    const params = model.trainableParameters();
    if (params.length === 0) throw new ValueError('valueAndGrad', 'the model has no trainable parameters', 'at least one unfrozen parameter', 'none (all frozen)');
    const loss = lossFn(...args);
    const grads = grad(loss, params.map(([, p]) => p));
    return [loss, Object.fromEntries(params.map(([name], i) => [name, grads[i]]))];
  };
}
