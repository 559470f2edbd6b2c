/**
 * Fine-tuning data from files (Node): a folder with `train.jsonl`, `valid.jsonl` and `test.jsonl`,
 * or one `.jsonl` file. The formats, checks and tokenization are `dataset.ts`'s (also what a
 * browser uses, through `datasetFromJsonl`).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { fsCall } from '@metal-lora/adapter-io/node';
import { type Dataset, type DatasetOptions, dataError, heldOutStart, parseJsonl, type Row, type SplitName, tokenizeSplit } from './dataset';
import type { TextTokenizer } from './tokenizer';

/** The objects of a `.jsonl` file; invalid JSON, a line that is not an object, or no lines at all stop with `file:line`. */
export function readJsonlRows(path: string): Row[] {
  if (!existsSync(path)) throw dataError(path, 'file not found', 'a .jsonl file', 'nothing');
  if (statSync(path).isDirectory()) throw dataError(path, 'is a folder', 'a .jsonl file', 'a folder');
  return parseJsonl(
    fsCall('data', path, () => readFileSync(path, 'utf8')),
    path,
  );
}

/**
 * Reads and tokenizes a dataset: a folder with `train.jsonl`, `valid.jsonl` (without one, the last
 * tenth of train) and `test.jsonl`, or one `.jsonl` file (90% train, 10% valid). Every problem in
 * the data stops here with `file:line`, before any training starts.
 */
export function loadDataset(path: string, tokenizer: TextTokenizer, options: DatasetOptions = {}): Dataset {
  const wanted = new Set<SplitName>(options.splits ?? ['train', 'valid']);
  // The format of a file is read from its first line, also when a part of it is held out.
  const split = (name: SplitName, file: string, rows: Row[], whole = rows) => tokenizeSplit(name, file, rows, tokenizer, options, whole);
  if (!existsSync(path)) throw dataError(path, 'not found', 'a folder with train.jsonl / valid.jsonl, or a .jsonl file', 'nothing');
  const out: Dataset = {};
  if (statSync(path).isDirectory()) {
    const file = (name: SplitName) => join(path, `${name}.jsonl`);
    for (const name of wanted) {
      if (existsSync(file(name)) || name === 'valid') continue;
      throw dataError(
        file(name),
        `no ${name} split`,
        `${name}.jsonl in ${path}`,
        `${
          [...['train', 'valid', 'test']]
            .filter((s) => existsSync(file(s as SplitName)))
            .map((s) => `${s}.jsonl`)
            .join(', ') || 'no .jsonl files'
        }`,
      );
    }
    let trainRows: Row[] | undefined;
    let allTrain: Row[] | undefined;
    if (wanted.has('train') || (wanted.has('valid') && !existsSync(file('valid')))) allTrain = trainRows = readJsonlRows(file('train'));
    if (wanted.has('valid')) {
      if (existsSync(file('valid'))) out.valid = split('valid', file('valid'), readJsonlRows(file('valid')));
      else {
        const rows = trainRows as Row[];
        if (rows.length < 2)
          throw dataError(
            file('train'),
            'without valid.jsonl, train.jsonl needs at least 2 examples (the last tenth is held out)',
            '≥ 2 lines',
            String(rows.length),
          );
        const cut = heldOutStart(rows.length);
        out.valid = split('valid', file('train'), rows.slice(cut), allTrain);
        trainRows = rows.slice(0, cut);
      }
    }
    if (wanted.has('train')) out.train = split('train', file('train'), trainRows as Row[], allTrain);
    if (wanted.has('test')) out.test = split('test', file('test'), readJsonlRows(file('test')));
    return out;
  }
  const rows = readJsonlRows(path);
  if (wanted.has('test')) throw dataError(path, 'one .jsonl file has no test split', `a folder with test.jsonl`, basename(path));
  if (rows.length < 2)
    throw dataError(
      path,
      `holds ${rows.length} example, too few to keep one for validation`,
      'at least 2 examples, or a folder with train.jsonl and valid.jsonl',
      String(rows.length),
    );
  const cut = heldOutStart(rows.length);
  if (wanted.has('train')) out.train = split('train', path, rows.slice(0, cut), rows);
  if (wanted.has('valid')) out.valid = split('valid', path, rows.slice(cut), rows);
  return out;
}
