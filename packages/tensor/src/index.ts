/**
 * @metal-lora/tensor: tensors, reverse-mode autograd, the op registry and the CPU reference
 * backend. GPU backends (`@metal-lora/metal-kernels`) register kernels under the same op names.
 */
import { registerBackend } from './backend';
import { cpuBackend } from './cpu/backend';
import { registerCpuKernels } from './cpu/kernels';
import { registerGradients } from './ops/gradients';
import { installTensorMethods } from './tensor-methods';

// Wiring kept out of the modules it connects (they would import each other): the chaining methods
// (`x.add(y)`) and the table of derivatives. Importing the package runs it (see `sideEffects`).
installTensorMethods();
registerGradients();
registerBackend('cpu', cpuBackend);
registerCpuKernels();

export { checkpoint, type GradOf, grad, type TensorTree, treeLeaves, valueAndGrad } from './autograd';
export {
  type AutoHint,
  type Backend,
  type CapturedGraph,
  getBackend,
  getKernel,
  hasKernel,
  type KernelArgs,
  type KernelFn,
  type KernelOutput,
  type MemoryInfo,
  registerBackend,
  registerKernel,
  registeredBackends,
  resolveBackend,
  setBackend,
  setBackendSync,
  type TensorRef,
  unregisterKernel,
} from './backend';
export { CpuBackend, cpuBackend } from './cpu/backend';
export { captureGraph } from './graph';
export { gemmABt } from './cpu/matmul';
export {
  type DType,
  DTYPES,
  bytesPerElement,
  float16BitsToFloat32,
  float32ToFloat16Bits,
  fromStorage,
  isFloat,
  type StorageArray,
  toStorage,
  type ValueArray,
} from './dtype';
export { runOp } from './dispatch';
export { isGradEnabled, noGrad, record } from './engine';
export { DTypeError, FormatError, GPUError, KernelNotFoundError, MetalLoRAError, ShapeError, StateError, ValueError } from './errors';
export * from './ops/all';
export { square } from './ops/elementwise';
export type { Operand } from './ops/helpers';
export {
  adamOperands,
  BINARY_OPS,
  type BinaryOp,
  type NamedOutputOp,
  OP_NAMES,
  type OpAttrs,
  type OpInputs,
  type OpName,
  type OpOutputs,
  type OpResult,
  type OpSpec,
  UNARY_OPS,
  type UnaryOp,
} from './ops/op-names';
export {
  checkQuantColumns,
  dequantizeAffine,
  packedWords,
  QUANT_BITS,
  QUANT_GROUP_SIZES,
  type QuantizeOptions,
  type QuantSpec,
  quantizeAffine,
  quantSpec,
  unpackAt,
} from './quantize';
export { dropoutKeep, manualSeed, mix32, nextSeed, randomBits, uniformAt } from './random';
export { keep, tidy } from './scope';
export { broadcastShapes, broadcastStrides, formatShape, MAX_TENSOR_ELEMENTS, reducedShape as reducedShapeOf, type Shape, sizeOf, stridesOf } from './shape';
export { arange, type CreateOptions, full, type NestedArray, ones, rand, randn, type RandomOptions, scalar, Tensor, tensor, zeros } from './tensor';
