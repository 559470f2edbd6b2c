import { abs, add, cast, div, exp, gelu, log, mul, neg, pow, relu, sigmoid, silu, sqrt, sub, tanh } from './ops/elementwise';
import { reshape, slice, transpose } from './ops/layout';
import { matmul } from './ops/matmul';
import { logSoftmax, max, mean, softmax, sum } from './ops/reduce';
import { Tensor, type TensorOpMethods } from './tensor';

/** Each method is its op with `this` as the first operand (typed by `TensorOpMethods`, so none is missed). */
const methods: TensorOpMethods & ThisType<Tensor> = {
  add(b) {
    return add(this, b);
  },
  sub(b) {
    return sub(this, b);
  },
  mul(b) {
    return mul(this, b);
  },
  div(b) {
    return div(this, b);
  },
  pow(b) {
    return pow(this, b);
  },
  neg() {
    return neg(this);
  },
  exp() {
    return exp(this);
  },
  log() {
    return log(this);
  },
  sqrt() {
    return sqrt(this);
  },
  tanh() {
    return tanh(this);
  },
  sigmoid() {
    return sigmoid(this);
  },
  relu() {
    return relu(this);
  },
  abs() {
    return abs(this);
  },
  silu() {
    return silu(this);
  },
  gelu(options) {
    return gelu(this, options);
  },
  matmul(b, options) {
    return matmul(this, b, options);
  },
  sum(axes, keepDims = false) {
    return sum(this, axes, keepDims);
  },
  mean(axes, keepDims = false) {
    return mean(this, axes, keepDims);
  },
  max(axes, keepDims = false) {
    return max(this, axes, keepDims);
  },
  softmax(axis = -1) {
    return softmax(this, axis);
  },
  logSoftmax(axis = -1) {
    return logSoftmax(this, axis);
  },
  reshape(shape) {
    return reshape(this, shape);
  },
  transpose(perm) {
    return transpose(this, perm);
  },
  slice(begin, end) {
    return slice(this, begin, end);
  },
  cast(dtype) {
    return cast(this, dtype);
  },
};

/**
 * Puts the chaining forms of the ops on `Tensor.prototype` (declared by `TensorOpMethods` in
 * tensor.ts), as class methods are: non-enumerable. The package entry calls it once.
 */
export function installTensorMethods(): void {
  for (const [name, method] of Object.entries(methods)) {
    Object.defineProperty(Tensor.prototype, name, { value: method, writable: true, configurable: true, enumerable: false });
  }
}
