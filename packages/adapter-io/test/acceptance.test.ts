import { readdirSync, readFileSync } from 'node:fs';
import { FormatError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { openSafetensorsBlob, readSafetensors } from '../src/index';
import { openSafetensors } from '../src/node';

/**
 * Headers the reference reader (Python safetensors 0.8.0, serde_json underneath) was given by
 * scripts/acceptance_corpus.py, with its verdicts: readSafetensors must accept exactly the same.
 */
const dir = new URL('./fixtures/acceptance/', import.meta.url);
const verdicts = JSON.parse(readFileSync(new URL('verdicts.json', dir), 'utf8')) as Record<string, { accepted: boolean; error: string | null }>;
/** Where this reader differs on purpose, and why. */
const DIFFERENCES: Record<string, string> = {
  'big-dim': 'a dimension above 2^53 cannot be held exactly by a JavaScript number: refused with a FormatError',
};

describe('safetensors headers: the same verdicts as the reference reader', () => {
  const files = readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
  it('covers every case the corpus script wrote', () => {
    expect(files.map((f) => f.replace('.safetensors', '')).sort()).toEqual(Object.keys(verdicts).sort());
  });
  for (const file of files) {
    const name = file.replace('.safetensors', '');
    const reference = verdicts[name];
    const expected = DIFFERENCES[name] ? !reference.accepted : reference.accepted;
    it(`${name}: ${expected ? 'accepted' : 'refused'}${DIFFERENCES[name] ? ` (the reference ${reference.accepted ? 'accepts' : 'refuses'}: ${DIFFERENCES[name]})` : ''}`, async () => {
      const bytes = new Uint8Array(readFileSync(new URL(file, dir)));
      const readers = [
        () => readSafetensors(bytes),
        () => openSafetensors(new URL(file, dir).pathname).close(),
        () => openSafetensorsBlob(new Blob([bytes]), file),
      ];
      for (const read of readers) {
        let error: unknown;
        try {
          await read();
        } catch (e) {
          error = e;
        }
        if (expected) expect(error, String(error)).toBeUndefined();
        else expect(error, `the reference refused it: ${reference.error}`).toBeInstanceOf(FormatError);
      }
    });
  }
  it('names equal to Object.prototype members are ordinary names', () => {
    for (const name of ['proto-name', 'constructor-name', 'proto-prefixed-name']) {
      const { tensors } = readSafetensors(new Uint8Array(readFileSync(new URL(`${name}.safetensors`, dir))));
      const [key] = Object.keys(tensors);
      expect(Object.getPrototypeOf(tensors)).toBeNull();
      expect(Array.from(tensors[key].data)).toEqual([1, 2]);
    }
    const lazy = openSafetensors(new URL('baseline.safetensors', dir).pathname);
    expect(() => lazy.read('constructor')).toThrow('openSafetensors: no such tensor; expected one of x, got constructor');
    expect(() => lazy.read('toString')).toThrow(FormatError);
    lazy.close();
  });
});
