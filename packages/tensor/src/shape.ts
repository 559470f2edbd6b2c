import { ShapeError, ValueError } from './errors';

export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** `[2, 3] float32` style, as used in every error message. */
export function formatShape(shape: Shape, dtype?: string): string {
  return `[${shape.join(', ')}]${dtype ? ` ${dtype}` : ''}`;
}

export function stridesOf(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** The most elements one tensor may have: what one JavaScript typed array can hold everywhere. */
export const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;

export function assertShape(op: string, shape: unknown): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new ShapeError(op, 'invalid shape', 'an array of non-negative integers', JSON.stringify(shape));
  }
  // Checked before anything is allocated: a bare RangeError from a typed array says nothing.
  const size = shape.reduce((a: number, d: number) => a * d, 1);
  if (size > MAX_TENSOR_ELEMENTS)
    throw new ShapeError(op, 'the tensor is too large', `at most ${MAX_TENSOR_ELEMENTS} elements`, `${size} elements for ${formatShape(shape)}`);
  return [...shape];
}

/** NumPy broadcasting of several shapes; throws a ShapeError naming all of them. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (out[o] === 1) out[o] = d;
      else if (d !== 1 && d !== out[o]) {
        throw new ShapeError(
          op,
          'shapes cannot be broadcast together',
          'equal dimensions or 1 in each position from the right',
          shapes.map((x) => formatShape(x)).join(' and '),
        );
      }
    }
  }
  return out;
}

/** Strides for reading an array of `shape` as if it had `outShape` (0 on broadcast dims). */
export function broadcastStrides(shape: Shape, outShape: Shape): number[] {
  const strides = stridesOf(shape);
  const out = new Array<number>(outShape.length).fill(0);
  const offset = outShape.length - shape.length;
  for (let i = 0; i < shape.length; i++) out[offset + i] = shape[i] === 1 ? 0 : strides[i];
  return out;
}

export function normalizeAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= Math.max(rank, 1)) {
    throw new ValueError(op, 'axis out of range', `an integer in [${-rank}, ${Math.max(rank - 1, 0)}]`, String(axis));
  }
  return axis < 0 ? axis + rank : axis;
}

/** Sorted, unique, non-negative axes; `undefined` means all axes. */
export function normalizeAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = (typeof axes === 'number' ? [axes] : [...axes]).map((a) => normalizeAxis(op, a, rank));
  const unique = [...new Set(list)].sort((a, b) => a - b);
  if (unique.length !== list.length) throw new ValueError(op, 'repeated axis', 'distinct axes', JSON.stringify(axes));
  return unique;
}

/** Output shape of a reduction over `axes`. */
export function reducedShape(shape: Shape, axes: readonly number[], keepDims: boolean): number[] {
  const out: number[] = [];
  shape.forEach((d, i) => {
    if (axes.includes(i)) {
      if (keepDims) out.push(1);
    } else out.push(d);
  });
  return out;
}
