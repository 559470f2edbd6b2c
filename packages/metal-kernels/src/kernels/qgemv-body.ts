/** qgemv.wgsl's chunk without ONCE: its loops (`loop`), or {@link qgemvBody} written out (`unroll`). */
export type QgemvBodyForm = 'loop' | 'unroll';

/** What {@link qgemvBody} writes out. */
export interface QgemvBodyShape {
  /** 2..8. */
  bits: number;
  /**
   * Words per chunk (a chunk's 32·vw / bits values are whole vec4s of x and stay in one group):
   * 4, read as one vec4<u32> (qgemv.wgsl's VEC binds `wq` so), else scalar words (1, or `bits`
   * words, 32 values, at 3, 5 and 6 bits).
   */
  vw: number;
  /** Rows of W per team. */
  rows: number;
  /** Rows of x. */
  mr: number;
  /** Whether x is read from qgemv.wgsl's workgroup tile `xw` (STAGE; chunk `cl` of the tile) instead of `a`. */
  staged?: boolean;
}

const C = 'xyzw';

function hex(v: number): string {
  return `0x${(v >>> 0).toString(16)}u`;
}

/**
 * The body of qgemv.wgsl's section GEN: one chunk of a lane's walk as straight-line WGSL (every
 * mask, shift and power of two a literal, no array indexed in a loop), for the few rows of x where
 * each row unpacks W's values itself. In scope there: `ch`, `g`, `groups`, `rows`, `acc`, `p`,
 * `a`, `wq`, `scales`, `biases`, `VALS`, `MAGIC`, `TWO23` (and `xw`, `cl`, `CT` where `staged`).
 *
 * A value inside a word is masked in place into the mantissa of 2^23 (from the word shifted down
 * 16 where its bits reach past bit 23) and 2^23 subtracted, which gives q·2^e exactly, x scaled by
 * 2^-e (a power of two: exact); a value across two words (3, 5, 6 bits) is joined from its two
 * pieces first. f32 accumulation.
 */
export function qgemvBody({ bits, vw, rows, mr, staged = false }: QgemvBodyShape): string {
  const vec = vw === 4;
  const vals = (vw * 32) / bits;
  const mask = (1 << bits) - 1;
  const out: string[] = [];
  const word = (r: number, i: number) => (vec ? `w${r}_${i >> 2}.${C[i & 3]}` : `w${r}_${i}`);
  for (let r = 0; r < rows; r++) {
    if (vec) out.push(`let w${r}_0 = wq[rows[${r}] * (p.words / 4u) + ch];`);
    else for (let i = 0; i < vw; i++) out.push(`let w${r}_${i} = wq[rows[${r}] * p.words + ch * ${vw}u + ${i}u];`);
    out.push(`let s${r} = f32(scales[rows[${r}] * groups + g]);`, `let b${r} = f32(biases[rows[${r}] * groups + g]);`);
  }
  for (let m = 0; m < mr; m++) {
    const xs = Array.from({ length: vals / 4 }, (_, i) => `x${m}_${i}`);
    const load = (i: number) => (staged ? `xw[${m * (vals / 4) + i}u * (CT + 1u) + cl]` : `a[(${m}u * p.K + ch * VALS) / 4u + ${i}u]`);
    out.push(...xs.map((x, i) => `let ${x} = ${load(i)};`));
    // Σ x for the bias term, in f32.
    out.push(`let t${m} = dot(${xs.map((x) => `vec4<f32>(${x})`).join(' + ')}, vec4<f32>(1.0));`);
    out.push(...unpackF32(m, (v) => `${xs[v >> 2]}.${C[v & 3]}`, word, { bits, vals, mask, rows }));
  }
  return out.map((l) => `    ${l}`).join('\n');
}

/** The f32 unpacking of row m of x against the team's rows of W (see {@link qgemvBody}). */
function unpackF32(
  m: number,
  x: (v: number) => string,
  word: (r: number, i: number) => string,
  { bits, vals, mask, rows }: { bits: number; vals: number; mask: number; rows: number },
): string[] {
  const out: string[] = [];
  // Value v of the chunk: bits o..o+BITS of its words, LSB first. Inside a word it is masked in
  // place (from the word shifted down 16 where it reaches past bit 23): q·2^e; across two words
  // (3, 5, 6 bits) its pieces are joined at bit 0: q.
  const place = (v: number) => {
    const o = v * bits;
    const wi = o >> 5;
    const s = o & 31;
    if (s + bits > 32) return { wi, s, straddle: true, high: false, e: 0 };
    const high = s + bits > 23;
    return { wi, s, straddle: false, high, e: s - (high ? 16 : 0) };
  };
  const scaled: string[] = [];
  for (let v = 0; v < vals; v++) {
    const { e } = place(v);
    if (e === 0) scaled.push(`f32(${x(v)})`);
    else {
      out.push(`let u${m}_${v} = f32(${x(v)}) * ${2 ** -e}f;`);
      scaled.push(`u${m}_${v}`);
    }
  }
  const highWords = new Set(
    Array.from({ length: vals }, (_, v) => place(v))
      .filter((p) => p.high)
      .map((p) => p.wi),
  );
  for (let r = 0; r < rows; r++) {
    out.push(`var e${m}_${r} = 0.0;`);
    for (const wi of highWords) out.push(`let h${m}_${r}_${wi} = ${word(r, wi)} >> 16u;`);
    for (let v = 0; v < vals; v++) {
      const { wi, s, straddle, high, e } = place(v);
      const bitsOf = straddle
        ? `(${word(r, wi)} >> ${s}u) | ((${word(r, wi + 1)} & ${hex(mask >> (32 - s))}) << ${32 - s}u)`
        : `${high ? `h${m}_${r}_${wi}` : word(r, wi)} & ${hex(mask << e)}`;
      out.push(`e${m}_${r} = fma(bitcast<f32>((${bitsOf}) | MAGIC) - TWO23, ${scaled[v]}, e${m}_${r});`);
    }
    const o = m * rows + r;
    out.push(`acc[${o}u] = fma(s${r}, e${m}_${r}, fma(b${r}, t${m}, acc[${o}u]));`);
  }
  return out;
}
