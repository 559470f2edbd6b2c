import { type Backend, type CapturedGraph, type DType, DTypeError, GPUError, type MemoryInfo, type StorageArray, type TensorRef } from '@metal-lora/tensor';
import type { GPUContext } from './device';
import type { GemmOverrides } from './gemm/types';
import { DispatchGraph } from './graph';

/** A tensor's data on the GPU. `bytes` is the tensor's size; `buffer.size` may be larger (pool class). */
export interface GpuData {
  buffer: GPUBuffer;
  bytes: number;
}

/** WGSL element type of each dtype the GPU stores (bool as u32: WGSL storage has no 8-bit types). */
export function wgslType(dtype: DType, op = 'webgpu'): 'f32' | 'f16' | 'i32' | 'u32' {
  switch (dtype) {
    case 'float32':
      return 'f32';
    case 'float16':
      return 'f16';
    case 'int32':
      return 'i32';
    case 'bool':
      return 'u32';
    default:
      throw new DTypeError(op, 'the webgpu backend has no float64 (WGSL has no f64)', 'float32 | float16 | int32 | bool', dtype);
  }
}

export function gpuBytesPerElement(dtype: DType): number {
  return dtype === 'float16' ? 2 : 4;
}

/** Pool size classes: exact up to 4 KiB (256-byte steps), then steps of 1/8 of the power of two (≤ 12.5% slack). */
export function sizeClass(bytes: number): number {
  const b = Math.max(bytes, 4);
  if (b <= 4096) return Math.ceil(b / 256) * 256;
  const step = 2 ** (Math.floor(Math.log2(b)) - 3);
  return Math.ceil(b / step) * step;
}

// A batch is submitted every 128 dispatches, so the GPU starts on a training step while the host
// still records the rest of it; a timed region (timeRegion) goes in batches of up to 1024, so
// its small kernels run back to back instead of waiting for the host (4096 uniform slots of 256 bytes).
const UNIFORM_ARENA_BYTES = 1024 * 1024;
const PASSES_PER_SUBMIT = 128;
const MAX_PASSES_PER_SUBMIT = 1024;
// Uploads up to this size are staged in an arena and copied in the batch's own encoder, so they
// need no submit of their own (each scalar operand, RoPE table and mask of a training step is one).
const UPLOAD_ARENA_BYTES = 8 * 1024 * 1024;
const UPLOAD_INLINE_MAX = 1024 * 1024;
// The idle pool's floor when no cap is set: it keeps at least this much, and up to the largest
// live size seen, so a loop whose working set recurs (a training step) creates few buffers once
// its first steps have filled the pool, while idle memory stays bounded by what the loop needed.
const AUTO_POOL_FLOOR = 512 * 1024 * 1024;
// Bound of the bind-group cache (a loop's distinct dispatches are far fewer).
const MAX_CACHED_BIND_GROUPS = 65536;

/** How a shader's WGSL declares one binding of group 0. */
type BindingKind = 'uniform' | 'storage' | 'read-only-storage';

/** The bindings of group 0 that `source` declares, by index (comments ignored; either attribute order). */
function declaredBindings(source: string): Map<number, BindingKind> {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  const out = new Map<number, BindingKind>();
  const declaration =
    /(?:@group\(\s*(\d+)\s*\)\s*@binding\(\s*(\d+)\s*\)|@binding\(\s*(\d+)\s*\)\s*@group\(\s*(\d+)\s*\))\s*var<\s*(uniform|storage)\s*(?:,\s*(read_write|read)\s*)?>/g;
  for (const m of code.matchAll(declaration)) {
    const [group, binding] = m[1] !== undefined ? [m[1], m[2]] : [m[4], m[3]];
    if (group !== '0') continue;
    out.set(Number(binding), m[5] === 'uniform' ? 'uniform' : m[6] === 'read_write' ? 'storage' : 'read-only-storage');
  }
  return out;
}

export interface DispatchSpec {
  /** Pipeline cache key: kernel name plus whatever specialization the source text carries. */
  key: string;
  source: string;
  constants?: Record<string, number>;
  /**
   * Bound in order at @binding(0..n-1) of group 0; the uniform (if any) follows them. `null` skips
   * a binding this variant of the shader does not declare.
   */
  buffers: (GPUBuffer | null)[];
  uniform?: ArrayBuffer;
  workgroups: [number, number, number];
  label?: string;
}

/**
 * The WebGPU backend: pooled buffers with exact live/peak accounting, a pipeline cache, and
 * batched command submission (dispatches accumulate in one encoder and are submitted before any
 * read, upload, or every few hundred passes).
 */
export class WebGPUBackend implements Backend {
  readonly name = 'webgpu';
  readonly device: GPUDevice;
  readonly context: GPUContext;
  /** A software adapter (lavapipe, SwiftShader): `setBackend('auto')` prefers the CPU over it. */
  get software(): boolean {
    return this.context.report.software;
  }
  private readonly pool = new Map<number, GPUBuffer[]>();
  /** Idle pooled buffers, least recently released first (Map keeps insertion order). */
  private readonly idle = new Map<GPUBuffer, number>();
  private pooledBytes = 0;
  private live = 0;
  private peak = 0;
  private buffers = 0;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  /**
   * Explicit layouts by kernel key and bound slots: the dispatch's uniform is bound with a
   * dynamic offset into the batch's arena, so a bind group depends on the buffers alone and is
   * reused whatever the uniform's contents (shapes, cache lengths, step numbers).
   */
  private readonly layouts = new Map<string, { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout }>();
  private readonly modules = new Map<string, GPUShaderModule>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private passes = 0;
  private passesPerSubmit = PASSES_PER_SUBMIT;
  /**
   * Record consecutive dispatches into one compute pass (the default) instead of one pass each.
   * Beginning and ending a pass per dispatch is host time that a training step of thousands of
   * dispatches feels (RESULTS.md, "One compute pass for consecutive dispatches"); a microbenchmark of one trivial
   * kernel can prefer separate passes on some GPUs, so benchmarks may turn it off.
   */
  sharePasses = true;
  readonly arena: GPUBuffer;
  private arenaData = new Uint8Array(UNIFORM_ARENA_BYTES);
  private arenaUsed = 0;
  readonly uploads: GPUBuffer;
  private readonly uploadData = new Uint8Array(UPLOAD_ARENA_BYTES);
  private uploadUsed = 0;
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  /** The graph being captured, if any; and the live graphs' buffers, which are never pooled while their graph lives. */
  private capturing: DispatchGraph | null = null;
  private readonly graphOf = new Map<GPUBuffer, DispatchGraph>();
  private lostReason: string | null = null;
  private deviceError: GPUError | null = null;
  /**
   * Upper bound of idle pooled bytes kept for reuse; `null` (the default) keeps up to the largest
   * live size seen so far, and at least 512 MiB. Beyond it the least recently released idle
   * buffers are destroyed to make room, so the buffers a loop keeps reusing (workspaces,
   * per-step outputs) stay pooled however much else passed through the pool before.
   */
  maxPooledBytes: number | null = null;
  private highWater = 0;
  /**
   * Whether big products use the subgroup-matrix GEMM (gemm-sgmat.wgsl) where the adapter offers
   * a float configuration (Apple GPUs: f32 and f16 8×8×8; NVIDIA with `f16OnNvidia`: f16→f32
   * 16×16×16). `'auto'` (the default) uses it where its form was measured faster than the
   * portable kernels: the 16-wide configurations, whose interior tiles prefetch (an f16 GEMM
   * 3.9× the portable one on the H200; RESULTS.md, "Subgroup matrices"). Apple's 8 × 8 ones stay
   * off until measured on Apple hardware; `true` forces them on, `false` keeps every product on
   * the portable kernels. `subgroupMatrixPath` says what a dtype gets.
   */
  subgroupMatrix: boolean | 'auto' = 'auto';
  /**
   * Choices forced on this backend's GEMM family (tests and benchmarks): `gemm` replaces the
   * selector's config for every product, `loraPlan` loraLinear's plan where it applies. Empty by default.
   */
  overrides: GemmOverrides = {};
  /**
   * Host-side work counted since the backend was made (benchmarks report them per training step):
   * dispatches recorded, command buffers submitted, GPU buffers and bind groups created, synchronous
   * read-backs; `replayed` counts the dispatches of those that captured graphs sent again (also in `dispatches`).
   */
  readonly stats = { dispatches: 0, submits: 0, buffersCreated: 0, bindGroupsCreated: 0, reads: 0, replayed: 0 };

  constructor(context: GPUContext) {
    this.context = context;
    this.device = context.device;
    this.arena = this.device.createBuffer({
      label: 'metal-lora uniform arena',
      size: UNIFORM_ARENA_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.uploads = this.device.createBuffer({
      label: 'metal-lora upload arena',
      size: UPLOAD_ARENA_BYTES,
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    this.device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
    });
    this.device.addEventListener('uncapturederror', (event) => {
      const error = (event as GPUUncapturedErrorEvent).error;
      const oom = error.constructor?.name === 'GPUOutOfMemoryError';
      this.deviceError ??= new GPUError(
        'webgpu',
        oom ? 'out-of-memory' : 'validation',
        `${oom ? 'the GPU ran out of memory' : 'the GPU reported an error'}: ${error.message}`,
      );
    });
  }

  /** Throws the first asynchronous device error (lost device, out of memory, validation). */
  checkHealth(op: string): void {
    if (this.lostReason)
      throw new GPUError(op, 'device-lost', `the GPU device was lost (${this.lostReason}); expected a live device, got a lost one: create a new backend`);
    if (this.deviceError) {
      const e = this.deviceError;
      this.deviceError = null;
      throw e;
    }
  }

  // ---- buffers -------------------------------------------------------------------------

  /** A storage buffer of at least `bytes` bytes (pooled). Counted as live until `release`. */
  acquire(bytes: number, label: string): GPUBuffer {
    this.checkHealth(label);
    const size = sizeClass(bytes);
    const max = this.device.limits.maxStorageBufferBindingSize;
    if (size > max) {
      throw new GPUError(
        label,
        'out-of-memory',
        `buffer of ${bytes} bytes exceeds the device's largest storage binding; expected at most ${max} bytes, got ${bytes}`,
      );
    }
    // A capture first takes again what it released itself (those buffers are already the graph's).
    let buffer = this.capturing?.spare.get(size)?.pop();
    if (!buffer) {
      // The idle buffer made first, not the one released last: which buffer an op gets then depends
      // only on which are idle, not on the order they were released in, so a training step binds
      // the same buffers as the step before and its bind groups come from the cache.
      // (Each size's idle list is kept in descending order of creation.)
      buffer = this.pool.get(size)?.pop();
      if (buffer) {
        this.pooledBytes -= size;
        this.idle.delete(buffer);
      } else {
        buffer = this.device.createBuffer({ label, size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
        this.stats.buffersCreated++;
      }
      if (this.capturing) {
        this.capturing.acquired.add(buffer);
        this.graphOf.set(buffer, this.capturing);
      }
    }
    this.live += size;
    this.buffers++;
    if (this.live > this.peak) this.peak = this.live;
    if (this.live > this.highWater) this.highWater = this.live;
    return buffer;
  }

  /** The idle pool's cap in bytes now (`maxPooledBytes`, or the automatic one). */
  get poolCap(): number {
    return this.maxPooledBytes ?? Math.max(AUTO_POOL_FLOOR, this.highWater);
  }

  release(buffer: GPUBuffer): void {
    // A graph's buffer stays out of the pool (and counted live) until the graph is disposed:
    // a replay writes it again.
    const graph = this.graphOf.get(buffer);
    if (graph && graph === this.capturing) {
      let list = graph.spare.get(buffer.size);
      if (!list) graph.spare.set(buffer.size, (list = []));
      list.push(buffer);
      this.live -= buffer.size;
      this.buffers--;
      return;
    }
    if (graph) {
      graph.held.push(buffer);
      return;
    }
    const size = buffer.size;
    this.live -= size;
    this.buffers--;
    const cap = this.poolCap;
    if (size > cap) {
      this.beforeDestroying();
      buffer.destroy();
      return;
    }
    if (this.pooledBytes + size > cap) this.evict(this.pooledBytes + size - cap);
    let list = this.pool.get(size);
    if (!list) this.pool.set(size, (list = []));
    // Insert keeping the list in descending order of creation (acquire pops the oldest).
    const id = this.idOf(buffer);
    let lo = 0;
    let hi = list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.idOf(list[mid]) > id) lo = mid + 1;
      else hi = mid;
    }
    list.splice(lo, 0, buffer);
    this.idle.set(buffer, size);
    this.pooledBytes += size;
  }

  /**
   * Destroys idle pooled buffers, least recently released first, until at least `bytes` are
   * freed. (Destroying the buffer being released instead made a loop whose workspace size was not
   * pooled create, clear and destroy a buffer, and submit, every iteration: split-K GEMMs became
   * bound by host time; RESULTS.md, "the pool fix".)
   */
  private evict(bytes: number): void {
    this.beforeDestroying();
    let freed = 0;
    for (const [buffer, size] of this.idle) {
      if (freed >= bytes) break;
      this.idle.delete(buffer);
      const list = this.pool.get(size)!;
      list.splice(list.indexOf(buffer), 1);
      buffer.destroy();
      this.pooledBytes -= size;
      freed += size;
    }
  }

  /** Destroys every idle pooled buffer. */
  releasePool(): void {
    this.beforeDestroying();
    for (const list of this.pool.values()) for (const b of list) b.destroy();
    this.pool.clear();
    this.idle.clear();
    this.pooledBytes = 0;
  }

  /**
   * Fill every output buffer with NaN bits before a kernel writes it (tests): a kernel that skips
   * an element then shows NaN instead of a stale value from the pool.
   */
  poisonOutputs = false;

  /** Allocates an output tensor's buffer. */
  allocate(dtype: DType, size: number, label: string): GpuData {
    const bytes = size * gpuBytesPerElement(dtype);
    const buffer = this.acquire(bytes, label);
    if (this.poisonOutputs && bytes > 0) {
      this.flush();
      this.device.queue.writeBuffer(buffer, 0, new Uint32Array(Math.ceil(bytes / 4)).fill(0x7fc07fc0));
    }
    return { buffer, bytes };
  }

  upload(values: StorageArray, dtype: DType): GpuData {
    wgslType(dtype, 'upload');
    const raw = gpuLayout(values, dtype);
    const data = { buffer: this.acquire(raw.byteLength, `tensor ${dtype}[${values.length}]`), bytes: raw.byteLength };
    this.writeBytes(data.buffer, raw);
    return data;
  }

  /** Overwrites a tensor's buffer with `values` (the whole tensor), in order with the batch. */
  write(data: unknown, values: StorageArray, dtype: DType): void {
    const { buffer, bytes } = data as GpuData;
    this.checkHealth('write');
    const raw = gpuLayout(values, dtype);
    if (raw.byteLength !== bytes) throw new GPUError('write', 'internal', `the values do not fill the tensor; expected ${bytes} bytes, got ${raw.byteLength}`);
    this.writeBytes(buffer, raw);
  }

  /** Writes `raw` at the start of `buffer` in order with the batch: staged, or (large) after submitting what came before. */
  private writeBytes(buffer: GPUBuffer, raw: ArrayBufferView): void {
    if (raw.byteLength === 0) return;
    const padded = raw.byteLength % 4 === 0 ? raw : padTo4(raw);
    const bytes = new Uint8Array(padded.buffer, padded.byteOffset, padded.byteLength);
    if (bytes.byteLength <= UPLOAD_INLINE_MAX) {
      this.stagedWrite(buffer, bytes);
      return;
    }
    // The buffer may still be read by commands not yet submitted: submit them first.
    this.flush();
    this.capturing?.current.writes.push({ buffer, data: bytes.slice() });
    this.device.queue.writeBuffer(buffer, 0, bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength);
  }

  /**
   * Writes `bytes` (a multiple of 4, at most 1 MiB) into `buffer` in order with the batch: staged in
   * the upload arena (written just before the batch is submitted) and copied by the batch's own
   * encoder, so commands recorded earlier still see the buffer's old contents.
   */
  private stagedWrite(buffer: GPUBuffer, bytes: Uint8Array): void {
    if (this.uploadUsed + bytes.byteLength > UPLOAD_ARENA_BYTES) this.flush();
    this.uploadData.set(bytes, this.uploadUsed);
    this.encode().copyBufferToBuffer(this.uploads, this.uploadUsed, buffer, 0, bytes.byteLength);
    this.capturing?.current.commands.push({ uploadOffset: this.uploadUsed, dst: buffer, size: bytes.byteLength });
    this.uploadUsed += bytes.byteLength;
  }

  private readonly sharedUniforms = new Map<string, { buffer: GPUBuffer; contents: string }>();

  /**
   * One long-lived uniform buffer per `name`, holding `data` from here on in the batch's order
   * (rewritten only when the contents change). For values that change every step but are shared
   * by many dispatches (an optimizer's step size): written once per step instead of into every
   * dispatch's uniform. Pass it in `DispatchSpec.buffers`.
   */
  sharedUniform(name: string, data: ArrayBuffer): GPUBuffer {
    const size = Math.ceil(data.byteLength / 16) * 16;
    let entry = this.sharedUniforms.get(name);
    if (entry && entry.buffer.size !== size)
      throw new GPUError(name, 'internal', `a shared uniform keeps its size; expected ${entry.buffer.size} bytes, got ${size}`);
    entry ??= { buffer: this.device.createBuffer({ label: name, size, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }), contents: '' };
    this.sharedUniforms.set(name, entry);
    const padded = new Uint8Array(size);
    padded.set(new Uint8Array(data));
    const contents = contentsKey(padded.buffer);
    if (entry.contents !== contents) {
      this.stagedWrite(entry.buffer, padded);
      entry.contents = contents;
    }
    return entry.buffer;
  }

  async read(data: unknown, dtype: DType, size: number): Promise<StorageArray> {
    const { buffer, bytes } = data as GpuData;
    this.checkHealth('read');
    this.refuseWhileCapturing('read', 'read data back');
    const copyBytes = Math.ceil(bytes / 4) * 4;
    if (copyBytes === 0) return emptyOf(dtype);
    this.stats.reads++;
    const staging = this.device.createBuffer({ label: 'read staging', size: copyBytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.encode().copyBufferToBuffer(buffer, 0, staging, 0, copyBytes);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (error) {
      this.checkHealth('read');
      throw new GPUError('read', 'internal', `mapping the read-back buffer failed: ${(error as Error).message}`);
    }
    const copy = staging.getMappedRange().slice(0, copyBytes);
    staging.unmap();
    staging.destroy();
    this.checkHealth('read');
    switch (dtype) {
      case 'float32':
        return new Float32Array(copy, 0, size);
      case 'float16':
        return new Uint16Array(copy, 0, size);
      case 'int32':
        return new Int32Array(copy, 0, size);
      default:
        return Uint8Array.from(new Uint32Array(copy, 0, size));
    }
  }

  free(data: unknown): void {
    this.release((data as GpuData).buffer);
  }

  memory(): MemoryInfo & { pooledBytes: number } {
    return { liveBytes: this.live, peakBytes: this.peak, liveBuffers: this.buffers, pooledBytes: this.pooledBytes };
  }

  resetPeak(): void {
    this.peak = this.live;
  }

  // ---- pipelines and dispatch ----------------------------------------------------------

  /**
   * The pipeline of `key`'s shader with `constants`, cached. With `slots` (see {@link slotsOf}) its
   * layout is explicit, the dispatch uniform's binding taking a dynamic offset; without, 'auto'.
   */
  pipeline(key: string, source: string, constants: Record<string, number> = {}, slots?: string): GPUComputePipeline {
    const fullKey = `${key}|${JSON.stringify(constants)}|${slots ?? 'auto'}`;
    let pipeline = this.pipelines.get(fullKey);
    if (pipeline) return pipeline;
    let module = this.modules.get(key);
    if (!module) {
      module = this.device.createShaderModule({ label: key, code: source });
      this.modules.set(key, module);
    }
    const layout = slots === undefined ? 'auto' : this.layout(key, source, slots).pipeline;
    pipeline = this.device.createComputePipeline({ label: fullKey, layout, compute: { module, entryPoint: 'main', constants } });
    this.pipelines.set(fullKey, pipeline);
    return pipeline;
  }

  /**
   * The explicit layout of `key`'s shader for the bound slots `slots`: each bound buffer as its
   * WGSL declares it, and a last `u` slot (the dispatch's uniform) with a dynamic offset.
   */
  private layout(key: string, source: string, slots: string): { group: GPUBindGroupLayout; pipeline: GPUPipelineLayout } {
    const layoutKey = `${key}|${slots}`;
    let layout = this.layouts.get(layoutKey);
    if (layout) return layout;
    const declared = declaredBindings(source);
    const entries: GPUBindGroupLayoutEntry[] = [];
    for (let binding = 0; binding < slots.length; binding++) {
      const slot = slots[binding];
      if (slot === '-') continue;
      const kind = declared.get(binding);
      if (!kind)
        throw new GPUError(
          key,
          'internal',
          `binding ${binding} is bound but the shader declares none there; expected a @group(0) @binding(${binding}) var, got none`,
        );
      entries.push({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: kind, hasDynamicOffset: slot === 'u' } });
    }
    const group = this.device.createBindGroupLayout({ label: layoutKey, entries });
    layout = { group, pipeline: this.device.createPipelineLayout({ label: layoutKey, bindGroupLayouts: [group] }) };
    this.layouts.set(layoutKey, layout);
    return layout;
  }

  /** The batch's encoder, with no compute pass open (copies and queries need that). */
  private encode(): GPUCommandEncoder {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder({ label: 'metal-lora batch' });
    return this.encoder;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = null;
  }

  /** Records one compute dispatch into the current batch. */
  dispatch(spec: DispatchSpec): void {
    this.checkHealth(spec.key);
    const slots = slotsOf(spec);
    const pipeline = this.pipeline(spec.key, spec.source, spec.constants, slots);
    // The uniform goes into the batch's arena; its binding takes the slot's offset, so the bind
    // group is cached by pipeline and buffers: a loop binds the same pooled buffers every step,
    // and creating a bind group is a Dawn call.
    const slot = spec.uniform ? this.arenaSlot(spec.uniform) : null;
    let key = `${this.idOf(pipeline)}|${slot ? slot.size : 0}`;
    for (const b of spec.buffers) key += b ? `,${this.idOf(b)}` : ',-';
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      if (this.bindGroups.size >= MAX_CACHED_BIND_GROUPS) this.bindGroups.clear();
      bindGroup = this.createBindGroup(spec, slots, slot ? { buffer: this.arena, offset: 0, size: slot.size } : null);
      this.stats.bindGroupsCreated++;
      this.bindGroups.set(key, bindGroup);
    }
    const profile = this.profile;
    if (profile) {
      // Each dispatch in a pass of its own, its start and end stamped.
      this.endPass();
      const i = profile.labels.push(spec.label ?? spec.key) - 1;
      this.pass = this.encode().beginComputePass({
        timestampWrites: { querySet: profile.querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
    } else if (!this.pass || !this.sharePasses) {
      this.endPass();
      this.pass = this.encode().beginComputePass();
    }
    const pass = this.pass;
    pass.setPipeline(pipeline);
    if (slot) pass.setBindGroup(0, bindGroup, [slot.offset]);
    else pass.setBindGroup(0, bindGroup);
    const [x, y, z] = spec.workgroups;
    if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
    this.capturing?.current.commands.push({ pipeline, bindGroup, offsets: slot ? [slot.offset] : null, x, y, z });
    this.stats.dispatches++;
    if (!this.sharePasses || profile) this.endPass();
    if (++this.passes >= this.passesPerSubmit) this.flush();
  }

  private profile: { querySet: GPUQuerySet; labels: string[]; pending: { buffer: GPUBuffer; resolve: GPUBuffer; labels: string[] }[] } | null = null;

  /**
   * Starts timing every dispatch on the GPU (needs `timestamp-query`), until `stopProfile`. Each
   * dispatch gets a pass of its own while profiling, so the totals are GPU time per kernel label.
   */
  startProfile(): void {
    if (!this.context.report.timestampQuery)
      throw new GPUError('startProfile', 'unsupported', "profiling needs the 'timestamp-query' feature; expected an adapter with it, got one without");
    if (this.profile) throw new GPUError('startProfile', 'internal', 'a profile is already running; expected stopProfile() first, got a second startProfile()');
    this.refuseWhileCapturing('startProfile', 'profile');
    this.flush();
    const querySet = this.device.createQuerySet({ label: 'dispatch profile', type: 'timestamp', count: 2 * MAX_PASSES_PER_SUBMIT });
    this.profile = { querySet, labels: [], pending: [] };
  }

  /** Stops profiling: GPU milliseconds and dispatch counts per kernel label since `startProfile`. */
  async stopProfile(): Promise<Map<string, { count: number; ms: number }>> {
    const profile = this.profile;
    if (!profile) throw new GPUError('stopProfile', 'internal', 'no profile is running; expected startProfile() first, got none');
    this.flush();
    this.profile = null;
    const totals = new Map<string, { count: number; ms: number }>();
    try {
      for (const { buffer, labels } of profile.pending) {
        await buffer.mapAsync(GPUMapMode.READ);
        const stamps = new BigInt64Array(buffer.getMappedRange().slice(0));
        labels.forEach((label, i) => {
          const entry = totals.get(label) ?? { count: 0, ms: 0 };
          entry.count++;
          entry.ms += Number(stamps[2 * i + 1] - stamps[2 * i]) / 1e6;
          totals.set(label, entry);
        });
      }
    } finally {
      for (const { buffer, resolve } of profile.pending) {
        buffer.destroy();
        resolve.destroy();
      }
      profile.querySet.destroy();
    }
    this.checkHealth('stopProfile');
    return totals;
  }

  private createBindGroup(spec: DispatchSpec, slots: string, uniform: GPUBufferBinding | null): GPUBindGroup {
    const entries: GPUBindGroupEntry[] = [];
    spec.buffers.forEach((buffer, binding) => {
      if (buffer) entries.push({ binding, resource: { buffer } });
    });
    if (uniform) entries.push({ binding: spec.buffers.length, resource: uniform });
    return this.device.createBindGroup({ label: spec.label ?? spec.key, layout: this.layout(spec.key, spec.source, slots).group, entries });
  }

  /** A slot of the batch's uniform arena holding `data` (written when the batch is submitted): its offset and size. */
  private arenaSlot(data: ArrayBuffer): { offset: number; size: number } {
    const size = Math.ceil(data.byteLength / 16) * 16;
    if (this.arenaUsed + size > UNIFORM_ARENA_BYTES) this.flush();
    this.arenaData.set(new Uint8Array(data), this.arenaUsed);
    const offset = this.arenaUsed;
    const step = this.device.limits.minUniformBufferOffsetAlignment;
    this.arenaUsed += Math.ceil(size / step) * step;
    return { offset, size };
  }

  /**
   * Before buffers are destroyed: submit the recorded commands that may still use them, and drop
   * the cached bind groups, which may name them (rare in steady state).
   */
  private beforeDestroying(): void {
    this.flush();
    this.bindGroups.clear();
  }

  private idOf(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) this.ids.set(o, (id = this.nextId++));
    return id;
  }

  /** Submits the recorded batch (after writing its uniforms). */
  flush(): void {
    this.endPass();
    if (!this.encoder) return;
    const profile = this.profile;
    if (profile && profile.labels.length > 0) {
      const bytes = 16 * profile.labels.length;
      const resolve = this.device.createBuffer({ label: 'profile resolve', size: bytes, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      const read = this.device.createBuffer({ label: 'profile read', size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      this.encoder.resolveQuerySet(profile.querySet, 0, 2 * profile.labels.length, resolve, 0);
      this.encoder.copyBufferToBuffer(resolve, 0, read, 0, bytes);
      profile.pending.push({ buffer: read, resolve, labels: profile.labels });
      profile.labels = [];
    }
    if (this.arenaUsed > 0) this.device.queue.writeBuffer(this.arena, 0, this.arenaData.buffer, 0, this.arenaUsed);
    if (this.uploadUsed > 0) this.device.queue.writeBuffer(this.uploads, 0, this.uploadData.buffer, 0, this.uploadUsed);
    this.capturing?.closeSegment(this.arenaData.subarray(0, this.arenaUsed), this.uploadData.subarray(0, this.uploadUsed));
    this.device.queue.submit([this.encoder.finish()]);
    this.stats.submits++;
    this.encoder = null;
    this.passes = 0;
    this.arenaUsed = 0;
    this.uploadUsed = 0;
  }

  /**
   * Runs `fn` and records the dispatches, staged uploads and uniforms it sends, for
   * `graph.replay()` to send again with no op-layer JavaScript (`captureGraph` in
   * `@metal-lora/tensor` says what `fn` may do). Every buffer acquired meanwhile belongs to the
   * graph until it is disposed. A read-back, a profile or a timed region inside `fn` is refused.
   */
  capture<R>(fn: () => R): { result: R; graph: CapturedGraph } {
    this.refuseWhileCapturing('capture', 'capture a second graph inside one');
    this.refuseWhileProfiling('capture');
    this.checkHealth('capture');
    this.flush();
    const graph = new DispatchGraph(this);
    this.capturing = graph;
    try {
      const result = fn();
      if (typeof (result as { then?: unknown } | null)?.then === 'function') {
        (result as Promise<unknown>).catch(() => undefined);
        throw new GPUError(
          'capture',
          'internal',
          'the step must be synchronous; expected a function that returns when its work is recorded, got one that returned a promise',
        );
      }
      this.flush();
      // Writes made after the last submission (large ones go straight to the queue) close a batch of their own.
      if (graph.current.writes.length > 0) graph.closeSegment(new Uint8Array(0), new Uint8Array(0));
      graph.finish();
      this.keepSpares(graph);
      return { result, graph };
    } catch (error) {
      this.flush();
      this.keepSpares(graph);
      graph.dispose();
      throw error;
    } finally {
      this.capturing = null;
    }
  }

  /** The buffers a capture released and did not take again: the graph's until it is disposed (counted live). */
  private keepSpares(graph: DispatchGraph): void {
    for (const list of graph.spare.values())
      for (const b of list) {
        graph.held.push(b);
        this.live += b.size;
        this.buffers++;
      }
    graph.spare.clear();
  }

  /** A disposed graph's buffers: no longer held for it; those released meanwhile go to the pool. */
  releaseGraph(graph: DispatchGraph): void {
    for (const b of graph.acquired) this.graphOf.delete(b);
    const held = graph.held.splice(0);
    graph.acquired.clear();
    for (const b of held) this.release(b);
  }

  private refuseWhileCapturing(op: string, what: string): void {
    if (this.capturing)
      throw new GPUError(op, 'internal', `a step being captured cannot ${what}; expected the capture to finish first (captureGraph), got ${op} inside it`);
  }

  private refuseWhileProfiling(op: string): void {
    if (this.profile) throw new GPUError(op, 'internal', 'a profile is running; expected stopProfile() first, got a capture inside it');
  }

  /** Resolves when all submitted work has finished. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.checkHealth('sync');
  }

  /**
   * GPU time of the passes dispatched by `fn`, from the start of the first to the end of the last,
   * in milliseconds (needs `timestamp-query`). Submits and waits. `prelude`'s dispatches are
   * submitted first, untimed.
   */
  async timeRegion(fn: () => void, prelude?: () => void): Promise<number> {
    this.refuseWhileCapturing('timeRegion', 'time a region');
    if (!this.context.report.timestampQuery)
      throw new GPUError('timeRegion', 'unsupported', "GPU timing needs the 'timestamp-query' feature; expected an adapter with it, got one without");
    this.flush();
    // Untimed work submitted just before the region, and at once, so the GPU runs it while the
    // host records the region (benchmarks: a kernel that keeps the GPU's clocks up meanwhile).
    if (prelude) {
      prelude();
      this.flush();
    }
    const querySet = this.device.createQuerySet({ label: 'region timer', type: 'timestamp', count: 2 });
    // Empty marker passes around the region: the kernels inside run exactly as they would untimed.
    this.encode()
      .beginComputePass({ label: 'timer start', timestampWrites: { querySet, beginningOfPassWriteIndex: 0 } })
      .end();
    this.passesPerSubmit = MAX_PASSES_PER_SUBMIT;
    try {
      fn();
    } finally {
      this.passesPerSubmit = PASSES_PER_SUBMIT;
    }
    this.encode()
      .beginComputePass({ label: 'timer end', timestampWrites: { querySet, endOfPassWriteIndex: 1 } })
      .end();
    const resolve = this.device.createBuffer({ label: 'timer resolve', size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = this.device.createBuffer({ label: 'timer read', size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = this.encode();
    enc.resolveQuerySet(querySet, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    this.flush();
    await read.mapAsync(GPUMapMode.READ);
    const [start, end] = new BigInt64Array(read.getMappedRange().slice(0));
    read.unmap();
    for (const b of [read, resolve]) b.destroy();
    querySet.destroy();
    this.checkHealth('timeRegion');
    return Number(end - start) / 1e6;
  }

  /** The GPU data of a kernel input. */
  data(ref: TensorRef): GpuData {
    return ref.data as GpuData;
  }

  dispose(): void {
    if (this.profile) {
      for (const { buffer, resolve } of this.profile.pending) {
        buffer.destroy();
        resolve.destroy();
      }
      this.profile.querySet.destroy();
      this.profile = null;
    }
    this.releasePool();
    this.beforeDestroying();
    for (const u of this.sharedUniforms.values()) u.buffer.destroy();
    this.arena.destroy();
    this.uploads.destroy();
  }
}

/**
 * A dispatch's bound slots, one character per binding: `b` a buffer, `-` none (a binding this
 * variant of the shader does not declare), and `u` last for its uniform.
 */
function slotsOf(spec: DispatchSpec): string {
  let slots = '';
  for (const b of spec.buffers) slots += b ? 'b' : '-';
  return spec.uniform ? `${slots}u` : slots;
}

/** Uniform contents as a string of their 16-bit words (a map key; uniforms are multiples of 16 bytes). */
function contentsKey(data: ArrayBuffer): string {
  const words = new Uint16Array(data);
  let key = '';
  for (let i = 0; i < words.length; i++) key += String.fromCharCode(words[i]);
  return key;
}

/** A tensor's storage as the GPU holds it (bool as u32). */
function gpuLayout(values: StorageArray, dtype: DType): ArrayBufferView {
  return dtype === 'bool' ? Uint32Array.from(values as Uint8Array) : values;
}

function padTo4(view: ArrayBufferView): Uint8Array {
  const out = new Uint8Array(Math.ceil(view.byteLength / 4) * 4);
  out.set(new Uint8Array(view.buffer, view.byteOffset, view.byteLength));
  return out;
}

function emptyOf(dtype: DType): StorageArray {
  return dtype === 'float32' ? new Float32Array(0) : dtype === 'float16' ? new Uint16Array(0) : dtype === 'int32' ? new Int32Array(0) : new Uint8Array(0);
}
