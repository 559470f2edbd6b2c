/**
 * The throughput of subgroup-matrix multiply-accumulate itself, apart from any GEMM: each subgroup
 * keeps RM × RN f32 result tiles and runs `iters` steps of RM·RN multiply-accumulates, its operands
 * taken (reg) from registers loaded once, (wg) from workgroup memory every step, or (global) from a
 * small storage buffer every step (cache-resident). Where `reg` is far below the matrix units'
 * rate, no GEMM through these builtins can be fast on this adapter; where `reg` is fast and `wg`
 * slow, the loads are what to fix. Not part of the published benchmark.
 *
 *   node probe-mma.mjs [--iters 4096]
 */
import { parseArgs } from 'node:util';
import { createWebGPUBackend } from '@metal-lora/metal-kernels';
import { timeKernel, useClockWarmer } from './timing';

type Mode = 'reg' | 'wg' | 'global';

function shader(mode: Mode, component: 'f16' | 'f32', sm: number, sn: number, sk: number, rm: number, rn: number, sg: number): string {
  const left = `subgroup_matrix_left<${component}, ${sk}, ${sm}>`;
  const right = `subgroup_matrix_right<${component}, ${sn}, ${sk}>`;
  const result = `subgroup_matrix_result<f32, ${sn}, ${sm}>`;
  // Operand j of a step: a tile of 16 × 16 elements at offset `(j + step) % 8`·256, so a compiler
  // cannot hoist the loads of wg and global out of the loop.
  const at = (j: string) => `((${j} + s) % 8u) * 256u`;
  const loadFrom = (src: string) => `
      for (var i = 0u; i < RM; i++) { l[i] = subgroupMatrixLoad<${left}>(&${src}, ${at('i')}, false, ${sk}u); }
      for (var j = 0u; j < RN; j++) { r[j] = subgroupMatrixLoad<${right}>(&${src}, ${at('j + 3u')}, false, ${sn}u); }`;
  return `enable chromium_experimental_subgroup_matrix;
${component === 'f16' ? 'enable f16;' : ''}
diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);
const RM: u32 = ${rm}u;
const RN: u32 = ${rn}u;
struct Params { iters: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<storage, read> a: array<${component}>;
@group(0) @binding(1) var<storage, read_write> c: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;
var<workgroup> w: array<${component}, 2048>;
@compute @workgroup_size(${4 * sg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32, @builtin(subgroup_id) sg: u32) {
  for (var e = t; e < 2048u; e += ${4 * sg}u) { w[e] = a[e]; }
  workgroupBarrier();
  var acc: array<${result}, RM * RN>;
  for (var i = 0u; i < RM * RN; i++) { acc[i] = ${result}(); }
  var l: array<${left}, RM>;
  var r: array<${right}, RN>;
  let s0 = 0u;
  {
    let s = s0;${loadFrom('w')}
  }
  for (var s = 0u; s < p.iters; s++) {${mode === 'wg' ? loadFrom('w') : mode === 'global' ? loadFrom('a') : ''}
    for (var i = 0u; i < RM; i++) {
      for (var j = 0u; j < RN; j++) { acc[i * RN + j] = subgroupMatrixMultiplyAccumulate(l[i], r[j], acc[i * RN + j]); }
    }
  }
  let base = ((wid.x * 4u + sg) * RM * RN) * ${sm * sn}u;
  for (var i = 0u; i < RM * RN; i++) { subgroupMatrixStore(&c, base + i * ${sm * sn}u, acc[i], false, ${sn}u); }
}
`;
}

const { values } = parseArgs({ args: process.argv.slice(2), options: { iters: { type: 'string', default: '4096' } }, strict: true });
const iters = Number(values.iters);
const backend = await createWebGPUBackend({ f16OnNvidia: true, preciseTimestamps: true });
const report = backend.context.report;
const sg = report.subgroupMinSize ?? 32;
console.log(`${report.vendor} ${report.architecture} ${report.description}; subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`);
await useClockWarmer(backend);
const groups = 1024;
const a = backend.acquire(2048 * 4, 'mma probe operands');
// Small values (about 1/1024, as halves and floats) so the sums stay finite.
const halves = new Uint16Array(2048).map((_, i) => 0x1400 + (i % 64));
const floats = new Float32Array(2048).map((_, i) => (1 + (i % 64)) / 1024);
const configs = report.subgroupMatrixConfigs.filter((c) => (c.componentType === 'f16' || c.componentType === 'f32') && c.resultComponentType === 'f32');
if (configs.length === 0) console.log('no float configuration with an f32 result on this adapter');
for (const cfg of configs) {
  const component = cfg.componentType as 'f16' | 'f32';
  backend.device.queue.writeBuffer(a, 0, component === 'f16' ? halves : floats);
  for (const [rm, rn] of [
    [1, 1],
    [2, 2],
    [4, 2],
    [4, 4],
  ]) {
    const c = backend.acquire(groups * 4 * rm * rn * cfg.M * cfg.N * 4, 'mma probe results');
    for (const mode of ['reg', 'wg', 'global'] as Mode[]) {
      const source = shader(mode, component, cfg.M, cfg.N, cfg.K, rm, rn, sg);
      const run = () =>
        backend.dispatch({
          key: `mma-probe-${mode}-${component}-${cfg.M}x${cfg.N}x${cfg.K}-${rm}x${rn}`,
          source,
          buffers: [a, c],
          uniform: new Uint32Array([iters, 0, 0, 0]).buffer,
          workgroups: [groups, 1, 1],
          label: 'mma probe',
        });
      try {
        const { ms } = await timeKernel(backend, run);
        const flops = groups * 4 * iters * rm * rn * 2 * cfg.M * cfg.N * cfg.K;
        console.log(
          `${component}->f32 ${cfg.M}x${cfg.N}x${cfg.K} ${rm}x${rn} tiles/subgroup ${mode.padEnd(6)} ${ms.toFixed(3)} ms ${(flops / ms / 1e9).toFixed(1)} TFLOP/s`,
        );
      } catch (error) {
        console.log(`${component} ${cfg.M}x${cfg.N}x${cfg.K} ${rm}x${rn} ${mode}: FAILED ${(error as Error).message.split('\n')[0]}`);
      }
    }
    backend.release(c);
  }
}
// The portable f32 rate for scale: one fma chain per lane would be the spin kernel; the GEMM benches give the rest.
process.exit(0);
