/**
 * Compiles the subgroup-matrix GEMM (gemm-sgmat.wgsl) for Apple's f32 and f16 8×8×8
 * configurations on whatever adapter is at hand, to validate its WGSL where it cannot run: prints
 * the adapter's subgroup-matrix configurations, the shader module's compilation messages and what
 * pipeline creation says. Not part of the published benchmark.
 *
 *   node probe-sgmat.mjs
 */
import { requestGPU, subgroupMatrixConfigsText } from '@metal-lora/metal-kernels';
import { type SgmatConfig, sgmatConfig, sgmatShader } from '@metal-lora/metal-kernels/internal';

const { device, report } = await requestGPU({ experimentalFeatures: true });
console.log(`${report.vendor} ${report.architecture} ${report.description}; subgroup sizes ${report.subgroupMinSize}..${report.subgroupMaxSize}`);
console.log(`features: ${report.features.join(', ')}`);
console.log(`subgroup-matrix configurations: ${subgroupMatrixConfigsText(report) || 'none'}`);
const variants: [SgmatConfig, 'f32' | 'f16'][] = [
  [sgmatConfig('f32', 8, 8, 8, 32, 4, 4, false), 'f32'],
  [sgmatConfig('f16', 8, 8, 8, 32, 4, 4, false), 'f16'],
];
for (const [cfg, t] of variants) {
  if ((t === 'f16' || cfg.component === 'f16') && !report.shaderF16) {
    console.log(`${cfg.name}: skipped (no shader-f16 on this adapter)`);
    continue;
  }
  const { source } = sgmatShader(cfg, t);
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: cfg.name, code: source });
  const info = await module.getCompilationInfo();
  const messages = info.messages.map((m) => `${m.type} ${m.lineNum}:${m.linePos} ${m.message}`);
  console.log(
    `${cfg.name}: shader module ${messages.some((m) => m.startsWith('error')) ? 'INVALID' : 'valid'}${messages.length ? `\n  ${messages.join('\n  ')}` : ''}`,
  );
  const moduleError = await device.popErrorScope();
  if (moduleError) console.log(`  module error: ${moduleError.message}`);
  try {
    await device.createComputePipelineAsync({
      layout: 'auto',
      compute: { module, entryPoint: 'main', constants: { TRANS_A: 0, TRANS_B: 1, HAS_BIAS: 1, ACCUMULATE: 0 } },
    });
    console.log('  pipeline: created');
  } catch (error) {
    console.log(`  pipeline: ${(error as Error).message.split('\n').slice(0, 3).join(' | ')}`);
  }
}
// A minimal product on the H100's own configuration (i8 -> i32, 16×16×32), with the dims written as
// named constants and as literals: which forms pipeline creation accepts.
const tiny = (dims: [string, string, string]) => `enable chromium_experimental_subgroup_matrix;
const M16: u32 = 16u;
const N16: u32 = 16u;
const K32: u32 = 32u;
@group(0) @binding(0) var<storage, read_write> buf: array<i32>;
@compute @workgroup_size(32)
fn main() {
  let l = subgroupMatrixLoad<subgroup_matrix_left<i8, ${dims[2]}, ${dims[0]}>>(&buf, 0u, false, 32u);
  let r = subgroupMatrixLoad<subgroup_matrix_right<i8, ${dims[1]}, ${dims[2]}>>(&buf, 0u, false, 16u);
  var acc = subgroup_matrix_result<i32, ${dims[1]}, ${dims[0]}>();
  acc = subgroupMatrixMultiplyAccumulate(l, r, acc);
  subgroupMatrixStore(&buf, 0u, acc, false, 16u);
}`;
for (const [label, dims] of [
  ['i8 16x16x32, named constants', ['M16', 'N16', 'K32']],
  ['i8 16x16x32, literals', ['16', '16', '32']],
] as [string, [string, string, string]][]) {
  if (!report.features.includes('chromium-experimental-subgroup-matrix')) break;
  const module = device.createShaderModule({ code: tiny(dims) });
  const info = await module.getCompilationInfo();
  try {
    await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    console.log(`${label}: pipeline created (${info.messages.length} messages)`);
  } catch (error) {
    console.log(`${label}: ${(error as Error).message.split('\n').slice(0, 2).join(' | ')}`);
  }
}
device.destroy();
