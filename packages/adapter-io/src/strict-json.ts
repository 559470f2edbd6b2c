/**
 * A strict, iterative JSON parser for file headers (safetensors): linear in the input, no
 * recursion (a header nested thousands deep cannot overflow the stack), and as strict as the
 * reference reader's serde_json: nesting limited to 128, no byte-order mark, no lone surrogates,
 * no control characters in strings, and duplicate keys only where the caller allows them (the
 * reference refuses a repeated field of a struct but lets a map's last value win). Objects come
 * back as `Map`s (names such as `__proto__` or `constructor` are ordinary keys); numbers written
 * with a fraction or an exponent, and `-0`, come back as {@link JsonFloat}, so that a field which
 * must be an unsigned integer can refuse `1.0` as the reference does.
 */

/** A number written with a fraction or exponent (`1.0`, `1e3`), or `-0`: not an unsigned integer. */
export class JsonFloat {
  constructor(readonly value: number) {}
}

export type JsonValue = null | boolean | number | JsonFloat | string | JsonValue[] | Map<string, JsonValue>;

/** serde_json's default recursion limit, which the reference safetensors reader inherits. */
export const MAX_JSON_DEPTH = 128;

/** Where parsing failed: a message and the character index in the text. */
export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly index: number,
  ) {
    super(`${message} at character ${index}`);
  }
}

type Frame = { kind: 'array'; value: JsonValue[] } | { kind: 'object'; value: Map<string, JsonValue>; key: string | undefined };

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);
const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const NUMBER = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/**
 * Whether a repeated `key` is allowed in the object at `path` (the keys, or array indices, from
 * the root); when it is, the last value wins.
 */
export type DuplicatePolicy = (path: readonly string[], key: string) => boolean;

/** Parses `text` as one JSON value (see the module doc for what is refused). Throws {@link JsonSyntaxError}. */
export function parseStrictJson(text: string, allowDuplicate: DuplicatePolicy = () => false): JsonValue {
  let i = 0;
  const n = text.length;
  const stack: Frame[] = [];
  const skipWs = () => {
    while (i < n && WS.has(text.charCodeAt(i))) i++;
  };
  const hex4 = (at: number): number => {
    const h = text.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) throw new JsonSyntaxError('invalid \\u escape', at - 2);
    return Number.parseInt(h, 16);
  };
  const readString = (): string => {
    // i is at the opening quote.
    const start = ++i;
    let out = '';
    let chunk = start;
    for (;;) {
      if (i >= n) throw new JsonSyntaxError('unterminated string', start - 1);
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(chunk, i);
        i++;
        return out;
      }
      if (c < 0x20) throw new JsonSyntaxError('control character in a string', i);
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(chunk, i);
      const e = text[i + 1];
      if (e === 'u') {
        const unit = hex4(i + 2);
        i += 6;
        if (unit >= 0xdc00 && unit <= 0xdfff) throw new JsonSyntaxError('lone trailing surrogate', i - 6);
        if (unit >= 0xd800 && unit <= 0xdbff) {
          if (text[i] !== '\\' || text[i + 1] !== 'u') throw new JsonSyntaxError('lone leading surrogate', i - 6);
          const low = hex4(i + 2);
          if (low < 0xdc00 || low > 0xdfff) throw new JsonSyntaxError('lone leading surrogate', i - 6);
          i += 6;
          out += String.fromCharCode(unit, low);
        } else out += String.fromCharCode(unit);
      } else if (e !== undefined && e in ESCAPES) {
        out += ESCAPES[e];
        i += 2;
      } else throw new JsonSyntaxError('invalid escape', i);
      chunk = i;
    }
  };
  const readScalar = (): JsonValue => {
    const c = text[i];
    if (c === '"') return readString();
    for (const [word, value] of [
      ['true', true],
      ['false', false],
      ['null', null],
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return value;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m || m[0] === '-') throw new JsonSyntaxError(i >= n ? 'unexpected end of input' : `unexpected '${c}'`, i);
    i += m[0].length;
    const value = Number(m[0]);
    return m[1] !== undefined || m[2] !== undefined || Object.is(value, -0) ? new JsonFloat(value) : value;
  };
  /** After `{`: the first key, or `}` for an empty object (then true). */
  const readKey = (frame: Extract<Frame, { kind: 'object' }>): void => {
    skipWs();
    if (text[i] !== '"') throw new JsonSyntaxError(i >= n ? 'unexpected end of input' : 'expected a key', i);
    const at = i;
    const key = readString();
    if (frame.value.has(key)) {
      const path = stack.slice(0, -1).map((f) => (f.kind === 'object' ? (f.key as string) : String(f.value.length)));
      if (!allowDuplicate(path, key)) throw new JsonSyntaxError(`duplicate key "${key}"`, at);
      frame.value.delete(key); // the last value wins, in the position where it stands
    }
    skipWs();
    if (text[i] !== ':') throw new JsonSyntaxError("expected ':'", i);
    i++;
    frame.key = key;
  };

  if (text.charCodeAt(0) === 0xfeff) throw new JsonSyntaxError('byte-order mark before the JSON', 0);
  for (;;) {
    // Expecting a value.
    skipWs();
    const c = text[i];
    let value: JsonValue;
    if (c === '{' || c === '[') {
      if (stack.length >= MAX_JSON_DEPTH) throw new JsonSyntaxError(`nested deeper than ${MAX_JSON_DEPTH} levels`, i);
      i++;
      skipWs();
      if (c === '{' && text[i] !== '}') {
        const frame: Frame = { kind: 'object', value: new Map(), key: undefined };
        stack.push(frame);
        readKey(frame);
        continue;
      }
      if (c === '[' && text[i] !== ']') {
        stack.push({ kind: 'array', value: [] });
        continue;
      }
      i++;
      value = c === '{' ? new Map() : [];
    } else value = readScalar();
    // A value is complete: put it into its container, then a comma or the container's end.
    for (;;) {
      const top = stack[stack.length - 1];
      if (!top) {
        skipWs();
        if (i !== n) throw new JsonSyntaxError('trailing characters after the JSON value', i);
        return value;
      }
      if (top.kind === 'array') top.value.push(value);
      else top.value.set(top.key as string, value);
      skipWs();
      if (text[i] === ',') {
        i++;
        if (top.kind === 'object') readKey(top);
        break;
      }
      if (text[i] !== (top.kind === 'array' ? ']' : '}'))
        throw new JsonSyntaxError(i >= n ? 'unexpected end of input' : `expected ',' or '${top.kind === 'array' ? ']' : '}'}'`, i);
      i++;
      stack.pop();
      value = top.value;
    }
  }
}
