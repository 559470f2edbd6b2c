import { adamOperands, type KernelOutput, registerKernel, sizeOf } from '@metal-lora/tensor';
import type { WebGPUBackend } from '../backend';
import adamSource from '../wgsl/adam.wgsl';
import { type Args, buf, enableFor, grid1d, out, shader, typeOf, uniform } from './common';

/**
 * `adamUpdate` (to new buffers) and `adamUpdateInPlace` (into param, m and v, rounded into a copy
 * where given, the step's values read from a schedule tensor where given): one dispatch for the
 * whole step of one parameter (adam.wgsl). Returns param', m' and v', or nothing in place.
 */
function adamStep({ inputs, attrs, backend }: Args<'adamUpdate' | 'adamUpdateInPlace'>, inPlace: boolean): KernelOutput[] {
  const { param, grad, m, v, copy, schedule } = adamOperands(inputs, 'schedule' in attrs && attrs.schedule);
  const t = typeOf(backend, param.dtype, 'adamUpdate');
  const g = typeOf(backend, grad.dtype, 'adamUpdate');
  const h = copy ? typeOf(backend, copy.dtype, 'adamUpdate') : t;
  const n = sizeOf(param.shape);
  const outs = inPlace ? [] : ['param', 'm', 'v'].map((name) => backend.allocate(param.dtype, n, `adamUpdate ${name}`));
  const { lr, beta1, beta2, eps, weightDecay: wd, decoupled, step: stepNumber } = attrs;
  const { workgroups, gridX } = grid1d(n);
  const names = inPlace ? { PO: 'param', MO: 'm', VO: 'v' } : { PO: 'po', MO: 'mo', VO: 'vo' };
  const types = inPlace ? { G: g, COPY: copy ? '1' : '0', SCHEDULE: schedule ? '1' : '0', ...(copy ? { H: h } : {}) } : { COPY: '0', SCHEDULE: '0' };
  const { key, source } = shader('adam', adamSource, { ENABLE: enableFor(t, g, h), T: t, IN_PLACE: inPlace ? '1' : '0', ...names, ...types });
  // The step's values: a schedule tensor's (a captured update reads them as they are at each
  // replay), or one shared uniform, so that each parameter's bind group is the same every step.
  const stepValues = schedule
    ? buf(schedule)
    : backend.sharedUniform(
        'adamUpdate step',
        uniform([{ f32: lr }, { f32: decoupled ? 1 - lr * wd : 1 }, { f32: 1 - beta1 ** stepNumber }, { f32: 1 - beta2 ** stepNumber }]),
      );
  const params = uniform([n, gridX, { f32: beta1 }, { f32: beta2 }, { f32: eps }, { f32: decoupled ? 0 : wd }]);
  backend.dispatch({
    key,
    source,
    buffers: [buf(param), buf(grad), buf(m), buf(v), ...outs.map((o) => o.buffer), stepValues, ...(copy ? [buf(copy)] : [])],
    uniform: params,
    workgroups,
    label: 'adamUpdate',
  });
  return outs.map((o) => out(o, [...param.shape], param.dtype));
}

export function registerOptimizerKernels(): void {
  registerKernel<'adamUpdate', WebGPUBackend>('webgpu', 'adamUpdate', (args) => {
    const [param, m, v] = adamStep(args, false);
    return { param, m, v };
  });
  registerKernel<'adamUpdateInPlace', WebGPUBackend>('webgpu', 'adamUpdateInPlace', (args) => {
    adamStep(args, true);
    return {};
  });
}
