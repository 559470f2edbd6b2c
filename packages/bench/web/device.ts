/**
 * What both pages say about the WebGPU adapter on top: the device, the precision path the
 * library's kernels take on it, and a warning when the adapter is a software renderer.
 */
import { type AdapterReport, subgroupMatrixConfigsText, subgroupMatrixPath, webgpuBackend } from '@metal-lora/metal-kernels';
import * as T from '@metal-lora/tensor';

/**
 * Which precision path the kernels take here (`gemm`: the f32 products' path, from
 * `subgroupMatrixPath`), and what else the adapter offers.
 */
export function precisionPath(r: AdapterReport, gemm: string): string {
  const offers = [
    r.shaderF16 ? 'shader-f16 (f16 storage)' : 'no shader-f16',
    r.subgroupMatrixConfigs.length ? `subgroup matrices (${subgroupMatrixConfigsText(r)})` : 'no subgroup matrices',
  ];
  return `f32, ${gemmWords(gemm)}; the adapter also offers ${offers.join(', ')}`;
}

/** A GEMM path (`subgroupMatrixPath`) in the pages' words. */
export function gemmWords(path: string): string {
  return path === 'portable' ? 'portable kernels' : `big products on subgroup matrices (${path})`;
}

export const SOFTWARE_WARNING =
  'This adapter is a software renderer (it runs on the CPU): its times say nothing about a GPU. Open the page in Safari or Chrome on a machine whose GPU is enabled for WebGPU to measure it.';

/**
 * Starts the WebGPU backend, makes it current, and fills `#summary` (device and path) and
 * `#software` (shown on a software adapter). Returns the report, the device's name, the f32 path
 * and the path of f16 products (`subgroupMatrixPath`).
 */
export async function startWebGPU(): Promise<{ report: AdapterReport; device: string; path: string; f16Gemm: string; limits: GPUSupportedLimits }> {
  const backend = await webgpuBackend();
  T.setBackendSync(backend);
  const report = backend.context.report;
  const device = `${report.vendor} ${report.device || report.architecture} ${report.description}`.replace(/\s+/g, ' ').trim() || 'unnamed adapter';
  const path = precisionPath(report, subgroupMatrixPath(backend, 'float32'));
  const summary = document.getElementById('summary')!;
  summary.textContent = `Device: ${device}. Path: ${path}.`;
  if (report.software) {
    const warning = document.getElementById('software')!;
    warning.textContent = SOFTWARE_WARNING;
    warning.style.display = 'block';
  }
  return { report, device, path, f16Gemm: subgroupMatrixPath(backend, 'float16'), limits: backend.context.device.limits };
}
