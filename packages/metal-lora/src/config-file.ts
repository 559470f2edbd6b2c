/**
 * `metal-lora train -c config.yaml`: mlx-lm's YAML training config (`mlx_lm.lora -c`), read with
 * `yaml`. Keys are the training flags with underscores (`learning_rate`, `batch_size`, ...), plus
 * the YAML-only `lora_parameters`, `lr_schedule` and `optimizer_config`. An unknown key is an error
 * naming the closest valid one; mlx-lm keys that mean nothing here are accepted only where ignoring
 * them cannot change the run.
 */
import { readFileSync } from 'node:fs';
import { fsCall } from '@metal-lora/adapter-io/node';
import { parse } from 'yaml';
import { closestFlag, FLAGS, type FlagName, readFlagValue, UsageError, type Values } from './cli-args';
import type { LrSchedule } from './training';

export interface ConfigFile {
  flags: Values;
  lrSchedule?: LrSchedule;
  /** Per optimizer name, its options (mlx-lm's `optimizer_config`). */
  optimizerConfig?: Record<string, Record<string, unknown>>;
}

/** mlx-lm keys accepted and not used: they manage MLX's memory or Python imports, or are written back by mlx-lm itself. */
const IGNORED = new Set(['clear_cache_threshold', 'trust_remote_code', 'config']);
/** Keys of flags that a config file cannot set. */
const CLI_ONLY = new Set<string>(['help', 'config', 'quick']);

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Reads a config file into flag values (not yet merged with the command line's). */
export function readConfigFile(path: string): ConfigFile {
  const text = fsCall('metal-lora', path, () => readFileSync(path, 'utf8'));
  let doc: unknown;
  try {
    doc = parse(text);
  } catch (error) {
    throw new UsageError(`${path} is not valid YAML (${(error as Error).message.split('\n')[0]})`, 'a YAML mapping of options', 'a parse error');
  }
  if (doc === null || doc === undefined) return { flags: {} };
  if (!isObject(doc)) throw new UsageError(`${path} is not a mapping of options`, 'key: value lines', Array.isArray(doc) ? 'a list' : typeof doc);
  const fail = (key: string, problem: string, expected: string, got: string) => new UsageError(`${path}: ${key}: ${problem}`, expected, got);
  const flags: Record<string, unknown> = {};
  const out: ConfigFile = { flags: flags as Values };
  const set = (key: string, name: FlagName, value: unknown) => {
    const spec = FLAGS[name] as { kind: string };
    if (spec.kind === 'switch') {
      if (typeof value !== 'boolean') throw fail(key, 'must be true or false', 'a boolean', JSON.stringify(value));
      flags[name] = value;
      return;
    }
    if (typeof value !== 'string' && typeof value !== 'number')
      throw fail(key, 'must be a single value', spec.kind === 'text' ? 'a string' : 'a number', JSON.stringify(value));
    try {
      flags[name] = readFlagValue(name, String(value));
    } catch (error) {
      const message = (error as Error).message.replace(/^metal-lora: /, '').replace(`--${name}`, 'the value');
      throw new UsageError(`${path}: ${key}: ${message}`);
    }
  };
  for (const [key, value] of Object.entries(doc)) {
    if (value === null) continue; // mlx-lm writes unset options as null
    if (IGNORED.has(key)) continue;
    if (key === 'lora_parameters') {
      if (!isObject(value)) throw fail(key, 'must be a mapping', '{rank, scale, dropout, keys}', JSON.stringify(value));
      for (const [sub, v] of Object.entries(value)) {
        if (v === null) continue;
        if (sub === 'alpha') throw fail(`${key}.alpha`, 'is not read (by mlx-lm either): the LoRA factor is scale', 'scale = alpha / rank', String(v));
        if (sub === 'keys') {
          if (!Array.isArray(v) || v.length === 0 || !v.every((k) => typeof k === 'string' && k !== ''))
            throw fail(`${key}.keys`, 'must be a list of block-relative layer names', '["self_attn.q_proj", "self_attn.v_proj"]', JSON.stringify(v));
          flags.keys = v.join(',');
        } else if (sub === 'rank' || sub === 'scale' || sub === 'dropout') set(`${key}.${sub}`, sub, v);
        else throw fail(`${key}.${sub}`, 'is not a LoRA parameter', 'rank, scale, dropout or keys', sub);
      }
      continue;
    }
    if (key === 'lr_schedule') {
      if (!isObject(value)) throw fail(key, 'must be a mapping', '{name, arguments, warmup, warmup_init}', JSON.stringify(value));
      for (const sub of Object.keys(value))
        if (!['name', 'arguments', 'warmup', 'warmup_init'].includes(sub))
          throw fail(`${key}.${sub}`, 'is not a schedule option', 'name, arguments, warmup or warmup_init', sub);
      const { name, arguments: args, warmup, warmup_init } = value;
      if (!['cosine_decay', 'linear_schedule', 'exponential_decay', 'step_decay'].includes(name as string))
        throw fail(`${key}.name`, 'is not a schedule', 'cosine_decay, linear_schedule, exponential_decay or step_decay', JSON.stringify(name));
      if (!Array.isArray(args) || !args.every((a) => typeof a === 'number' && Number.isFinite(a)))
        throw fail(`${key}.arguments`, 'must be a list of numbers', '[1e-5, 1000, 1e-7]', JSON.stringify(args));
      if (warmup !== undefined && warmup !== null && !(Number.isSafeInteger(warmup) && (warmup as number) >= 0))
        throw fail(`${key}.warmup`, 'must be a whole number of steps', 'an integer ≥ 0', JSON.stringify(warmup));
      if (warmup_init !== undefined && warmup_init !== null && !(typeof warmup_init === 'number' && Number.isFinite(warmup_init)))
        throw fail(`${key}.warmup_init`, 'must be a number', 'a learning rate', JSON.stringify(warmup_init));
      out.lrSchedule = {
        name: name as LrSchedule['name'],
        arguments: args as number[],
        warmup: (warmup as number | null | undefined) ?? 0,
        warmup_init: (warmup_init as number | null | undefined) ?? 0,
      };
      continue;
    }
    if (key === 'optimizer_config') {
      if (!isObject(value)) throw fail(key, 'must be a mapping of optimizer names to options', '{adamw: {weight_decay: 0.01}}', JSON.stringify(value));
      for (const [name, options] of Object.entries(value)) {
        if (!['adam', 'adamw', 'sgd', 'muon', 'adafactor'].includes(name)) throw fail(`${key}.${name}`, 'is not an optimizer', 'adam, adamw or sgd', name);
        if (options !== null && !isObject(options))
          throw fail(`${key}.${name}`, 'must be a mapping of options', '{betas: [0.9, 0.999]}', JSON.stringify(options));
      }
      out.optimizerConfig = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, (v as Record<string, unknown> | null) ?? {}]));
      continue;
    }
    if (key === 'hf_dataset') throw fail(key, 'Hub datasets are not downloaded here', 'the data in a local folder, given as data:', 'hf_dataset');
    if (key === 'wandb' || key === 'report_to' || key === 'project_name')
      throw fail(key, 'reporting to an experiment tracker is not supported', 'metrics_file: run.jsonl (one JSON line per report)', JSON.stringify(value));
    if (key === 'fine_tune_type' && value === 'dora') throw fail(key, 'DoRA is not implemented yet', 'lora or full', 'dora');
    const name = key.replace(/_/g, '-');
    if (!Object.hasOwn(FLAGS, name) || CLI_ONLY.has(name) || !(FLAGS[name as FlagName].commands as readonly string[]).includes('train')) {
      const closest = closestFlag(name).replace(/-/g, '_');
      throw fail(key, `unknown option (did you mean ${closest}?)`, "an option listed by 'metal-lora --help', with underscores", key);
    }
    if (name === 'keys') {
      if (Array.isArray(value) && value.every((k) => typeof k === 'string')) {
        flags.keys = value.join(',');
        continue;
      }
    }
    set(key, name as FlagName, value);
  }
  return out;
}
