import { type Backend, type CapturedGraph, getBackend } from './backend';

/**
 * Runs `fn` once and records the device work it sends, so that `graph.replay()` sends the same
 * work again without running any JavaScript of the ops: for a step repeated many times whose
 * host time is most of its cost (one token of generation: hundreds of small kernels). A replay
 * runs the same kernels over the same buffers, reading whatever those hold at the time, so:
 * - inputs that change between replays are tensors made before the capture and overwritten with
 *   `t.write(values)` before each replay (not inside `fn`: a write inside is replayed as it was);
 * - `fn`'s shapes and control flow must not depend on values, and it must not read data back;
 * - its result tensors (and every buffer it used in between) belong to the graph: read them after
 *   each replay, keep them, and dispose them with the graph; the tensors it reads must outlive it.
 * Returns null without running `fn` where the backend has nothing to record (the CPU backend's
 * kernels run on the host): run `fn` itself instead.
 */
export function captureGraph<R>(fn: () => R, backend: Backend = getBackend()): { result: R; graph: CapturedGraph } | null {
  return backend.capture ? backend.capture(fn) : null;
}
