import { type CapturedGraph, GPUError } from '@metal-lora/tensor';

/** One recorded command of a batch: a dispatch, or a copy out of the upload arena. */
export type GraphCommand =
  | { pipeline: GPUComputePipeline; bindGroup: GPUBindGroup; offsets: number[] | null; x: number; y: number; z: number }
  | { uploadOffset: number; dst: GPUBuffer; size: number };

/** One recorded batch (a submission): writes made before it, its commands, and its arenas' contents. */
export interface GraphSegment {
  writes: { buffer: GPUBuffer; data: Uint8Array<ArrayBuffer> }[];
  commands: GraphCommand[];
  arena: Uint8Array<ArrayBuffer>;
  uploads: Uint8Array<ArrayBuffer>;
}

/** What a graph needs of the backend that recorded it. */
export interface GraphHost {
  readonly device: GPUDevice;
  readonly arena: GPUBuffer;
  readonly uploads: GPUBuffer;
  readonly stats: { dispatches: number; submits: number; replayed: number };
  checkHealth(op: string): void;
  flush(): void;
  /** The graph is gone: its buffers go back to the pool. */
  releaseGraph(graph: DispatchGraph): void;
}

/**
 * A captured step (`WebGPUBackend.capture`): its batches re-encoded and submitted as recorded,
 * with their uniforms and staged uploads, and no op-layer JavaScript. Holds every buffer the step
 * acquired until disposed, so none of them is handed to other work between replays.
 */
export class DispatchGraph implements CapturedGraph {
  /** Buffers acquired while capturing (the backend keeps those released meanwhile in `held`). */
  readonly acquired = new Set<GPUBuffer>();
  readonly held: GPUBuffer[] = [];
  /**
   * Buffers released during the capture, by size: later acquires of the same capture take them
   * again (as the pool would have; a replay repeats the same order of use), so a captured step
   * holds its peak, not the sum of everything it allocated. Moved to `held` when the capture ends.
   */
  readonly spare = new Map<number, GPUBuffer[]>();
  readonly segments: GraphSegment[] = [];
  current: GraphSegment = { writes: [], commands: [], arena: new Uint8Array(0), uploads: new Uint8Array(0) };
  disposed = false;
  /** Whether the capture finished (a graph whose capture threw cannot replay). */
  complete = false;
  /** Dispatches one replay sends (counted when the capture finishes). */
  dispatches = 0;

  constructor(private readonly host: GraphHost) {}

  /** The capture finished: the graph may replay. */
  finish(): void {
    for (const s of this.segments) for (const c of s.commands) if ('pipeline' in c) this.dispatches++;
    this.complete = true;
  }

  /** Closes the batch being recorded with its arenas' contents (the backend is submitting it). */
  closeSegment(arena: Uint8Array<ArrayBuffer>, uploads: Uint8Array<ArrayBuffer>): void {
    this.current.arena = arena.slice();
    this.current.uploads = uploads.slice();
    this.segments.push(this.current);
    this.current = { writes: [], commands: [], arena: new Uint8Array(0), uploads: new Uint8Array(0) };
  }

  /** Command buffers encoded ahead by {@link prepare}, one per segment with commands. */
  private prepared: GPUCommandBuffer[] | null = null;

  /**
   * Encodes the next replay now (most of a replay's host time), so that work overlaps the
   * device's; the next {@link replay} only writes and submits.
   */
  prepare(): void {
    this.check('prepare');
    this.prepared ??= this.encode();
  }

  replay(): void {
    this.check('replay');
    const buffers = this.prepared ?? this.encode();
    this.prepared = null;
    const { device, arena, uploads, stats } = this.host;
    this.host.checkHealth('replay');
    // Work recorded before (the inputs' writes among it) goes first.
    this.host.flush();
    const queue = device.queue;
    let next = 0;
    for (const segment of this.segments) {
      for (const w of segment.writes) queue.writeBuffer(w.buffer, 0, w.data);
      if (segment.commands.length === 0) continue;
      if (segment.arena.byteLength > 0) queue.writeBuffer(arena, 0, segment.arena);
      if (segment.uploads.byteLength > 0) queue.writeBuffer(uploads, 0, segment.uploads);
      queue.submit([buffers[next++]]);
      stats.submits++;
    }
    stats.dispatches += this.dispatches;
    stats.replayed += this.dispatches;
  }

  private check(op: string): void {
    if (this.disposed) throw new GPUError(op, 'internal', 'the graph was disposed; expected a live graph, got a disposed one');
    if (!this.complete) throw new GPUError(op, 'internal', 'the capture did not finish; expected a complete graph, got one whose capture threw');
  }

  /** The segments' commands encoded into command buffers (no queue work). */
  private encode(): GPUCommandBuffer[] {
    const { device, uploads } = this.host;
    const out: GPUCommandBuffer[] = [];
    for (const segment of this.segments) {
      if (segment.commands.length === 0) continue;
      const encoder = device.createCommandEncoder({ label: 'metal-lora graph' });
      let pass: GPUComputePassEncoder | null = null;
      let pipeline: GPUComputePipeline | null = null;
      for (const c of segment.commands) {
        if ('pipeline' in c) {
          if (!pass) {
            pass = encoder.beginComputePass();
            pipeline = null;
          }
          if (c.pipeline !== pipeline) pass.setPipeline((pipeline = c.pipeline));
          if (c.offsets) pass.setBindGroup(0, c.bindGroup, c.offsets);
          else pass.setBindGroup(0, c.bindGroup);
          if (c.x > 0 && c.y > 0 && c.z > 0) pass.dispatchWorkgroups(c.x, c.y, c.z);
        } else {
          pass?.end();
          pass = null;
          encoder.copyBufferToBuffer(uploads, c.uploadOffset, c.dst, 0, c.size);
        }
      }
      pass?.end();
      out.push(encoder.finish());
    }
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.prepared = null;
    this.host.releaseGraph(this);
  }
}
