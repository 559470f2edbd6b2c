import type { Tensor } from './tensor';

/** Tensors created inside the innermost `tidy` scope, disposed when it closes. */
const scopes: Set<Tensor>[] = [];

/** Called by every new tensor handle. */
export function trackTensor(t: Tensor): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Removes a tensor from scope tracking so `tidy` never disposes it. Returns it. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Tensor>, isTensor: (v: unknown) => v is Tensor): void {
  if (isTensor(value)) out.add(value);
  else if (Array.isArray(value)) for (const v of value) collect(v, out, isTensor);
  else if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collect(v, out, isTensor);
  }
}

let isTensorFn: (v: unknown) => v is Tensor = (_v): _v is Tensor => false;
export function setTensorCheck(fn: (v: unknown) => v is Tensor): void {
  isTensorFn = fn;
}

/**
 * Runs `fn` and disposes every tensor it created except those it returns (in arrays or plain
 * objects too), those passed to {@link keep}, and gradients stored on `.grad`. Returned tensors
 * move to the enclosing scope. `fn` must be synchronous. Call `backward()` inside the scope that
 * ran the forward pass: the tensors autograd saved are disposed with the scope.
 *
 * @example
 * const loss = tidy(() => mse(model.forward(x), y)); // intermediates freed, loss kept
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (error) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw error;
  }
  scopes.pop();
  const survivors = new Set<Tensor>();
  collect(result, survivors, isTensorFn);
  for (const t of scope) {
    if (survivors.has(t)) scopes[scopes.length - 1]?.add(t);
    else t.dispose();
  }
  return result;
}
