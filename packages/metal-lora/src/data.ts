import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fsCall } from '@metal-lora/adapter-io/node';
import { FormatError } from '@metal-lora/tensor';

/**
 * Reads texts in mlx-lm's format: a `.jsonl` file, or a directory with `train.jsonl` and
 * `valid.jsonl`, one `{"text": "..."}` object per line.
 */
export function readJsonl(path: string): string[] {
  if (!existsSync(path)) throw new FormatError('data', 'data file not found', { key: path }, 'a .jsonl file', 'nothing');
  const lines = fsCall('data', path, () => readFileSync(path, 'utf8')).split('\n');
  const texts: string[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch {
      throw new FormatError('data', `line ${i + 1} of ${path} is not JSON`, { key: `${path}:${i + 1}` }, '{"text": "..."}', line.slice(0, 40));
    }
    const text = row !== null && typeof row === 'object' && !Array.isArray(row) ? (row as { text?: unknown }).text : undefined;
    if (typeof text !== 'string')
      throw new FormatError('data', `line ${i + 1} of ${path} has no "text" string`, { key: `${path}:${i + 1}` }, '{"text": "..."}', line.slice(0, 40));
    if (text.length === 0) throw new FormatError('data', `line ${i + 1} of ${path} has an empty text`, { key: `${path}:${i + 1}` }, 'a non-empty "text"', '""');
    texts.push(text);
  });
  if (texts.length === 0) throw new FormatError('data', `${path} holds no texts`, { key: path }, 'at least one {"text": ...} line', 'none');
  return texts;
}

export function readDataset(path: string): { train: string[]; valid: string[] } {
  if (existsSync(path) && statSync(path).isDirectory()) {
    const train = readJsonl(join(path, 'train.jsonl'));
    const validPath = join(path, 'valid.jsonl');
    return { train, valid: existsSync(validPath) ? readJsonl(validPath) : train.slice(-Math.max(1, Math.floor(train.length / 10))) };
  }
  const texts = readJsonl(path);
  if (texts.length < 2)
    throw new FormatError(
      'data',
      `${path} holds ${texts.length} text, too few to keep one for validation`,
      { key: path },
      'at least 2 texts, or a folder with train.jsonl and valid.jsonl',
      String(texts.length),
    );
  const cut = Math.max(1, Math.floor(texts.length * 0.9));
  return { train: texts.slice(0, cut), valid: texts.slice(cut) };
}

export { batchOf } from './batches';
