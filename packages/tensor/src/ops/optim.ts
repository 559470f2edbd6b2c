import { runOp } from '../dispatch';
import { isGradEnabled } from '../engine';
import { DTypeError, ShapeError, StateError, ValueError } from '../errors';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';
import { assertFloat, assertSameDType, assertTensor } from './helpers';

export interface AdamUpdateOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Weight decay: decoupled (AdamW: `p·(1 − lr·wd)`) or added to the gradient (Adam's L2). Default 0. */
  weightDecay?: number;
  decoupled?: boolean;
  /** The step being taken, from 1 (bias corrections `1 − β^step`). */
  step: number;
}

/**
 * The values of one Adam step that change from step to step, as `adamUpdateInPlace` reads them
 * from its `schedule` tensor: `[lr, decay, c1, c2]` with `decay = 1 − lr·weightDecay` when the
 * decay is decoupled (1 otherwise) and the bias corrections `c = 1 − β^step`.
 */
export function adamSchedule(options: AdamUpdateOptions): Float32Array {
  const { lr, beta1, beta2, step } = adamAttrs('adamSchedule', options);
  const wd = options.weightDecay ?? 0;
  return Float32Array.of(lr, options.decoupled ? 1 - lr * wd : 1, 1 - beta1 ** step, 1 - beta2 ** step);
}

/**
 * One Adam / AdamW step for one parameter, as a single op (one kernel on the GPU instead of a
 * dozen elementwise ones). With `g = grad (+ wd·param unless decoupled)`:
 * `m' = β1·m + (1 − β1)·g`, `v' = β2·v + (1 − β2)·g²`,
 * `param' = param·(1 − lr·wd if decoupled) − lr·(m' / (1 − β1^step)) / (√(v' / (1 − β2^step)) + eps)`
 * (PyTorch's `Adam` / `AdamW`). All four tensors share one shape and float dtype; returns
 * `[param', m', v']` as new tensors. Not differentiable.
 */
export function adamUpdate(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamUpdateOptions): [Tensor, Tensor, Tensor] {
  const op = 'adamUpdate';
  checkAdamTensors(op, param, grad, m, v);
  const attrs = adamAttrs(op, options);
  const { param: p, m: m2, v: v2 } = runOp(op, [param, grad, m, v], attrs);
  return [p, m2, v2];
}

/**
 * {@link adamUpdate} written into `param`, `m` and `v` themselves (their storage keeps its place:
 * on the GPU the same buffers, so the dispatches that read them are bound the same way every
 * step). Every handle on those storages sees the new values. Refused while gradients are recorded
 * for `param` (an optimizer runs under `noGrad`), and when two of the tensors share storage.
 *
 * Mixed precision: with `copy` (a tensor of param's shape, typically float16, the weights the
 * model computes with), param' rounded to copy's dtype is also written into copy, and `grad` may
 * be in copy's dtype — `param`, `m` and `v` are then the f32 master weights and moments.
 *
 * Captured steps: with `schedule` (a float32 [4] tensor holding `adamSchedule(options)`), the
 * kernel reads lr and the step's corrections from that tensor when it runs, so a captured update
 * (`captureGraph`) replays correctly after `schedule.write(adamSchedule(next options))`;
 * `options.lr` and `options.step` are then only checked.
 */
export function adamUpdateInPlace(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamUpdateOptions, copy?: Tensor, schedule?: Tensor): void {
  const op = 'adamUpdateInPlace';
  checkAdamTensors(op, param, grad, m, v, copy);
  const attrs = adamAttrs(op, options);
  if (isGradEnabled() && (param.requiresGrad || copy?.requiresGrad))
    throw new StateError(op, 'param requires grad and gradients are being recorded; expected the update under noGrad(), got it outside');
  if (schedule !== undefined) {
    assertTensor(op, schedule, 'schedule');
    if (schedule.dtype !== 'float32') throw new DTypeError(op, 'schedule must be float32', 'float32', schedule.dtype);
    if (schedule.shape.join() !== '4') throw new ShapeError(op, 'schedule holds [lr, decay, c1, c2]', '[4]', formatShape(schedule.shape));
  }
  const tensors = [param, grad, m, v, ...(copy ? [copy] : []), ...(schedule ? [schedule] : [])];
  const names = ['param', 'grad', 'm', 'v', ...(copy ? ['copy'] : []), ...(schedule ? ['schedule'] : [])];
  const storages = tensors.map((t) => t.ref(op).data);
  if (new Set(storages).size !== storages.length)
    throw new ValueError(
      op,
      `${names.slice(0, -1).join(', ')} and ${names.at(-1)} must not share storage`,
      `${['four', 'five', 'six'][tensors.length - 4]} distinct tensors`,
      'two handles on one storage',
    );
  runOp(op, tensors, { ...attrs, schedule: schedule !== undefined });
}

/** The op's attributes from `options`, checked. */
function adamAttrs(op: string, options: AdamUpdateOptions) {
  const { lr, beta1, beta2, eps, step } = options;
  const weightDecay = options.weightDecay ?? 0;
  const finite = (name: string, value: number, ok: boolean, expected: string) => {
    if (!(typeof value === 'number' && Number.isFinite(value) && ok)) throw new ValueError(op, `${name} is out of range`, expected, String(value));
  };
  finite('lr', lr, lr >= 0, 'a finite number ≥ 0');
  finite('beta1', beta1, beta1 >= 0 && beta1 < 1, 'a number in [0, 1)');
  finite('beta2', beta2, beta2 >= 0 && beta2 < 1, 'a number in [0, 1)');
  finite('eps', eps, eps >= 0, 'a finite number ≥ 0');
  finite('weightDecay', weightDecay, weightDecay >= 0, 'a finite number ≥ 0');
  finite('step', step, Number.isInteger(step) && step >= 1, 'an integer ≥ 1');
  return { lr, beta1, beta2, eps, weightDecay, decoupled: options.decoupled ?? false, step };
}

function checkAdamTensors(op: string, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, copy?: Tensor): void {
  const tensors = copy ? [param, grad, m, v, copy] : [param, grad, m, v];
  const names = ['param', 'grad', 'm', 'v', 'copy'];
  tensors.forEach((t, i) => {
    assertTensor(op, t, names[i]);
    if (t.shape.join() !== param.shape.join())
      throw new ShapeError(op, `${names[i]} differs in shape from param`, formatShape(param.shape), formatShape(t.shape));
  });
  assertSameDType(op, [param, m, v], ['param', 'm', 'v']);
  assertFloat(op, param, 'param');
  if (copy) {
    assertFloat(op, copy, 'copy');
    if (grad.dtype !== param.dtype && grad.dtype !== copy.dtype)
      throw new DTypeError(op, "grad must be in param's or copy's dtype", `${param.dtype} or ${copy.dtype}`, grad.dtype);
  } else assertSameDType(op, [param, grad], ['param', 'grad']);
}
