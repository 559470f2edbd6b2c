/**
 * Fine-tuning data in mlx-lm's formats, tokenized for training: `train.jsonl`, `valid.jsonl` and
 * `test.jsonl` in a folder (or one `.jsonl`, split 90/10 into train and valid), one JSON object per
 * line, each dataset's format detected from its keys:
 * - **chat**: `{"messages": [{"role": ..., "content": ...}, ...], "tools"?: [...]}`, rendered with the
 *   model's chat template;
 * - **completions**: `{"prompt": ..., "completion": ...}`, a user turn and an assistant turn through
 *   the chat template (or the prompt followed by the completion and EOS without one);
 * - **text**: `{"text": ...}`, with EOS appended where the tokenizer has one.
 *
 * With `maskPrompt`, only assistant / completion tokens count in the loss: every assistant turn of a
 * conversation, found by rendering the conversation up to each turn with the template.
 */
import { FormatError, ValueError } from '@metal-lora/tensor';
import { type ChatMessage, HFTokenizer } from './hf-tokenizer';
import type { TextTokenizer } from './tokenizer';

export type DataFormat = 'chat' | 'completions' | 'text';
export type SplitName = 'train' | 'valid' | 'test';

/** One tokenized example: its ids and, per id, whether predicting it counts in the loss. */
export interface Example {
  ids: Int32Array;
  /** 1 where the token is a target the loss counts (`weights[0]` is never a target). */
  weights: Uint8Array;
}

export interface DatasetSplit {
  name: SplitName;
  /** Where it came from (a file path, or a description for data given in memory). */
  source: string;
  format: DataFormat;
  examples: Example[];
  /** Examples cut to `maxSeqLength + 1` tokens. */
  truncated: number;
  /** Examples left out, with why (too short, nothing left to train on after masking). */
  skipped: { count: number; reason: string }[];
  /** Conversations whose template renders earlier turns differently once later ones follow: only their last assistant turn is trained (as mlx-lm). */
  lastTurnOnly: number;
}

export interface Dataset {
  train?: DatasetSplit;
  valid?: DatasetSplit;
  test?: DatasetSplit;
}

/** Key names of the formats (mlx-lm's `--prompt-feature` and friends). */
export interface DataFeatures {
  text?: string;
  prompt?: string;
  completion?: string;
  chat?: string;
}

export interface DatasetOptions {
  /** Loss only on assistant / completion tokens (default false). */
  maskPrompt?: boolean;
  /** Examples longer than this many tokens (plus the last target) are truncated and counted. Default 2048, as mlx-lm. */
  maxSeqLength?: number;
  features?: DataFeatures;
  /** Which splits to read (default train and valid; test is read only when asked for). */
  splits?: readonly SplitName[];
}

/** Roles a chat example may use. */
const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool', 'ipython', 'function']);

/** A line of a `.jsonl` file: its number (1-based) and its object. */
export interface Row {
  line: number;
  value: Record<string, unknown>;
}

function preview(text: string): string {
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

export function dataError(where: string, problem: string, expected?: string, got?: string): FormatError {
  return new FormatError('data', `${where}: ${problem}`, { key: where }, expected, got);
}

/** The objects of `.jsonl` text from `source` (a path, or a name for data given in memory); invalid JSON, a line that is not an object, or no lines at all stop with `source:line`. */
export function parseJsonl(text: string, source: string): Row[] {
  const rows: Row[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === '') continue;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (error) {
      throw dataError(`${source}:${i + 1}`, `not valid JSON (${(error as Error).message})`, 'one JSON object per line', preview(line));
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw dataError(`${source}:${i + 1}`, 'not a JSON object', '{"text": ...}, {"prompt": ..., "completion": ...} or {"messages": [...]}', preview(line));
    rows.push({ line: i + 1, value: value as Record<string, unknown> });
  }
  if (rows.length === 0) throw dataError(source, 'holds no examples', 'one JSON object per line', 'an empty file');
  return rows;
}

function featureNames(options: DatasetOptions): Required<DataFeatures> {
  const given = Object.fromEntries(Object.entries(options.features ?? {}).filter(([, v]) => v !== undefined));
  return { text: 'text', prompt: 'prompt', completion: 'completion', chat: 'messages', ...given };
}

/** The format of a dataset, from its first row's keys; every other row must have the same keys. */
function detectFormat(path: string, rows: Row[], f: Required<DataFeatures>): DataFormat {
  const first = rows[0];
  const has = (k: string) => Object.hasOwn(first.value, k);
  const format: DataFormat | undefined = has(f.chat) ? 'chat' : has(f.prompt) && has(f.completion) ? 'completions' : has(f.text) ? 'text' : undefined;
  if (!format)
    throw dataError(
      `${path}:${first.line}`,
      'the format is not recognized from its keys',
      `"${f.chat}" (chat), "${f.prompt}" and "${f.completion}" (completions) or "${f.text}" (text)`,
      `keys ${Object.keys(first.value).join(', ') || 'none'}`,
    );
  return format;
}

function stringField(where: string, row: Record<string, unknown>, key: string, format: DataFormat): string {
  const v = row[key];
  if (v === undefined) throw dataError(where, `missing "${key}" (the file is ${format} data, from its first line)`, `a "${key}" string`, 'no such key');
  if (typeof v !== 'string') throw dataError(where, `"${key}" is not a string`, 'a string', JSON.stringify(v).slice(0, 40));
  if (v === '' && format === 'text') throw dataError(where, `"${key}" is empty`, 'a non-empty text', '""');
  return v;
}

function chatMessages(where: string, row: Record<string, unknown>, key: string): ChatMessage[] {
  const v = row[key];
  if (v === undefined) throw dataError(where, `missing "${key}" (the file is chat data, from its first line)`, `a "${key}" list`, 'no such key');
  if (!Array.isArray(v) || v.length === 0)
    throw dataError(where, `"${key}" is not a non-empty list of messages`, '[{"role": ..., "content": ...}, ...]', JSON.stringify(v).slice(0, 40));
  return v.map((m, i) => {
    if (m === null || typeof m !== 'object' || Array.isArray(m))
      throw dataError(where, `message ${i} is not an object`, '{"role": ..., "content": ...}', JSON.stringify(m).slice(0, 40));
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || !ROLES.has(role)) throw dataError(where, `message ${i} has an unknown role`, [...ROLES].join(', '), JSON.stringify(role));
    const toolCalls = (m as Record<string, unknown>).tool_calls;
    if (typeof content !== 'string' && !((content === null || content === undefined) && Array.isArray(toolCalls)))
      throw dataError(
        where,
        `message ${i} (${role}) has no text content`,
        'a "content" string (or "tool_calls" with null content)',
        JSON.stringify(content)?.slice(0, 40) ?? 'none',
      );
    return { ...(m as Record<string, unknown>), role, content: typeof content === 'string' ? content : '' } as ChatMessage;
  });
}

function eosId(tokenizer: TextTokenizer): number | undefined {
  return tokenizer instanceof HFTokenizer && tokenizer.eosToken !== undefined ? tokenizer.tokenId(tokenizer.eosToken) : undefined;
}

function allWeights(ids: number[]): Example {
  const weights = new Uint8Array(ids.length).fill(1);
  return { ids: Int32Array.from(ids), weights };
}

/** How many leading entries two id lists share. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * The ids of `text` (tokenized whole, as mlx-lm does) with the tokens of the character spans
 * `[start, end)` marked as trained. A span boundary becomes the number of leading tokens that the
 * text before it shares with the whole text's tokens: exact where the boundary falls between
 * tokens (template markers), and never past the boundary where a token straddles it.
 */
function markSpans(tokenizer: TextTokenizer, text: string, spans: [number, number][]): Example {
  const ids = tokenizer.encode(text, { addSpecialTokens: false });
  const weights = new Uint8Array(ids.length);
  const at = (c: number) => (c >= text.length ? ids.length : commonPrefix(tokenizer.encode(text.slice(0, c), { addSpecialTokens: false }), ids));
  for (const [start, end] of spans) weights.fill(1, at(start), at(end));
  return { ids: Int32Array.from(ids), weights };
}

/**
 * A conversation's tokens with every assistant turn marked: the template renders the messages up to
 * each assistant turn (with the generation prompt) and through it; the text between is the turn.
 * Where the template is not prefix-consistent (it renders earlier turns differently once later
 * ones follow), only the last turn is marked, as mlx-lm does: everything after the longest common
 * prefix of the conversation and its last prompt. `render` errors name the example (`where`).
 */
function maskedConversation(
  tokenizer: HFTokenizer,
  messages: ChatMessage[],
  tools: unknown[] | undefined,
  where: string,
): { example: Example; lastOnly: boolean } {
  const render = (upto: number, addGenerationPrompt: boolean) => renderChat(tokenizer, messages.slice(0, upto), { addGenerationPrompt, tools }, where);
  const full = render(messages.length, false);
  const turns = messages.flatMap((m, i) => (m.role === 'assistant' ? [i] : []));
  const spans: [number, number][] = [];
  let done = 0;
  for (const a of turns) {
    const before = render(a, true);
    const through = render(a + 1, false);
    if (before.length < done || !through.startsWith(before) || !full.startsWith(through)) {
      let shared = 0;
      const prompt = render(turns[turns.length - 1], true);
      while (shared < prompt.length && shared < full.length && prompt[shared] === full[shared]) shared++;
      return { example: markSpans(tokenizer, full, [[shared, full.length]]), lastOnly: true };
    }
    spans.push([before.length, through.length]);
    done = through.length;
  }
  return { example: markSpans(tokenizer, full, spans), lastOnly: false };
}

/** `applyChatTemplate` with the example's `file:line` on a template error (e.g. a template's own `raise_exception`). */
function renderChat(tokenizer: HFTokenizer, messages: ChatMessage[], options: { addGenerationPrompt?: boolean; tools?: unknown[] }, where: string): string {
  try {
    return tokenizer.applyChatTemplate(messages, options);
  } catch (error) {
    throw dataError(where, (error as Error).message.replace(/^applyChatTemplate: /, ''));
  }
}

/**
 * Tokenizes the rows of one split. Chat and completions data need a tokenizer with a chat
 * template (completions without one: the prompt, then the completion and EOS).
 */
function tokenizeRows(name: SplitName, source: string, rows: Row[], tokenizer: TextTokenizer, options: DatasetOptions, format: DataFormat): DatasetSplit {
  const f = featureNames(options);
  const templated = tokenizer instanceof HFTokenizer && tokenizer.hasChatTemplate;
  if (format === 'chat' && !templated)
    throw dataError(
      `${source}:${rows[0].line}`,
      'chat data needs a model with a chat template',
      'chat_template.jinja or a chat_template in tokenizer_config.json',
      'none',
    );
  const mask = options.maskPrompt === true;
  if (mask && format === 'text')
    throw new ValueError('data', `maskPrompt needs chat or completions data (${source} is text data, which has no prompt)`, 'chat or completions', 'text');
  const maxSeqLength = options.maxSeqLength ?? 2048;
  if (!Number.isSafeInteger(maxSeqLength) || maxSeqLength < 1)
    throw new ValueError('data', 'maxSeqLength must be a positive integer', 'an integer ≥ 1', String(maxSeqLength));
  const eos = eosId(tokenizer);
  const examples: Example[] = [];
  let truncated = 0;
  let tooShort = 0;
  let nothingToTrain = 0;
  let lastTurnOnly = 0;
  for (const { line, value } of rows) {
    const where = `${source}:${line}`;
    let example: Example;
    if (format === 'text') {
      const ids = tokenizer.encode(stringField(where, value, f.text, format));
      if (eos !== undefined && ids[ids.length - 1] !== eos) ids.push(eos);
      example = allWeights(ids);
    } else if (format === 'completions') {
      const prompt = stringField(where, value, f.prompt, format);
      const completion = stringField(where, value, f.completion, format);
      if (templated) {
        const conversation: ChatMessage[] = [
          { role: 'user', content: prompt },
          { role: 'assistant', content: completion },
        ];
        example = mask
          ? maskedConversation(tokenizer as HFTokenizer, conversation, undefined, where).example
          : allWeights(tokenizer.encode(renderChat(tokenizer as HFTokenizer, conversation, {}, where), { addSpecialTokens: false }));
      } else {
        const head = tokenizer.encode(prompt);
        const tail = tokenizer.encode(completion, { addSpecialTokens: false });
        if (eos !== undefined) tail.push(eos);
        example = { ids: Int32Array.from([...head, ...tail]), weights: Uint8Array.from([...head.map(() => (mask ? 0 : 1)), ...tail.map(() => 1)]) };
      }
    } else {
      const messages = chatMessages(where, value, f.chat);
      const toolsValue = value.tools;
      if (toolsValue !== undefined && toolsValue !== null && !Array.isArray(toolsValue))
        throw dataError(where, '"tools" is not a list', 'a list of tool schemas', JSON.stringify(toolsValue).slice(0, 40));
      const tools = Array.isArray(toolsValue) ? toolsValue : undefined;
      if (mask && !messages.some((m) => m.role === 'assistant'))
        throw dataError(where, 'the conversation has no assistant message to train on', 'at least one {"role": "assistant"} message', 'none');
      const tok = tokenizer as HFTokenizer;
      if (mask) {
        const masked = maskedConversation(tok, messages, tools, where);
        example = masked.example;
        if (masked.lastOnly) lastTurnOnly++;
      } else example = allWeights(tok.encode(renderChat(tok, messages, { tools }, where), { addSpecialTokens: false }));
    }
    if (example.ids.length > maxSeqLength + 1) {
      truncated++;
      example = { ids: example.ids.slice(0, maxSeqLength + 1), weights: example.weights.slice(0, maxSeqLength + 1) };
    }
    example.weights[0] = 0;
    if (example.ids.length < 2) tooShort++;
    else if (!example.weights.some((w) => w === 1)) nothingToTrain++;
    else examples.push(example);
  }
  const skipped = [
    { count: tooShort, reason: 'fewer than 2 tokens' },
    { count: nothingToTrain, reason: `no trained tokens within ${maxSeqLength} tokens` },
  ].filter((s) => s.count > 0);
  if (examples.length === 0)
    throw dataError(source, `no usable examples (${skipped.map((s) => `${s.count} with ${s.reason}`).join(', ')})`, 'at least one example', '0');
  return { name, source, format, examples, truncated, skipped, lastTurnOnly };
}

/** One split tokenized: `rows` of `source`, the format read from the first row of `whole` (the file it was cut from). */
export function tokenizeSplit(
  name: SplitName,
  source: string,
  rows: Row[],
  tokenizer: TextTokenizer,
  options: DatasetOptions = {},
  whole: Row[] = rows,
): DatasetSplit {
  return tokenizeRows(name, source, rows, tokenizer, options, detectFormat(source, whole, featureNames(options)));
}

/** Where validation starts in `count` rows (≥ 2) of train when no valid split is given: the last tenth, at least one row. */
export function heldOutStart(count: number): number {
  return Math.max(1, Math.floor(count * 0.9));
}

/** The rows of train split into train and valid as mlx-lm does without a valid file: the last tenth held out (at least one row each). */
export function holdOutValid(rows: Row[], source: string): { train: Row[]; valid: Row[] } {
  if (rows.length < 2)
    throw dataError(
      source,
      `holds ${rows.length} example, too few to keep one for validation`,
      'at least 2 examples, or a valid split of its own',
      String(rows.length),
    );
  const cut = heldOutStart(rows.length);
  return { train: rows.slice(0, cut), valid: rows.slice(cut) };
}

/**
 * A dataset from `.jsonl` text held in memory (a browser's picked or pasted files), with the same
 * formats, checks and tokenization as `loadDataset`: `train` and optionally `valid` and `test`;
 * without `valid`, the last tenth of train is held out. `names` label the splits in messages
 * (default `train.jsonl`, …).
 */
export function datasetFromJsonl(
  texts: { train: string; valid?: string; test?: string },
  tokenizer: TextTokenizer,
  options: DatasetOptions = {},
  names: { train?: string; valid?: string; test?: string } = {},
): Dataset {
  const source = (s: SplitName) => names[s] ?? `${s}.jsonl`;
  const all = parseJsonl(texts.train, source('train'));
  const out: Dataset = {};
  let trainRows = all;
  if (texts.valid !== undefined) out.valid = tokenizeSplit('valid', source('valid'), parseJsonl(texts.valid, source('valid')), tokenizer, options);
  else {
    const held = holdOutValid(all, source('train'));
    out.valid = tokenizeSplit('valid', source('train'), held.valid, tokenizer, options, all);
    trainRows = held.train;
  }
  out.train = tokenizeSplit('train', source('train'), trainRows, tokenizer, options, all);
  if (texts.test !== undefined) out.test = tokenizeSplit('test', source('test'), parseJsonl(texts.test, source('test')), tokenizer, options);
  return out;
}

/** A one-line account of a split: examples, tokens, trained tokens, and whatever was truncated or skipped. */
export function describeSplit(split: DatasetSplit): string {
  let tokens = 0;
  let trained = 0;
  for (const e of split.examples) {
    tokens += e.ids.length;
    for (const w of e.weights) trained += w;
  }
  const notes = [
    split.truncated ? `${split.truncated} truncated to the maximum length` : '',
    ...split.skipped.map((s) => `${s.count} skipped (${s.reason})`),
    split.lastTurnOnly
      ? `${split.lastTurnOnly} trained on the last assistant turn only (the chat template renders earlier turns differently once later ones follow)`
      : '',
  ].filter(Boolean);
  return `${split.name}: ${split.examples.length} ${split.format} examples, ${tokens} tokens (${trained} trained)${notes.length ? `; ${notes.join('; ')}` : ''}`;
}
