import { GPUError, ValueError } from '@metal-lora/tensor';

/** What the library knows about the adapter it runs on. */
export interface AdapterReport {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** Every feature the adapter offers (those the kernels use are also broken out below). */
  features: string[];
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
  /** Subgroup-matrix shapes and component types, where `chromium-experimental-subgroup-matrix` exists. */
  subgroupMatrixConfigs: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[];
  subgroupMinSize: number | undefined;
  subgroupMaxSize: number | undefined;
  /**
   * How the WGSL compiler takes a subgroup matrix's layout in `subgroupMatrixLoad` / `Store`:
   * as a template argument (`<…, row_major>`: Dawn as the `webgpu` package 0.6.2 has it, which
   * warns at every call of the other form) or as a bool argument (older Dawn and browsers). Probed
   * where the device has subgroup matrices; `'template'` elsewhere.
   */
  subgroupMatrixMajorness: 'template' | 'argument';
  /** The WGSL language extensions of the WebGPU implementation (`gpu.wgslLanguageFeatures`), e.g. `subgroup_id`. */
  wgslLanguageFeatures: string[];
  limits: Record<string, number>;
  /** Where the adapter came from: Dawn in Node (`webgpu` package) or the browser's `navigator.gpu`. */
  runtime: 'node-dawn' | 'browser';
  /** A CPU implementation of WebGPU (lavapipe, SwiftShader, a fallback adapter): slower than the CPU backend for small work. */
  software: boolean;
  /**
   * Why a precision path is missing where it is (`shader-f16` off, no subgroup-matrix
   * configurations), and how to get it where that is possible; empty when both are available.
   */
  precisionNotes: string[];
}

/** The adapter's subgroup-matrix configurations as text (`f16->f32 16x16x16, …`); '' where it offers none. */
export function subgroupMatrixConfigsText(report: Pick<AdapterReport, 'subgroupMatrixConfigs'>): string {
  return report.subgroupMatrixConfigs.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`).join(', ');
}

export interface GPUContext {
  /** The WebGPU entry point. Kept referenced: Dawn crashes if its instance is collected while a device lives. */
  gpu: GPU;
  adapter: GPUAdapter;
  device: GPUDevice;
  report: AdapterReport;
}

const OPTIONAL_FEATURES = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix'] as const;

/** Dawn's Node binding (npm `webgpu`), as the Node entry loads it. */
export interface DawnBinding {
  create: (flags: string[]) => GPU;
  globals: object;
}

/**
 * How to load Dawn where there is no `navigator.gpu`: set by the package's Node entry, absent
 * from the browser entry, so that bundlers never see the `webgpu` package.
 */
let dawnLoader: (() => Promise<DawnBinding>) | undefined;
let dawnSkipReason: (() => string | undefined) | undefined;

/**
 * Sets how Dawn is loaded in Node (the Node entry of this package calls it; tests may too), and
 * optionally a cheap check that tells `setBackend('auto')` not to open Dawn on this machine.
 */
export function setDawnLoader(loader: (() => Promise<DawnBinding>) | undefined, skipReason?: () => string | undefined): void {
  dawnLoader = loader;
  dawnSkipReason = skipReason;
}

/** Why `setBackend('auto')` should not open WebGPU here (Node without a GPU device), or undefined to try it. */
export function autoSkipReason(): string | undefined {
  if ((globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu) return undefined;
  return dawnSkipReason?.();
}

/**
 * Dawn's instance, created once and never released: if the garbage collector frees it while a
 * device is alive, Dawn aborts the process (seen with Dawn from webgpu 0.6.2 on Mesa lavapipe).
 */
let dawnInstance: GPU | undefined;
/** The toggles Dawn's instance was created with (a later request cannot change them). */
let instanceToggles: string[] = [];

async function findGPU(toggles: { enabled: string[]; disabled: string[] }): Promise<{ gpu: GPU; runtime: AdapterReport['runtime'] }> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return { gpu: nav.gpu, runtime: 'browser' };
  if (dawnInstance) return { gpu: dawnInstance, runtime: 'node-dawn' };
  if (!dawnLoader) {
    throw new GPUError(
      'requestGPU',
      'no-adapter',
      'WebGPU is not available; expected navigator.gpu (this is the browser build of @metal-lora/metal-kernels, which never loads Dawn), got none',
    );
  }
  let dawn: DawnBinding;
  try {
    dawn = await dawnLoader();
  } catch (error) {
    throw new GPUError(
      'requestGPU',
      'no-adapter',
      `WebGPU is not available; expected navigator.gpu (browser) or the 'webgpu' package (Node), got neither (${(error as Error).message})`,
    );
  }
  Object.assign(globalThis, dawn.globals);
  dawnInstance = dawn.create(dawnFlags(toggles));
  instanceToggles = [...toggles.enabled];
  return { gpu: dawnInstance, runtime: 'node-dawn' };
}

function describeAdapter(gpu: GPU, adapter: GPUAdapter, runtime: AdapterReport['runtime']): AdapterReport {
  const info = adapter.info as GPUAdapterInfo & {
    subgroupMatrixConfigs?: AdapterReport['subgroupMatrixConfigs'];
    subgroupMinSize?: number;
    subgroupMaxSize?: number;
  };
  const limits: Record<string, number> = {};
  for (const key in adapter.limits) {
    const v = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof v === 'number') limits[key] = v;
  }
  const features = [...adapter.features].map(String).sort();
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description: info.description ?? '',
    features,
    shaderF16: features.includes('shader-f16'),
    subgroups: features.includes('subgroups'),
    timestampQuery: features.includes('timestamp-query'),
    subgroupMatrixConfigs: [...(info.subgroupMatrixConfigs ?? [])].map((c) => ({
      componentType: c.componentType,
      resultComponentType: c.resultComponentType,
      M: c.M,
      N: c.N,
      K: c.K,
    })),
    subgroupMinSize: info.subgroupMinSize,
    subgroupMaxSize: info.subgroupMaxSize,
    subgroupMatrixMajorness: 'template',
    wgslLanguageFeatures: [...((gpu as { wgslLanguageFeatures?: Iterable<string> }).wgslLanguageFeatures ?? [])].map(String).sort(),
    limits,
    runtime,
    software:
      Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter) ||
      /llvmpipe|lavapipe|swiftshader|software/i.test(`${info.vendor} ${info.architecture} ${info.device} ${info.description}`),
    precisionNotes: [],
  };
}

export interface RequestGPUOptions {
  powerPreference?: GPUPowerPreference;
  /**
   * Dawn (Node) only: turn off the quantization of GPU timestamps that Dawn applies by default
   * (a browser fingerprinting defence), for benchmarks. Takes effect on the process's first request.
   */
  preciseTimestamps?: boolean;
  /** Features to leave off even where the adapter has them (to test the portable paths). */
  disableFeatures?: string[];
  /**
   * Dawn (Node) only: let Dawn expose its experimental features (toggle `allow_unsafe_apis`), of
   * which the kernels use `chromium-experimental-subgroup-matrix`: without it Dawn reports no
   * subgroup-matrix configurations at all. Takes effect on the process's first request. (Chrome
   * needs its own flag for the same.)
   */
  experimentalFeatures?: boolean;
  /**
   * Dawn (Node) only: let Dawn offer `shader-f16` on NVIDIA's Vulkan driver (toggle
   * `vulkan_enable_f16_on_nvidia`, which Dawn keeps off there; implies `experimentalFeatures`).
   * Takes effect on the process's first request. `METAL_LORA_GPU_EXPERIMENTAL=1` in the
   * environment turns on both for every request (the CLI's and the benchmarks' included).
   */
  f16OnNvidia?: boolean;
}

/** The environment variable that opts every request in to Dawn's experimental features and NVIDIA f16. */
export const GPU_EXPERIMENTAL_ENV = 'METAL_LORA_GPU_EXPERIMENTAL';

/** Extra Dawn toggles for experiments (Node only): `METAL_LORA_DAWN_TOGGLES=disable_robustness,-lazy_clear_resource_on_first_use`. */
export const DAWN_TOGGLES_ENV = 'METAL_LORA_DAWN_TOGGLES';

/** Node's environment where there is one (never in a browser bundle). */
function environment(): Record<string, string | undefined> {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};
}

/**
 * The Dawn toggles a request asks for: `enabled` (`allow_unsafe_apis`, `vulkan_enable_f16_on_nvidia`)
 * and `disabled` (`timestamp_quantization`), from the options and `METAL_LORA_GPU_EXPERIMENTAL`.
 */
export function dawnToggles(options: RequestGPUOptions, env: Record<string, string | undefined> = environment()): { enabled: string[]; disabled: string[] } {
  const value = env[GPU_EXPERIMENTAL_ENV];
  const fromEnv = value !== undefined && value !== '' && value !== '0' && value.toLowerCase() !== 'false';
  const f16 = options.f16OnNvidia === true || fromEnv;
  const enabled = [...(options.experimentalFeatures || f16 ? ['allow_unsafe_apis'] : []), ...(f16 ? ['vulkan_enable_f16_on_nvidia'] : [])];
  const disabled = options.preciseTimestamps ? ['timestamp_quantization'] : [];
  // Any other Dawn toggle, for experiments: a comma list, a leading '-' turns one off.
  for (const raw of (env[DAWN_TOGGLES_ENV] ?? '').split(',')) {
    const name = raw.trim();
    if (!name) continue;
    const [list, toggle] = name.startsWith('-') ? [disabled, name.slice(1)] : [enabled, name];
    if (!/^[a-z0-9_]+$/.test(toggle))
      throw new ValueError('requestGPU', `${DAWN_TOGGLES_ENV} names Dawn toggles`, 'snake_case names, e.g. disable_robustness', raw);
    if (!list.includes(toggle)) list.push(toggle);
  }
  return { enabled, disabled };
}

/** Dawn's instance flags for those toggles (one `enable-dawn-features=` list, one `disable-dawn-features=` list). */
function dawnFlags(toggles: { enabled: string[]; disabled: string[] }): string[] {
  return [
    ...(toggles.disabled.length ? [`disable-dawn-features=${toggles.disabled.join(',')}`] : []),
    ...(toggles.enabled.length ? [`enable-dawn-features=${toggles.enabled.join(',')}`] : []),
  ];
}

/**
 * Why the adapter lacks f16 or subgroup matrices, for `AdapterReport.precisionNotes`: given
 * what it offers, the toggles the Dawn instance was made with, and the features left off.
 */
export function precisionNotes(
  report: Pick<AdapterReport, 'vendor' | 'description' | 'runtime' | 'features'>,
  instanceToggles: readonly string[],
  disabled: readonly string[] = [],
): string[] {
  const notes: string[] = [];
  const dawn = report.runtime === 'node-dawn';
  const nvidia = /nvidia/i.test(`${report.vendor} ${report.description}`);
  const how = `pass { f16OnNvidia: true } to requestGPU / createWebGPUBackend, or set ${GPU_EXPERIMENTAL_ENV}=1, before the first GPU request of the process`;
  if (disabled.includes('shader-f16')) notes.push('shader-f16: left off by disableFeatures; float16 tensors are refused on this backend');
  else if (!report.features.includes('shader-f16')) {
    if (dawn && nvidia && !instanceToggles.includes('vulkan_enable_f16_on_nvidia'))
      notes.push(`shader-f16: off, as Dawn keeps it on NVIDIA's Vulkan driver; ${how}`);
    else notes.push('shader-f16: the adapter does not offer it; float16 tensors are refused on this backend (f32 runs everywhere)');
  }
  const matrices = 'chromium-experimental-subgroup-matrix';
  if (disabled.includes(matrices)) notes.push('subgroup matrices: left off by disableFeatures; GEMMs use the portable kernels');
  else if (!report.features.includes(matrices)) {
    if (dawn && !instanceToggles.includes('allow_unsafe_apis'))
      notes.push(
        `subgroup matrices: Dawn reports none without allow_unsafe_apis; pass { experimentalFeatures: true }, or set ${GPU_EXPERIMENTAL_ENV}=1, before the first GPU request`,
      );
    else if (!dawn)
      notes.push(
        'subgroup matrices: this browser does not offer them (Chrome behind its experimental WebGPU flag; Safari not yet); GEMMs use the portable kernels',
      );
    else notes.push('subgroup matrices: the adapter offers none; GEMMs use the portable kernels');
  }
  return notes;
}

/**
 * Finds a WebGPU adapter (Dawn in Node, `navigator.gpu` in the browser) and opens a device with
 * the optional features the kernels can use and the adapter's largest buffer limits.
 * Throws `GPUError` with reason `no-adapter` when there is none.
 */
export async function requestGPU(options: RequestGPUOptions = {}): Promise<GPUContext> {
  const toggles = dawnToggles(options);
  const { gpu, runtime } = await findGPU(toggles);
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference ?? 'high-performance' });
  if (!adapter) {
    throw new GPUError(
      'requestGPU',
      'no-adapter',
      'no WebGPU adapter found; expected a GPU or a software Vulkan driver (on Linux without a GPU: scripts/install-lavapipe.sh), got none',
    );
  }
  const report = describeAdapter(gpu, adapter, runtime);
  const wanted = OPTIONAL_FEATURES.filter((f) => report.features.includes(f) && !options.disableFeatures?.includes(f));
  const device = await adapter.requestDevice({
    label: 'metal-lora',
    requiredFeatures: wanted as GPUFeatureName[],
    requiredLimits: {
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: adapter.limits.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: adapter.limits.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
    },
  });
  report.features = report.features.filter(
    (f) => !OPTIONAL_FEATURES.includes(f as (typeof OPTIONAL_FEATURES)[number]) || wanted.includes(f as (typeof OPTIONAL_FEATURES)[number]),
  );
  report.shaderF16 = wanted.includes('shader-f16');
  report.subgroups = wanted.includes('subgroups');
  report.timestampQuery = wanted.includes('timestamp-query');
  if (!wanted.includes('chromium-experimental-subgroup-matrix')) report.subgroupMatrixConfigs = [];
  else report.subgroupMatrixMajorness = await subgroupMatrixMajorness(device, report.subgroupMatrixConfigs);
  report.precisionNotes = precisionNotes(report, runtime === 'node-dawn' ? instanceToggles : [], options.disableFeatures);
  const missed = runtime === 'node-dawn' ? toggles.enabled.filter((t) => !instanceToggles.includes(t)) : [];
  if (missed.length > 0)
    report.precisionNotes.push(
      `Dawn toggles ${missed.join(', ')} were asked for after the process's first GPU request, whose instance lacks them; they take effect in a new process`,
    );
  return { gpu, adapter, device, report };
}

/**
 * Which form of `subgroupMatrixLoad` / `Store` the device's WGSL compiler takes (see
 * {@link AdapterReport.subgroupMatrixMajorness}): a small module in the template form, on a
 * configuration with f32 results (the only kind the kernels use), compiles or not.
 */
export async function subgroupMatrixMajorness(device: GPUDevice, configs: AdapterReport['subgroupMatrixConfigs']): Promise<'template' | 'argument'> {
  const c = configs.find((c) => c.resultComponentType === 'f32');
  if (!c) return 'template';
  const code = [
    'enable chromium_experimental_subgroup_matrix;',
    `var<workgroup> m: array<f32, ${c.M * c.N}>;`,
    '@compute @workgroup_size(64) fn main() {',
    `  let x = subgroupMatrixLoad<subgroup_matrix_result<f32, ${c.N}, ${c.M}>, row_major>(&m, 0u, ${c.N}u);`,
    `  subgroupMatrixStore<row_major>(&m, 0u, x, ${c.N}u);`,
    '}',
  ].join('\n');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: 'subgroup-matrix majorness probe', code });
  const [info, error] = await Promise.all([module.getCompilationInfo().catch(() => null), device.popErrorScope()]);
  // Without a compilation log the scope alone decides.
  return error || info?.messages.some((m) => m.type === 'error') ? 'argument' : 'template';
}

/** Whether a WebGPU adapter can be had here (no throw). */
export async function hasWebGPU(): Promise<boolean> {
  try {
    const { device } = await requestGPU();
    device.destroy();
    return true;
  } catch {
    return false;
  }
}
