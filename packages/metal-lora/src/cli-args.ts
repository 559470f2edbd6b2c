/**
 * The CLI's flags: one table that both the parser (`node:util` `parseArgs`, strict) and the help
 * text are made from, so every flag the parser takes is documented and nothing else is accepted.
 */
import { parseArgs } from 'node:util';
import { ValueError } from '@metal-lora/tensor';

/** A command line the CLI cannot act on: unknown or misspelt flags, bad values, a missing flag. */
export class UsageError extends ValueError {
  constructor(problem: string, expected?: string, got?: string) {
    super('metal-lora', problem, expected, got);
  }
}

export type Command = 'train' | 'fuse' | 'convert' | 'generate' | 'chat';

interface FlagSpec {
  /** How the value is read: a boolean switch, text, a number, a positive integer, or an integer ≥ `range.min`. */
  kind: 'switch' | 'text' | 'number' | 'count' | 'integer';
  /** Placeholder for the value in the help text. */
  value?: string;
  /** Allowed values, for text flags with a fixed set. */
  choices?: readonly string[];
  /** Bounds for numbers: `[min, max]`, with `open` making them exclusive (counts: at most `max`). */
  range?: { min?: number; max?: number; minOpen?: boolean; maxOpen?: boolean };
  commands: readonly Command[];
  help: string;
  /** The default as shown in the help (the code applies it). */
  fallback?: string;
  /** A one-letter alias (`-c`). */
  short?: string;
}

const ALL = ['train', 'fuse', 'convert', 'generate', 'chat'] as const;
const TRAIN = ['train'] as const;
/** Commands that generate text. */
const GEN = ['generate', 'chat'] as const;

/**
 * Every flag of the CLI. Training flags carry mlx-lm's names and meanings (`mlx_lm.lora`); a YAML
 * config file (`-c`) takes the same names with underscores.
 */
export const FLAGS = {
  model: {
    kind: 'text',
    value: 'DIR',
    commands: ALL,
    help: 'a Hugging Face / MLX model folder: Llama, Mistral, Qwen2/3, Gemma 3, Phi-3 (config.json, safetensors, tokenizer.json)',
    fallback: 'the bundled base model',
  },
  config: {
    kind: 'text',
    value: 'FILE',
    short: 'c',
    commands: TRAIN,
    help: "a YAML file of these options with mlx-lm's names (flags given on the command line win)",
  },
  data: {
    kind: 'text',
    value: 'PATH',
    commands: TRAIN,
    help: 'a folder with train.jsonl, valid.jsonl, test.jsonl (chat, completions or text lines), or one .jsonl (split 90/10)',
    fallback: "the bundled ship's log",
  },
  train: { kind: 'switch', commands: TRAIN, help: 'train (the default unless --test is given without --train or --resume)' },
  test: { kind: 'switch', commands: TRAIN, help: 'report the test loss and perplexity of test.jsonl (after training, or of --adapter-path alone)' },
  'fine-tune-type': {
    kind: 'text',
    value: 'TYPE',
    choices: ['lora', 'dora', 'full'],
    commands: TRAIN,
    help: 'what is trained (dora is not implemented yet)',
    fallback: 'lora',
  },
  'num-layers': {
    kind: 'integer',
    value: 'N',
    range: { min: -1, max: 4096 },
    commands: TRAIN,
    help: 'train the last N blocks (-1: all)',
    fallback: '16, or all the model has',
  },
  rank: { kind: 'count', value: 'N', range: { max: 4096 }, commands: TRAIN, help: 'LoRA rank (lora_parameters.rank)', fallback: '8' },
  scale: {
    kind: 'number',
    value: 'S',
    range: { min: 0, minOpen: true, max: 1e6 },
    commands: TRAIN,
    help: 'LoRA scale, alpha / rank (lora_parameters.scale)',
    fallback: '20',
  },
  dropout: {
    kind: 'number',
    value: 'P',
    range: { min: 0, max: 1, maxOpen: true },
    commands: TRAIN,
    help: 'dropout on the LoRA input (lora_parameters.dropout)',
    fallback: '0',
  },
  keys: {
    kind: 'text',
    value: 'A,B',
    commands: TRAIN,
    help: 'block-relative layers to adapt, e.g. self_attn.q_proj,self_attn.v_proj (lora_parameters.keys)',
    fallback: 'all linear layers',
  },
  'batch-size': { kind: 'count', value: 'N', range: { max: 4096 }, commands: TRAIN, help: 'examples per batch', fallback: '4' },
  iters: { kind: 'count', value: 'N', range: { max: 10_000_000 }, commands: TRAIN, help: 'optimizer steps', fallback: '1000' },
  'learning-rate': {
    kind: 'number',
    value: 'LR',
    range: { min: 0, minOpen: true, max: 1 },
    commands: TRAIN,
    help: 'learning rate (without an lr_schedule: constant)',
    fallback: '1e-5',
  },
  optimizer: {
    kind: 'text',
    value: 'NAME',
    choices: ['adam', 'adamw', 'sgd'],
    commands: TRAIN,
    help: 'optimizer (optimizer_config in the YAML sets its options)',
    fallback: 'adam',
  },
  'max-seq-length': {
    kind: 'count',
    value: 'N',
    range: { max: 1 << 20 },
    commands: TRAIN,
    help: 'longer examples are truncated (and counted)',
    fallback: '2048',
  },
  'mask-prompt': { kind: 'switch', commands: TRAIN, help: 'loss only on assistant / completion tokens (every assistant turn of a chat)' },
  pack: { kind: 'switch', commands: TRAIN, help: 'lay examples end to end in rows of --max-seq-length with per-document attention (no padding)' },
  'grad-accumulation-steps': {
    kind: 'count',
    value: 'N',
    range: { max: 65536 },
    commands: TRAIN,
    help: 'batches per optimizer step, gradients averaged',
    fallback: '1',
  },
  'grad-checkpoint': {
    kind: 'switch',
    commands: TRAIN,
    help: 'recompute each block in backward instead of keeping its activations (less memory, ~1 more forward)',
  },
  'fused-attention': {
    kind: 'switch',
    commands: TRAIN,
    help: 'attention as one fused op, no [batch, heads, T, T] scores held (the default on webgpu; this forces it on the CPU too)',
  },
  'composed-attention': {
    kind: 'switch',
    commands: TRAIN,
    help: 'attention as score and value products around a softmax (the default on the CPU backend)',
  },
  'max-grad-norm': {
    kind: 'number',
    value: 'N',
    range: { min: 0, minOpen: true, max: 1e12 },
    commands: TRAIN,
    help: 'clip gradients to this global L2 norm',
    fallback: 'no clipping',
  },
  'val-batches': {
    kind: 'integer',
    value: 'N',
    range: { min: -1, max: 1e9 },
    commands: TRAIN,
    help: 'validation batches per evaluation (-1: all)',
    fallback: '25',
  },
  'test-batches': { kind: 'integer', value: 'N', range: { min: -1, max: 1e9 }, commands: TRAIN, help: 'test batches (-1: all)', fallback: '500' },
  'steps-per-report': { kind: 'count', value: 'N', range: { max: 1e9 }, commands: TRAIN, help: 'steps between training reports', fallback: '10' },
  'steps-per-eval': { kind: 'count', value: 'N', range: { max: 1e9 }, commands: TRAIN, help: 'steps between validations', fallback: '200' },
  'save-every': {
    kind: 'count',
    value: 'N',
    range: { max: 1e9 },
    commands: TRAIN,
    help: 'steps between checkpoints (0000100_adapters.safetensors and the training state)',
    fallback: '100',
  },
  'adapter-path': {
    kind: 'text',
    value: 'DIR',
    commands: ALL,
    help: 'where the adapter and checkpoints are saved (train) or read (fuse, generate, chat: applied unmerged)',
    fallback: 'adapters for train; none for generate and chat',
  },
  'resume-adapter-file': {
    kind: 'text',
    value: 'FILE',
    commands: TRAIN,
    help: 'start from saved adapter weights (a .safetensors file or an adapter folder), as mlx-lm',
  },
  resume: { kind: 'switch', commands: TRAIN, help: 'continue the run checkpointed in --adapter-path: weights, optimizer state and step (the same loss curve)' },
  format: { kind: 'text', value: 'FMT', choices: ['mlx', 'peft'], commands: TRAIN, help: 'adapter format to save', fallback: 'mlx' },
  'metrics-file': { kind: 'text', value: 'FILE', commands: TRAIN, help: 'append each report, evaluation and checkpoint as a JSON line' },
  'text-feature': { kind: 'text', value: 'KEY', commands: TRAIN, help: 'key of text data', fallback: 'text' },
  'prompt-feature': { kind: 'text', value: 'KEY', commands: TRAIN, help: 'key of the prompt in completions data', fallback: 'prompt' },
  'completion-feature': { kind: 'text', value: 'KEY', commands: TRAIN, help: 'key of the completion in completions data', fallback: 'completion' },
  'chat-feature': { kind: 'text', value: 'KEY', commands: TRAIN, help: 'key of the messages in chat data', fallback: 'messages' },
  'save-path': { kind: 'text', value: 'DIR', commands: ['fuse', 'convert'], help: 'where the fused or converted model is written' },
  quantize: {
    kind: 'switch',
    short: 'q',
    commands: ['convert'],
    help: "quantize the model's Linear and Embedding layers (MLX affine mode, as mlx_lm.convert -q)",
  },
  'q-bits': { kind: 'integer', value: 'B', range: { min: 2, max: 8 }, commands: ['convert'], help: 'bits per weight: 2, 3, 4, 5, 6 or 8', fallback: '4' },
  'q-group-size': {
    kind: 'integer',
    value: 'G',
    range: { min: 32, max: 128 },
    commands: ['convert'],
    help: 'weights per scale and bias: 32, 64 or 128',
    fallback: '64',
  },
  dequantize: {
    kind: 'switch',
    commands: ['fuse', 'convert'],
    help: 'write a quantized model as float weights (fuse: instead of re-quantizing the fused layers)',
  },
  dtype: {
    kind: 'text',
    value: 'TYPE',
    choices: ['float32', 'float16'],
    commands: [...TRAIN, ...GEN],
    help: 'hold the model in float32, or in float16 (half the memory; WebGPU needs shader-f16)',
    fallback: 'float32',
  },
  backend: {
    kind: 'text',
    value: 'NAME',
    choices: ['auto', 'webgpu', 'cpu'],
    commands: ALL,
    help: 'compute backend (auto: WebGPU on a hardware adapter, else the CPU)',
    fallback: 'auto',
  },
  quick: { kind: 'switch', commands: TRAIN, help: 'a reduced run: 12 steps, one validation batch (defaults that flags still override)' },
  prompt: { kind: 'text', value: 'TEXT', commands: ['generate'], help: "the prompt ('-' reads it from stdin)" },
  'system-prompt': { kind: 'text', value: 'TEXT', commands: GEN, help: 'a system message before the conversation (chat template only)' },
  'ignore-chat-template': { kind: 'switch', commands: ['generate'], help: 'encode the prompt as plain text even where the model has a chat template' },
  'max-tokens': { kind: 'count', value: 'N', range: { max: 1_000_000 }, commands: GEN, help: 'most tokens generated per reply', fallback: '256' },
  temp: { kind: 'number', value: 'T', range: { min: 0, max: 100 }, commands: GEN, help: 'sampling temperature (0: greedy)', fallback: '0' },
  'top-p': {
    kind: 'number',
    value: 'P',
    range: { min: 0, minOpen: true, max: 1 },
    commands: GEN,
    help: 'nucleus sampling: the likeliest tokens summing to P',
    fallback: '1',
  },
  'top-k': { kind: 'count', value: 'K', range: { max: 1 << 22 }, commands: GEN, help: 'sample among the K likeliest tokens', fallback: 'all' },
  'min-p': {
    kind: 'number',
    value: 'P',
    range: { min: 0, max: 1, maxOpen: true },
    commands: GEN,
    help: 'drop tokens below P × the likeliest one',
    fallback: '0',
  },
  'repetition-penalty': {
    kind: 'number',
    value: 'R',
    range: { min: 0, minOpen: true, max: 100 },
    commands: GEN,
    help: "penalty on tokens already seen (transformers' rule)",
    fallback: '1',
  },
  seed: {
    kind: 'integer',
    value: 'S',
    range: { min: 0, max: 2 ** 31 - 1 },
    commands: ALL,
    help: 'seed of the batch order, dropout and LoRA init (train) or of sampling',
    fallback: '0 (train); random (sampling)',
  },
  stop: { kind: 'text', value: 'TEXT', commands: GEN, help: 'a string that ends the reply' },
  help: { kind: 'switch', short: 'h', commands: ALL, help: 'print this help' },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;
export type Values = { [K in FlagName]?: (typeof FLAGS)[K]['kind'] extends 'switch' ? boolean : (typeof FLAGS)[K]['kind'] extends 'text' ? string : number };

/** The usage text, made from {@link FLAGS}. */
export function helpText(): string {
  const rows = Object.entries(FLAGS as Record<string, FlagSpec>).map(([name, spec]) => {
    const left = `--${name}${spec.short ? `, -${spec.short}` : ''}${spec.value ? ` ${spec.choices ? spec.choices.join('|') : spec.value}` : ''}`;
    const only = spec.commands.length === 1 ? ` [${spec.commands[0]} only]` : '';
    return `  ${left.padEnd(30)} ${spec.help}${spec.fallback ? ` (default: ${spec.fallback})` : ''}${only}`;
  });
  return [
    'usage: metal-lora [train] [flags]          fine-tune LoRA adapters (the embedded default without --model/--data)',
    '       metal-lora train -c config.yaml [flags]   mlx-lm option names in YAML; flags given here win',
    '       metal-lora fuse --model DIR --adapter-path DIR --save-path DIR [--dequantize]',
    '       metal-lora convert --model DIR --save-path DIR (-q [--q-bits 4] [--q-group-size 64] | --dequantize)',
    '       metal-lora generate [--model DIR] [--adapter-path DIR] --prompt TEXT [sampling flags]',
    '       metal-lora chat [--model DIR] [--adapter-path DIR] [sampling flags]   (q quits, r resets)',
    '',
    'flags (--name value or --name=value):',
    ...rows,
  ].join('\n');
}

/** Edit distance between two strings (for "did you mean"). */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** Earlier names of flags (this CLI's before it took mlx-lm's, and mlx-lm's own older ones). */
const RENAMED: Record<string, FlagName> = { lr: 'learning-rate', batch: 'batch-size', seq: 'max-seq-length', 'lora-layers': 'num-layers' };

/** The valid flag closest to `name` (underscores read as dashes, as mlx-lm users type them). */
export function closestFlag(name: string): FlagName {
  const wanted = name.replace(/_/g, '-').toLowerCase();
  if (Object.hasOwn(RENAMED, wanted)) return RENAMED[wanted];
  let best: FlagName = 'help';
  let bestDistance = Number.POSITIVE_INFINITY;
  for (const flag of Object.keys(FLAGS) as FlagName[]) {
    const d = flag.startsWith(wanted) || wanted.startsWith(flag) ? Math.abs(flag.length - wanted.length) * 0.5 : distance(wanted, flag);
    if (d < bestDistance) [best, bestDistance] = [flag, d];
  }
  return best;
}

/** A flag's value read and checked as the command line reads it (`UsageError` naming the flag when bad). */
export function readFlagValue(name: FlagName, raw: string): string | number {
  const spec: FlagSpec = FLAGS[name];
  if (spec.kind === 'text') {
    if (raw === '') throw new UsageError(`--${name} is empty`, `a ${spec.value ?? 'value'}`, "''");
    if (spec.choices && !spec.choices.includes(raw))
      throw new UsageError(`--${name} must be one of ${spec.choices.join(', ')}`, spec.choices.join(' or '), `'${raw}'`);
    return raw;
  }
  const v = raw.trim() === '' ? Number.NaN : Number(raw);
  if (spec.kind === 'integer') {
    const { min = 0, max = Number.MAX_SAFE_INTEGER } = spec.range ?? {};
    if (!Number.isSafeInteger(v) || v < min || v > max)
      throw new UsageError(`--${name} must be an integer in ${min}..${max}`, `an integer in ${min}..${max}`, `'${raw}'`);
    return v;
  }
  if (spec.kind === 'count') {
    const max = spec.range?.max ?? Number.MAX_SAFE_INTEGER;
    if (!Number.isSafeInteger(v) || v <= 0) throw new UsageError(`--${name} must be a positive integer`, 'an integer ≥ 1', `'${raw}'`);
    if (v > max) throw new UsageError(`--${name} is out of range`, `an integer in 1..${max}`, `'${raw}'`);
    return v;
  }
  if (!Number.isFinite(v)) throw new UsageError(`--${name} must be a finite number`, 'a number', `'${raw}'`);
  const r = spec.range ?? {};
  const low = r.min === undefined ? '' : `${r.minOpen ? '>' : '≥'} ${r.min}`;
  const high = r.max === undefined ? '' : `${r.maxOpen ? '<' : '≤'} ${r.max}`;
  const tooLow = r.min !== undefined && (r.minOpen ? v <= r.min : v < r.min);
  const tooHigh = r.max !== undefined && (r.maxOpen ? v >= r.max : v > r.max);
  if (tooLow || tooHigh) throw new UsageError(`--${name} is out of range`, `a number ${[low, high].filter(Boolean).join(' and ')}`, `'${raw}'`);
  return v;
}

/**
 * Parses the CLI's arguments. `train` is the default command; a leading `--` (as `pnpm start --
 * --help` passes it) is ignored. Throws {@link UsageError} naming the closest valid flag for an
 * unknown one.
 */
export function parseCommandLine(argv: readonly string[]): { command: Command; flags: Values } {
  const raw = argv[0] === '--' ? argv.slice(1) : [...argv];
  // A negative number after a numeric flag (`--num-layers -1`, as mlx-lm users write it) is its
  // value, not a flag: parseArgs would read it as one.
  const args: string[] = [];
  for (let i = 0; i < raw.length; i++) {
    const name = raw[i].startsWith('--') ? raw[i].slice(2) : '';
    const spec = Object.hasOwn(FLAGS, name) ? (FLAGS as Record<string, FlagSpec>)[name] : undefined;
    if (spec && spec.kind !== 'switch' && spec.kind !== 'text' && /^-\d|^-\.\d/.test(raw[i + 1] ?? '')) args.push(`${raw[i]}=${raw[++i]}`);
    else args.push(raw[i]);
  }
  const options = Object.fromEntries(
    Object.entries(FLAGS as Record<string, FlagSpec>).map(([name, spec]) => [
      name,
      { type: spec.kind === 'switch' ? 'boolean' : 'string', ...(spec.short ? { short: spec.short } : {}) },
    ]),
  ) as Record<string, { type: 'boolean' | 'string'; short?: string }>;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = (error as Error).message;
    const unknown = /Unknown option '(-{1,2})([^']*)'/.exec(message);
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && unknown) {
      const flag = unknown[2].split('=')[0];
      throw new UsageError(
        `unknown flag ${unknown[1]}${flag} (did you mean --${closestFlag(flag)}?)`,
        "a flag listed by 'metal-lora --help'",
        `${unknown[1]}${flag}`,
      );
    }
    const missing = /Option '(?:-\w, )?--([\w-]+)/.exec(message);
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && missing) {
      const name = missing[1] as FlagName;
      const spec: FlagSpec | undefined = FLAGS[name];
      if (spec?.kind === 'switch') throw new UsageError(`--${name} takes no value`, `--${name} alone`, `--${name}=…`);
      throw new UsageError(`--${name} needs a value`, `--${name} ${spec?.value ?? 'VALUE'}`, 'nothing');
    }
    throw new UsageError(message);
  }
  const positionals = parsed.positionals;
  let command: Command = 'train';
  if (positionals.length > 0 && (ALL as readonly string[]).includes(positionals[0])) command = positionals.shift() as Command;
  if (positionals.length > 0)
    throw new UsageError(
      `unexpected argument '${positionals[0]}'`,
      'train, fuse, convert, generate, chat or flags such as --iters 100',
      `'${positionals.join(' ')}'`,
    );
  const flags: Record<string, string | number | boolean> = {};
  for (const [name, raw] of Object.entries(parsed.values)) {
    const spec: FlagSpec = FLAGS[name as FlagName];
    if (!spec.commands.includes(command)) throw new UsageError(`--${name} does not apply to '${command}'`, `flags of '${command}' (see --help)`, `--${name}`);
    flags[name] = typeof raw === 'boolean' ? raw : readFlagValue(name as FlagName, raw as string);
  }
  return { command, flags: flags as Values };
}
