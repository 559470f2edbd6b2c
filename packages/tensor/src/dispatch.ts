import { type Backend, getKernel } from './backend';
import { ValueError } from './errors';
import type { OpAttrs, OpName } from './ops/op-names';
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

/** Dispatches `op` to the inputs' backend and wraps the kernel's outputs as tensors. */
export function runOp<K extends OpName>(op: K, inputs: readonly Tensor[], attrs: OpAttrs[K], backend?: Backend): Tensor[] {
  const target = backend ?? commonBackend(op, inputs);
  const kernel = getKernel(target.name, op);
  const outputs = kernel({ inputs: inputs.map((t) => t.ref(op)), attrs, backend: target });
  return outputs.map((o) => Tensor.fromBackendData(target, o.data, o.shape, o.dtype));
}
