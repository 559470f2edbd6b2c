/**
 * Every error thrown by MetalLoRA-TS derives from {@link MetalLoRAError}. Messages follow one
 * shape: `<op>: <what is wrong>; expected <x>, got <y>`.
 */
export class MetalLoRAError extends Error {
  /** The op or function that refused its input (e.g. `matmul`, `readSafetensors`). */
  readonly op: string;
  constructor(op: string, message: string) {
    super(`${op}: ${message}`);
    this.op = op;
    this.name = new.target.name;
  }
}

/** Builds the `what is wrong; expected X, got Y` tail of a message. */
export function describe(problem: string, expected?: string, got?: string): string {
  if (expected === undefined) return problem;
  return `${problem}; expected ${expected}, got ${got}`;
}

/** Shapes that do not fit together (mismatched inner dims, non-broadcastable shapes, bad reshape). */
export class ShapeError extends MetalLoRAError {
  constructor(op: string, problem: string, expected?: string, got?: string) {
    super(op, describe(problem, expected, got));
  }
}

/** A dtype the op does not accept, or inputs whose dtypes disagree. */
export class DTypeError extends MetalLoRAError {
  constructor(op: string, problem: string, expected?: string, got?: string) {
    super(op, describe(problem, expected, got));
  }
}

/** An axis, index or other argument outside its valid range. */
export class ValueError extends MetalLoRAError {
  constructor(op: string, problem: string, expected?: string, got?: string) {
    super(op, describe(problem, expected, got));
  }
}

/** No kernel for an op on the current backend. Names the backends that have one. */
export class KernelNotFoundError extends MetalLoRAError {
  readonly backend: string;
  readonly available: readonly string[];
  constructor(op: string, backend: string, available: readonly string[]) {
    super(
      op,
      describe(
        `no kernel registered for backend '${backend}'`,
        available.length ? `one of the backends that have it: ${available.join(', ')}` : 'a registered kernel (no backend has one)',
        `'${backend}'`,
      ),
    );
    this.backend = backend;
    this.available = available;
  }
}

/** A GPU failure: no adapter, device lost, out of memory, a validation error from the driver. */
export class GPUError extends MetalLoRAError {
  readonly reason: 'no-adapter' | 'device-lost' | 'out-of-memory' | 'validation' | 'internal' | 'unsupported';
  constructor(op: string, reason: GPUError['reason'], message: string) {
    super(op, message);
    this.reason = reason;
  }
}

/** A malformed file or record (safetensors, adapter configs). Carries the byte offset or key. */
export class FormatError extends MetalLoRAError {
  readonly offset: number | undefined;
  readonly key: string | undefined;
  constructor(op: string, problem: string, where: { offset?: number; key?: string } = {}, expected?: string, got?: string) {
    super(op, describe(problem, expected, got));
    this.offset = where.offset;
    this.key = where.key;
  }
}

/** Using a tensor after `dispose()`, or a backward pass through a released graph. */
export class StateError extends MetalLoRAError {}
