import { type Backend, getKernel, type KernelOutput } from './backend';
import { ValueError } from './errors';
import type { OpAttrs, OpInputs, OpName, OpResult } from './ops/op-names';
import { Tensor } from './tensor';

function commonBackend(op: string, inputs: readonly Tensor[]): Backend {
  const backend = inputs[0].backend;
  for (const t of inputs) {
    if (t.backend !== backend) {
      throw new ValueError(
        op,
        'inputs live on different backends',
        `all on '${backend.name}'`,
        `'${t.backend.name}'; move one with await t.to('${backend.name}')`,
      );
    }
  }
  return backend;
}

/**
 * Dispatches `op` to the inputs' backend and wraps the kernel's result as tensors: one tensor, or
 * for the ops in `OpOutputs` a record of them by name.
 */
export function runOp<K extends OpName>(op: K, inputs: readonly Tensor[], attrs: OpAttrs[K], backend?: Backend): OpResult<K, Tensor> {
  const target = backend ?? commonBackend(op, inputs);
  const kernel = getKernel(target.name, op);
  // The op's function validated the inputs against its OpInputs entry.
  const refs = inputs.map((t) => t.ref(op)) as unknown as OpInputs[K];
  const result: KernelOutput | Record<string, KernelOutput | undefined> = kernel({ inputs: refs, attrs, backend: target });
  const wrap = (o: KernelOutput) => Tensor.fromBackendData(target, o.data, o.shape, o.dtype);
  if (isOutput(result)) return wrap(result) as OpResult<K, Tensor>;
  const named: Record<string, Tensor> = {};
  for (const [name, o] of Object.entries(result)) if (o) named[name] = wrap(o);
  return named as OpResult<K, Tensor>;
}

function isOutput(o: object): o is KernelOutput {
  return 'data' in o && 'shape' in o && 'dtype' in o;
}
