import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, type SafetensorsEntry, writeSafetensors } from '@metal-lora/adapter-io';
import { linearToLoRALayers } from '@metal-lora/nn';
import { getBackend, setBackend } from '@metal-lora/tensor';
import type { WebGPUBackend } from '@metal-lora/metal-kernels';
import { beforeAll, describe, expect, it } from 'vitest';
import { skipWithoutAdapter } from '../../../test-support/gpu';
import { BatchPlan } from '../src/batching';
import { readConfigFile } from '../src/config-file';
import { type DatasetOptions, datasetFromJsonl, type Example } from '../src/dataset';
import { loadDataset } from '../src/dataset-files';
import { HFTokenizer, loadFineTune, loadModel } from '../src/index';
import { learningRateSchedule, type TrainingStore, type TrainReport, train as trainAnywhere } from '../src/training';
import { train } from '../src/training-files';
import { cli, root } from './run-cli';

const fixture = new URL('./fixtures/models/llama/', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'metal-lora-training-'));
let count = 0;

/** A data folder with the given splits (each a list of JSON lines). */
function dataFolder(splits: Record<string, unknown[]>): string {
  const path = join(dir, `data-${count++}`);
  mkdirSync(path);
  for (const [name, rows] of Object.entries(splits)) writeFileSync(join(path, `${name}.jsonl`), `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`);
  return path;
}

function file(text: string, name = `f-${count++}.jsonl`): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const chat = (i: number) => ({
  messages: [
    { role: 'system', content: 'You answer briefly.' },
    { role: 'user', content: `What is ${i} plus one?` },
    { role: 'assistant', content: `It is ${i + 1}.` },
    { role: 'user', content: 'And twice that?' },
    { role: 'assistant', content: `That is ${2 * (i + 1)}.` },
  ],
});
const completion = (i: number) => ({ prompt: `Count from ${i}:`, completion: ` ${i + 1} ${i + 2} ${i + 3}` });

const { tokenizer } = loadModel(fixture);
const tok = tokenizer as HFTokenizer;
const trained = (e: Example) => tok.decode(e.ids.filter((_, i) => e.weights[i] === 1));
const load = (path: string, options: DatasetOptions = {}) => loadDataset(path, tok, options);

describe('loadDataset: the three mlx-lm formats', () => {
  it('chat: with maskPrompt every assistant turn is trained and nothing else; the ids are the template rendering', () => {
    const data = load(dataFolder({ train: [chat(1), chat(2)], valid: [chat(3)] }), { maskPrompt: true });
    expect(data.train?.format).toBe('chat');
    expect(data.train?.examples).toHaveLength(2);
    const e = data.train!.examples[0];
    expect(tok.decode(e.ids)).toBe(tok.applyChatTemplate(chat(1).messages));
    expect(trained(e)).toBe('It is 2.<|eot_id|>That is 4.<|eot_id|>');
    expect(data.train!.lastTurnOnly).toBe(0);
    // Without the mask every token after the first is a target.
    const all = load(dataFolder({ train: [chat(1)], valid: [chat(3)] })).train!.examples[0];
    expect(Array.from(all.weights)).toEqual([0, ...new Array(all.ids.length - 1).fill(1)]);
  });

  it('chat: masking never changes the tokens (a Metaspace tokenizer that prepends ▁ too), only which count', () => {
    for (const name of ['mistral-sliding-window', 'phi3', 'gemma3', 'qwen3']) {
      const other = loadModel(new URL(`./fixtures/models/${name}/`, import.meta.url).pathname).tokenizer;
      const folder = dataFolder({ train: [chat(1), completion(2)].slice(0, 1), valid: [chat(3)] });
      const masked = loadDataset(folder, other, { maskPrompt: true }).train!.examples[0];
      const plain = loadDataset(folder, other).train!.examples[0];
      expect(Array.from(masked.ids), name).toEqual(Array.from(plain.ids));
      expect(other.decode(masked.ids.filter((_, i) => masked.weights[i] === 1)), name).toMatch(/It is 2\.[\s\S]*That is 4\./);
    }
  });

  it('chat: a template error names the example', () => {
    const strict = HFTokenizer.fromFiles({ ...tok.files, chatTemplate: "{{ raise_exception('roles must alternate') }}" });
    expect(() => loadDataset(dataFolder({ train: [chat(1)], valid: [chat(2)] }), strict, { maskPrompt: true })).toThrow(
      /(train|valid)\.jsonl:1: the chat template failed to render \(roles must alternate\)/,
    );
  });

  it('chat: a template that renders earlier turns differently once later ones follow trains the last turn only, and says so', () => {
    const template =
      "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{% if m['role'] == 'assistant' and not loop.last %}(earlier){% else %}{{ m['content'] }}{% endif %}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
    const reasoning = HFTokenizer.fromFiles({ ...tok.files, chatTemplate: template });
    const data = loadDataset(dataFolder({ train: [chat(1)], valid: [chat(2)] }), reasoning, { maskPrompt: true });
    expect(data.train!.lastTurnOnly).toBe(1);
    expect(trained(data.train!.examples[0])).toBe('That is 4.<|eot_id|>');
  });

  it('completions: a user and an assistant turn through the template; with the mask only the completion counts', () => {
    const data = load(dataFolder({ train: [completion(1), completion(5)], valid: [completion(9)] }), { maskPrompt: true });
    expect(data.train!.format).toBe('completions');
    expect(trained(data.train!.examples[0])).toBe('2 3 4<|eot_id|>');
    // Remapped keys.
    const remapped = load(dataFolder({ train: [{ q: 'a', a: 'b' }], valid: [{ q: 'c', a: 'd' }] }), { features: { prompt: 'q', completion: 'a' } });
    expect(remapped.train!.format).toBe('completions');
  });

  it('text: every token after the first, with EOS appended', () => {
    const data = load(dataFolder({ train: [{ text: 'the cat sat' }], valid: [{ text: 'a dog' }] }));
    const e = data.train!.examples[0];
    expect(data.train!.format).toBe('text');
    expect(e.ids[e.ids.length - 1]).toBe(tok.tokenId('<|eot_id|>'));
    expect(e.weights[0]).toBe(0);
    expect(e.weights.slice(1).every((w) => w === 1)).toBe(true);
    // One file: 90% train, the rest valid; without valid.jsonl the last tenth of train.
    const one = load(file(`${Array.from({ length: 10 }, (_, i) => JSON.stringify({ text: `line ${i}` })).join('\n')}\n`));
    expect([one.train!.examples.length, one.valid!.examples.length]).toEqual([9, 1]);
    const noValid = load(dataFolder({ train: Array.from({ length: 20 }, (_, i) => ({ text: `line ${i}` })) }));
    expect([noValid.train!.examples.length, noValid.valid!.examples.length]).toEqual([18, 2]);
  });

  it('long examples are truncated and counted; ones left with nothing to train are skipped and counted, never silently', () => {
    const long = { prompt: 'word '.repeat(80), completion: 'end' };
    const data = load(dataFolder({ train: [long, completion(1)], valid: [completion(2)] }), { maskPrompt: true, maxSeqLength: 48 });
    expect(data.train!.truncated).toBe(1);
    expect(data.train!.skipped).toEqual([{ count: 1, reason: 'no trained tokens within 48 tokens' }]);
    expect(data.train!.examples).toHaveLength(1);
    expect(() => load(dataFolder({ train: [long], valid: [completion(2)] }), { maskPrompt: true, maxSeqLength: 48 })).toThrow(
      /train\.jsonl: no usable examples \(1 with no trained tokens within 48 tokens\)/,
    );
  });

  it('bad data stops before training with file:line and what is wrong', () => {
    const cases: [string, RegExp, DatasetOptions?][] = [
      ['{"text": "a"}\n{"text": \n', /\.jsonl:2: not valid JSON/],
      ['{"text": "a"}\n[1, 2]\n', /\.jsonl:2: not a JSON object/],
      ['{"text": "a"}\n{"txt": "b"}\n', /\.jsonl:2: missing "text" \(the file is text data, from its first line\)/],
      ['{"text": "a"}\n{"text": 3}\n', /\.jsonl:2: "text" is not a string/],
      ['{"words": "a"}\n{"words": "b"}\n', /\.jsonl:1: the format is not recognized from its keys; expected "messages" \(chat\)/],
      ['\n\n', /\.jsonl: holds no examples/],
      ['{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', /\.jsonl:2: missing "completion"/],
      ['{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "x"}]}\n{"messages": []}\n', /\.jsonl:1: message 1 has an unknown role/],
      ['{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": []}\n', /\.jsonl:2: "messages" is not a non-empty list of messages/],
      ['{"messages": [{"role": "user", "content": 5}]}\n{"messages": []}\n', /\.jsonl:1: message 0 \(user\) has no text content/],
      [
        '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "user", "content": "yo"}]}\n',
        /\.jsonl:1: the conversation has no assistant message to train on/,
        { maskPrompt: true },
      ],
      ['{"text": "a"}\n{"text": "b"}\n', /maskPrompt needs chat or completions data/, { maskPrompt: true }],
    ];
    for (const [text, message, options] of cases) expect(() => load(file(text), options), message.source).toThrow(message);
    expect(() => load(join(dir, 'absent'))).toThrow(/absent: not found/);
    expect(() => load(dataFolder({ valid: [{ text: 'a' }] }))).toThrow(/train\.jsonl: no train split/);
    expect(() => load(dataFolder({ train: [{ text: 'a' }], valid: [{ text: 'b' }] }), { splits: ['test'] })).toThrow(/test\.jsonl: no test split/);
    const char = loadModel(new URL('../assets/base/', import.meta.url).pathname).tokenizer;
    expect(() => loadDataset(file('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "user", "content": "hi"}]}\n'), char)).toThrow(
      /chat data needs a model with a chat template/,
    );
  });
});

describe('datasetFromJsonl: the same data from text in memory (what a browser page has)', () => {
  it('tokenizes as loadDataset does, holds out the last tenth without valid, and names its sources in errors', () => {
    const rows = Array.from({ length: 20 }, (_, i) => JSON.stringify(completion(i))).join('\n');
    const fromText = datasetFromJsonl({ train: rows }, tok, { maskPrompt: true });
    const fromFile = load(dataFolder({ train: Array.from({ length: 20 }, (_, i) => completion(i)) }), { maskPrompt: true });
    expect([fromText.train!.examples.length, fromText.valid!.examples.length]).toEqual([18, 2]);
    expect(fromText.train!.examples.map((e) => Array.from(e.ids))).toEqual(fromFile.train!.examples.map((e) => Array.from(e.ids)));
    expect(fromText.valid!.examples.map((e) => Array.from(e.weights))).toEqual(fromFile.valid!.examples.map((e) => Array.from(e.weights)));
    const both = datasetFromJsonl({ train: rows, valid: JSON.stringify(completion(99)) }, tok);
    expect([both.train!.examples.length, both.valid!.examples.length]).toEqual([20, 1]);
    expect(() => datasetFromJsonl({ train: '{"text": "a"}\n{"text": 3}\n' }, tok, {}, { train: 'pasted text' })).toThrow(
      /^data: pasted text:2: "text" is not a string/,
    );
    expect(() => datasetFromJsonl({ train: '{"text": "a"}' }, tok)).toThrow(/train\.jsonl: holds 1 example, too few to keep one for validation/);
  });
});

describe('BatchPlan', () => {
  const examples: Example[] = Array.from({ length: 23 }, (_, i) => {
    const n = 3 + ((i * 7) % 40);
    return {
      ids: Int32Array.from({ length: n }, (_, t) => 1 + ((i + t) % 50)),
      weights: Uint8Array.from({ length: n }, (_, t) => (t === 0 || (i % 3 === 0 && t < 2) ? 0 : 1)),
    };
  });
  const tokensOf = (ids: Int32Array) => Array.from(ids).join(',');
  /** Each example's inputs (ids but the last), as laid in a batch. */
  const seen = (plan: BatchPlan, epoch: number) =>
    [...plan.epoch(epoch)].flatMap((b) => {
      const rows: string[] = [];
      for (let r = 0; r < b.rows; r++) {
        const row = b.inputs.subarray(r * b.length, (r + 1) * b.length);
        if (b.segments) {
          let at = 0;
          for (const n of b.segments[r]) {
            rows.push(tokensOf(row.subarray(at, at + n)));
            at += n;
          }
        } else {
          const targets = Array.from(b.targets.subarray(r * b.length, (r + 1) * b.length));
          const n = targets.length - targets.reverse().findIndex((t) => t !== -100);
          rows.push(tokensOf(row.subarray(0, Math.max(n, 1))));
        }
      }
      return rows;
    });
  const want = examples.map((e) => tokensOf(e.ids.subarray(0, e.ids.length - 1))).sort();

  it('padded: sorted by length, every example once per epoch (the last batch smaller), lengths in steps of 32, pads not counted', () => {
    const plan = new BatchPlan(examples, { batchSize: 4, maxSeqLength: 48, seed: 3 });
    expect(plan.count).toBe(6);
    for (const epoch of [0, 1]) expect(seen(plan, epoch).sort()).toEqual(want.filter((_, i) => i >= 0).sort());
    const b = plan.at(0);
    expect(b.length % 32 === 0 || b.length === 48).toBe(true);
    let trained = 0;
    for (const e of examples) for (let t = 1; t < e.ids.length; t++) trained += e.weights[t];
    expect([...plan.epoch(0)].reduce((n, x) => n + x.trainedTokens, 0)).toBe(trained);
    // The same batch whenever it is asked for; the order changes between epochs.
    expect(plan.at(7)).toEqual(plan.at(7));
    expect([...plan.epoch(0)].map((x) => x.inputs[0])).not.toEqual([...plan.epoch(1)].map((x) => x.inputs[0]));
  });

  it('packed: documents end to end in rows of maxSeqLength, each once per epoch', () => {
    const plan = new BatchPlan(examples, { batchSize: 3, maxSeqLength: 64, seed: 1, pack: true });
    for (const b of plan.epoch(0)) {
      expect(b.length).toBe(64);
      for (const lengths of b.segments!) expect(lengths.reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(64);
    }
    expect(seen(plan, 0).sort()).toEqual(want);
    expect(() => new BatchPlan(examples, { batchSize: 2, maxSeqLength: 8 })).toThrow(/longer than maxSeqLength \+ 1 tokens/);
    expect(() => new BatchPlan([], { batchSize: 2 })).toThrow(/there are no examples/);
  });
});

describe('train: the loop of `metal-lora train` as a library call', () => {
  beforeAll(async () => {
    await setBackend('cpu');
  });
  const data = load(dataFolder({ train: Array.from({ length: 12 }, (_, i) => chat(i)), valid: [chat(20), chat(21)] }), { maskPrompt: true, maxSeqLength: 96 });

  function fresh() {
    const { model } = loadModel(fixture);
    linearToLoRALayers(model, { rank: 4, scale: 2, dropout: 0.1, seed: 1 });
    return model;
  }

  it('the learning-rate schedules are MLX’s, warm-up joined as mlx-lm joins it', () => {
    const cos = learningRateSchedule(1, { name: 'cosine_decay', arguments: [1e-3, 100, 1e-5], warmup: 10, warmup_init: 1e-6 });
    expect(cos(0)).toBeCloseTo(1e-6, 12);
    expect(cos(5)).toBeCloseTo(1e-6 + (1e-3 - 1e-6) / 2, 12);
    expect(cos(10)).toBeCloseTo(1e-3, 12);
    expect(cos(11)).toBeCloseTo(1e-3, 12); // the decay's step 0
    expect(cos(61)).toBeCloseTo(1e-5 + 0.5 * (1e-3 - 1e-5), 12);
    expect(cos(500)).toBeCloseTo(1e-5, 12);
    expect(learningRateSchedule(1, { name: 'step_decay', arguments: [1, 0.5, 10] })(25)).toBe(0.25);
    expect(learningRateSchedule(1, { name: 'linear_schedule', arguments: [1, 0, 4] })(3)).toBe(0.25);
    expect(learningRateSchedule(1, { name: 'exponential_decay', arguments: [2, 0.5] })(2)).toBe(0.5);
    expect(learningRateSchedule(3e-4)(99)).toBe(3e-4);
    expect(() => learningRateSchedule(1, { name: 'cosine_decay', arguments: [1] })).toThrow(/takes 2 or 3 arguments/);
  });

  it('trains on masked chat data, reports, evaluates, checkpoints as mlx-lm names them, and resumes to the same curve', async () => {
    const options = {
      iters: 8,
      batchSize: 2,
      maxSeqLength: 96,
      learningRate: 5e-3,
      optimizer: 'adamw' as const,
      lrSchedule: { name: 'cosine_decay' as const, arguments: [5e-3, 6, 5e-4], warmup: 2 },
      gradAccumulationSteps: 2,
      maxGradNorm: 1,
      stepsPerReport: 1,
      stepsPerEval: 4,
      valBatches: -1,
      saveEvery: 4,
      seed: 7,
    };
    const whole: TrainReport[] = [];
    const evals: number[] = [];
    const path = join(dir, 'whole');
    const metricsFile = join(dir, 'metrics.jsonl');
    const a = await train(fresh(), data, { ...options, adapterPath: path, metricsFile, onReport: (r) => whole.push(r), onEval: (r) => evals.push(r.valLoss) });
    expect(a).toMatchObject({ steps: 8, stopped: 'done' });
    expect(evals).toHaveLength(3); // before training, at 4 and at 8
    expect(evals[2]).toBeLessThan(evals[0]);
    expect(whole.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(whole[0].learningRate).toBe(0);
    for (const name of [
      'adapters.safetensors',
      'adapter_config.json',
      '0000004_adapters.safetensors',
      '0000008_adapters.safetensors',
      'training_state.safetensors',
    ])
      expect(existsSync(join(path, name)), name).toBe(true);
    const lines = readFileSync(metricsFile, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.event === 'train')).toHaveLength(8);
    expect(lines.filter((l) => l.event === 'save').map((l) => l.step)).toEqual([4, 8]);

    // Interrupted after step 4 (as Ctrl-C does), then resumed: steps 5–8 are the same.
    const part = join(dir, 'part');
    const controller = new AbortController();
    const first: TrainReport[] = [];
    const b = await train(fresh(), data, {
      ...options,
      adapterPath: part,
      signal: controller.signal,
      onReport: (r) => {
        first.push(r);
        if (r.step === 4) controller.abort();
      },
    });
    expect(b).toMatchObject({ steps: 4, stopped: 'interrupted' });
    const rest: TrainReport[] = [];
    const c = await train(fresh(), data, { ...options, adapterPath: part, resume: true, onReport: (r) => rest.push(r) });
    expect(c).toMatchObject({ steps: 8, stopped: 'done' });
    expect([...first, ...rest].map((r) => r.loss)).toEqual(whole.map((r) => r.loss));
    expect(rest.at(-1)!.trainedTokens).toBe(whole.at(-1)!.trainedTokens);
    expect(readFileSync(join(part, 'adapters.safetensors')).equals(readFileSync(join(path, 'adapters.safetensors')))).toBe(true);
    // A resume with other settings is refused.
    await expect(train(fresh(), data, { ...options, seed: 8, adapterPath: part, resume: true })).rejects.toThrow(
      /resume: the checkpoint was made with another seed/,
    );
  }, 120_000);

  it('the loop that runs in browsers writes through a store: an in-memory one saves, records and resumes the same curve', async () => {
    const options = { iters: 4, batchSize: 2, maxSeqLength: 96, learningRate: 5e-3, stepsPerReport: 1, stepsPerEval: 100, saveEvery: 2, seed: 3 };
    const saved = new Map<number, { metadata: Record<string, string>; tensors: Record<string, SafetensorsEntry> }>();
    const records: string[] = [];
    const store: TrainingStore = {
      save: async (at, numbered, { state }) => {
        // As a browser would keep it (IndexedDB): the bytes of one safetensors file.
        saved.set(at, readSafetensors(writeSafetensors(state.entries, state.metadata)));
        expect(numbered).toBe(true);
        return `memory:${at}`;
      },
      load: async () => saved.get(Math.max(...saved.keys())) ?? null,
      metrics: (r) => records.push(String(r.event)),
    };
    const whole: number[] = [];
    await trainAnywhere(fresh(), data, { ...options, store, onReport: (r) => whole.push(r.loss) });
    expect([...saved.keys()]).toEqual([2, 4]);
    expect(records.filter((e) => e === 'save')).toHaveLength(2);
    saved.delete(4);
    const rest: number[] = [];
    await trainAnywhere(fresh(), data, { ...options, store, resume: true, onReport: (r) => rest.push(r.loss) });
    expect(rest).toEqual(whole.slice(2));
    await expect(trainAnywhere(fresh(), data, { ...options, adapterPath: join(dir, 'nowhere') })).rejects.toThrow(
      /adapterPath and metricsFile are written by the Node entry/,
    );
  });

  it('iterations count batches as in mlx-lm; accumulation holds one set of gradients; a checkpoint mid-step resumes exactly', async () => {
    const options = { batchSize: 2, maxSeqLength: 96, learningRate: 5e-3, gradAccumulationSteps: 2, stepsPerReport: 1, saveEvery: 3, seed: 2 };
    const whole: TrainReport[] = [];
    const path = join(dir, 'mid');
    const copy = join(dir, 'mid-copy');
    const a = await train(fresh(), data, {
      ...options,
      iters: 6,
      adapterPath: path,
      onReport: (r) => whole.push(r),
      onSave: (r) => {
        if (r.step === 3) cpSync(path, copy, { recursive: true }); // between the two batches of an optimizer step
      },
    });
    expect(a.steps).toBe(6);
    expect(whole.map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
    const rest: TrainReport[] = [];
    await train(fresh(), data, { ...options, iters: 6, adapterPath: copy, resume: true, onReport: (r) => rest.push(r) });
    expect(rest.map((r) => r.loss)).toEqual(whole.slice(3).map((r) => r.loss));
    // Peak memory: four accumulated batches cost about what one does.
    const peakOf = async (gradAccumulationSteps: number) => {
      getBackend().resetPeak();
      let peak = 0;
      await train(fresh(), data, {
        batchSize: 2,
        iters: gradAccumulationSteps,
        gradAccumulationSteps,
        stepsPerReport: gradAccumulationSteps,
        onReport: (r) => (peak = r.peakMemory),
      });
      return peak;
    };
    const one = await peakOf(1);
    const four = await peakOf(4);
    expect(four).toBeLessThan(one * 1.25);
  }, 120_000);

  it('packed rows train too', async () => {
    const losses: number[] = [];
    await train(fresh(), data, {
      iters: 10,
      batchSize: 2,
      maxSeqLength: 96,
      learningRate: 1e-2,
      pack: true,
      stepsPerReport: 5,
      onReport: (r) => losses.push(r.loss),
    });
    expect(losses[1]).toBeLessThan(losses[0]);
  }, 60_000);

  it('gradient checkpointing gives the same run', async () => {
    const run = async (gradCheckpoint: boolean) => {
      const losses: number[] = [];
      const model = fresh();
      await train(model, data, {
        iters: 4,
        batchSize: 2,
        learningRate: 1e-2,
        seed: 3,
        gradCheckpoint,
        stepsPerReport: 1,
        onReport: (r) => losses.push(r.loss),
      });
      expect(model.gradientCheckpointing).toBe(false); // restored after the run
      return losses;
    };
    const plain = await run(false);
    const checkpointed = await run(true);
    for (const [i, l] of plain.entries()) expect(checkpointed[i]).toBeCloseTo(l, 5);
  }, 60_000);

  it('fused attention gives the same run, packed rows (per-document masks) included', async () => {
    const run = async (fusedAttention: boolean, pack: boolean) => {
      const losses: number[] = [];
      const model = fresh();
      await train(model, data, {
        iters: 4,
        batchSize: 2,
        maxSeqLength: 96,
        learningRate: 1e-2,
        seed: 3,
        pack,
        fusedAttention,
        stepsPerReport: 1,
        onReport: (r) => losses.push(r.loss),
      });
      expect(model.fusedAttention).toBe('auto'); // restored after the run (the default)
      return losses;
    };
    for (const pack of [false, true]) {
      const composed = await run(false, pack);
      const fused = await run(true, pack);
      expect(fused).toHaveLength(4);
      for (const [i, l] of composed.entries()) expect(fused[i]).toBeCloseTo(l, 4);
    }
  }, 60_000);

  it('refuses what it cannot do', async () => {
    await expect(train(fresh(), {}, { iters: 1, batchSize: 1 })).rejects.toThrow(/the dataset has no train split/);
    await expect(train(fresh(), data, { iters: 1, batchSize: 1, optimizer: 'adam', optimizerConfig: { bias_correction: false } })).rejects.toThrow(
      /without bias correction/,
    );
    await expect(train(fresh(), data, { iters: 1, batchSize: 1, optimizerConfig: { beta: 1 } })).rejects.toThrow(/unknown key 'beta'/);
    await expect(train(fresh(), data, { iters: 1, batchSize: 1, resume: true, adapterPath: join(dir, 'none') })).rejects.toThrow(
      /no training_state\.safetensors/,
    );
  });
});

describe('-c config.yaml: mlx-lm’s training config', () => {
  it("reads mlx-lm's example config, including its YAML-only sections", () => {
    const path = file(
      [
        'model: "mlx_model"',
        'train: true',
        'fine_tune_type: lora',
        'optimizer: adamw',
        'optimizer_config:',
        '  adamw:',
        '    betas: [0.9, 0.98]',
        '    eps: 1e-6',
        '    weight_decay: 0.05',
        'data: "/path/to/training/data"',
        'seed: 0',
        'num_layers: 16',
        'batch_size: 4',
        'iters: 1000',
        'val_batches: 25',
        'learning_rate: 1e-5',
        'steps_per_report: 10',
        'steps_per_eval: 200',
        'resume_adapter_file: null',
        'adapter_path: "adapters"',
        'save_every: 100',
        'test: false',
        'test_batches: 100',
        'max_seq_length: 2048',
        'grad_checkpoint: false',
        'lora_parameters:',
        '  keys: ["self_attn.q_proj", "self_attn.v_proj"]',
        '  rank: 8',
        '  scale: 20.0',
        '  dropout: 0.0',
        'lr_schedule:',
        '  name: cosine_decay',
        '  warmup: 100',
        '  warmup_init: 1e-7',
        '  arguments: [1e-5, 1000, 1e-7]',
        'mask_prompt: true',
      ].join('\n'),
      'lora_config.yaml',
    );
    const config = readConfigFile(path);
    expect(config.flags).toMatchObject({
      model: 'mlx_model',
      'learning-rate': 1e-5,
      'batch-size': 4,
      keys: 'self_attn.q_proj,self_attn.v_proj',
      rank: 8,
      scale: 20,
      'mask-prompt': true,
      'grad-checkpoint': false,
    });
    expect(config.lrSchedule).toEqual({ name: 'cosine_decay', arguments: [1e-5, 1000, 1e-7], warmup: 100, warmup_init: 1e-7 });
    expect(config.optimizerConfig?.adamw).toEqual({ betas: [0.9, 0.98], eps: 1e-6, weight_decay: 0.05 });
  });

  it('refuses unknown keys (naming the closest) and keys it cannot honour', () => {
    const refused = (text: string) => () => readConfigFile(file(text, `c-${count++}.yaml`));
    expect(refused('learning_rte: 1e-4')).toThrow(/learning_rte: unknown option \(did you mean learning_rate\?\)/);
    expect(refused('lora_parameters:\n  alpha: 16')).toThrow(/lora_parameters\.alpha: is not read/);
    expect(refused('hf_dataset:\n  path: billsum')).toThrow(/hf_dataset: Hub datasets are not downloaded here/);
    expect(refused('batch_size: many')).toThrow(/batch_size: the value must be a positive integer/);
    expect(refused('lr_schedule:\n  name: warm')).toThrow(/lr_schedule\.name: is not a schedule/);
    expect(refused('save_path: x')).toThrow(/save_path: unknown option/);
    expect(refused('- a\n- b')).toThrow(/is not a mapping of options/);
    expect(refused('a: [')).toThrow(/is not valid YAML/);
  });
});

describe('metal-lora train on a model folder', () => {
  it('-c config.yaml with chat data and --mask-prompt: checkpoints, --resume, --test', async () => {
    const data = dataFolder({ train: Array.from({ length: 8 }, (_, i) => chat(i)), valid: [chat(20)], test: [chat(30), chat(31)] });
    const adapters = join(dir, 'cli-adapters');
    const config = file(
      [
        'lora_parameters:',
        '  rank: 4',
        '  scale: 2',
        'iters: 4',
        'batch_size: 2',
        'learning_rate: 3e-3',
        'steps_per_report: 2',
        'save_every: 2',
        'mask_prompt: true',
      ].join('\n'),
      'cli.yaml',
    );
    const base = ['train', '-c', config, '--model', fixture, '--data', data, '--backend', 'cpu', '--adapter-path', adapters];
    const r = await cli([...base, '--iters', '2']); // the command line wins over the file
    expect(r.err).toBe('');
    expect(r.out).toMatch(/data: train: 8 chat examples, \d+ tokens \(\d+ trained\)/);
    expect(r.out).toMatch(/Iter 2: Train loss \d+\.\d+, Learning Rate 3\.000e-3, It\/sec [\d.]+, Tokens\/sec \d+, Trained Tokens \d+, Peak mem [\d.]+ GB/);
    expect(r.out).toMatch(/Iter 2: Saved adapter weights and training state/);
    expect(r.out).toMatch(/trained 2 steps/);
    expect(existsSync(join(adapters, '0000002_adapters.safetensors'))).toBe(true);
    const resumed = await cli([...base, '--resume', '--test']);
    expect(resumed.err).toBe('');
    expect(resumed.out).not.toMatch(/Iter 2: Train loss/);
    expect(resumed.out).toMatch(/Iter 4: Train loss/);
    expect(resumed.out).toMatch(/Test loss \d+\.\d+, Test ppl \d+\.\d+\./);
    const testOnly = await cli(['--test', '--model', fixture, '--data', data, '--backend', 'cpu', '--adapter-path', adapters]);
    expect(testOnly.err).toBe('');
    expect(testOnly.out).not.toMatch(/Train loss/);
    expect(testOnly.out).toMatch(/Test loss/);
    const bad = await cli(['--model', fixture, '--data', data, '--fine-tune-type', 'dora', '--backend', 'cpu']);
    expect(bad.err.trim()).toBe('metal-lora: DoRA is not implemented yet; expected --fine-tune-type lora, got dora');
    const both = await cli(['--model', fixture, '--data', data, '--fused-attention', '--composed-attention', '--backend', 'cpu']);
    expect(both.err.trim()).toBe('metal-lora: --fused-attention and --composed-attention ask for both kinds of attention; expected at most one, got both');
  }, 120_000);
});

describe('every architecture fine-tunes on masked multi-turn chat through train()', () => {
  const root = new URL('./fixtures/models/', import.meta.url).pathname;
  for (const name of readdirSync(root)) {
    it(name, async () => {
      await setBackend('cpu');
      const { model, tokenizer } = loadModel(join(root, name));
      const data = loadDataset(dataFolder({ train: Array.from({ length: 4 }, (_, i) => chat(i)), valid: [chat(1), chat(2)] }), tokenizer, { maskPrompt: true });
      linearToLoRALayers(model, { rank: 4, scale: 2, seed: 1 });
      const evals: number[] = [];
      await train(model, data, { iters: 12, batchSize: 2, learningRate: 2e-2, stepsPerEval: 12, onEval: (r) => evals.push(r.valLoss) });
      expect(evals[1]).toBeLessThan(evals[0] - 0.1);
    }, 60_000);
  }
});

describe('--fine-tune-type full', () => {
  it('trains the last blocks whole, saves them as mlx-lm does, resumes, and generate / fuse / --test apply them', async () => {
    await setBackend('cpu');
    const data = dataFolder({ train: Array.from({ length: 6 }, (_, i) => completion(i)), valid: [completion(20)], test: [completion(30)] });
    const out = join(dir, 'full');
    const args = ['--model', fixture, '--data', data, '--backend', 'cpu', '--adapter-path', out, '--fine-tune-type', 'full', '--num-layers', '1'];
    const r = await cli([...args, '--iters', '2', '--batch-size', '2', '--learning-rate', '1e-3', '--save-every', '2']);
    expect(r.err).toBe('');
    expect(r.out).toMatch(/full fine-tune of the last 1 blocks: \d+ trainable of \d+ parameters/);
    expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ fine_tune_type: 'full', num_layers: 1, lora_parameters: null });
    const { model } = loadModel(fixture);
    const names = loadFineTune(model, out);
    expect(names.length).toBeGreaterThan(0);
    expect(names.every((n) => n.startsWith('model.layers.1.'))).toBe(true);
    const resumed = await cli([...args, '--iters', '4', '--batch-size', '2', '--learning-rate', '1e-3', '--resume', '--train', '--test']);
    expect(resumed.err).toBe('');
    expect(resumed.out).toMatch(/Iter 4: Train loss/);
    expect(resumed.out).toMatch(/Test loss/);
    const generated = await cli(['generate', '--model', fixture, '--adapter-path', out, '--prompt', 'Count from 3:', '--max-tokens', '4', '--backend', 'cpu']);
    expect(generated.err).toBe('');
    expect(generated.out).toMatch(/adapter: .*full \(a full fine-tune, \d+ weights\)/);
    const fused = await cli(['fuse', '--model', fixture, '--adapter-path', out, '--save-path', join(dir, 'full-fused'), '--backend', 'cpu']);
    expect(fused.err).toBe('');
    expect(fused.out).toMatch(/fused the \d+ weights of a full fine-tune/);
    // The fused model is the base with the fine-tune applied.
    const fusedModel = loadModel(join(dir, 'full-fused')).model;
    const tuned = loadModel(fixture).model;
    loadFineTune(tuned, out);
    for (const [name, p] of tuned.namedParameters()) expect(Array.from(fusedModel.stateDict()[name].dataSync()), name).toEqual(Array.from(p.dataSync()));
    // Names or shapes that do not fit are refused before anything changes.
    const other = loadModel(new URL('./fixtures/models/phi3/', import.meta.url).pathname).model; // fused qkv_proj
    const before = Array.from(other.namedParameters()[0][1].dataSync());
    expect(() => loadFineTune(other, out)).toThrow(/^loadFineTune: the model has no parameter 'model\.layers\.1\./);
    expect(Array.from(other.namedParameters()[0][1].dataSync())).toEqual(before);
    const bad = await cli([...args, '--format', 'peft']);
    expect(bad.err.trim()).toBe('metal-lora: a full fine-tune is saved in MLX format only; expected --format mlx, got peft');
  }, 120_000);
});

describe('Ctrl-C', () => {
  it('finishes the step, saves a checkpoint that --resume continues, and exits 130', async () => {
    const data = dataFolder({ train: Array.from({ length: 8 }, (_, i) => chat(i)), valid: [chat(20)] });
    const out = join(dir, 'interrupted');
    const argv = ['--conditions=source', '--import', './scripts/register-wgsl.mjs', '--import', 'tsx', 'packages/metal-lora/src/cli.ts'];
    const args = [
      '--model',
      fixture,
      '--data',
      data,
      '--backend',
      'cpu',
      '--adapter-path',
      out,
      '--iters',
      '100000',
      '--steps-per-report',
      '1',
      '--batch-size',
      '2',
    ];
    const child = spawn(process.execPath, [...argv, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const code = await new Promise<number | null>((resolve) => {
      child.stdout.on('data', (d) => {
        stdout += d;
        if (/Iter 2: Train loss/.test(stdout) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(stderr).toBe('');
    expect(code).toBe(130);
    expect(stdout).toMatch(/interrupted: saving a checkpoint after this step/);
    const step = Number(/interrupted at step (\d+)/.exec(stdout)?.[1]);
    expect(step).toBeGreaterThanOrEqual(2);
    expect(stdout).toMatch(/continue with --resume/);
    for (const name of ['adapters.safetensors', 'adapter_config.json', 'training_state.safetensors']) expect(existsSync(join(out, name)), name).toBe(true);
    const resumed = await cli([...args.slice(0, -6), '--iters', String(step + 1), '--steps-per-report', '1', '--batch-size', '2', '--resume']);
    expect(resumed.err).toBe('');
    expect(resumed.out).toMatch(new RegExp(`Iter ${step + 1}: Train loss`));
    expect(resumed.out).not.toMatch(new RegExp(`Iter ${step}: Train loss`));
  }, 120_000);
});

describe('train() on WebGPU replays captured steps', () => {
  it('with the losses of steps run op by op, with and without accumulation', async (ctx) => {
    try {
      await setBackend('webgpu');
    } catch (error) {
      skipWithoutAdapter(ctx, error);
    }
    try {
      // Examples cut to one length: every batch has one shape, so steps are captured and replayed.
      const text = (i: number) => ({ text: `Count from ${i}: ${Array.from({ length: 12 }, (_, k) => i + k + 1).join(' ')}` });
      const data = load(dataFolder({ train: Array.from({ length: 16 }, (_, i) => text(10 + i)), valid: [text(40)] }), { maxSeqLength: 16 });
      const lengths = new Set(data.train!.examples.map((e) => e.ids.length));
      expect(lengths.size).toBe(1);
      const backend = getBackend() as WebGPUBackend;
      const run = async (captureSteps: boolean, gradAccumulationSteps: number) => {
        const { model } = loadModel(fixture);
        linearToLoRALayers(model, { rank: 4, scale: 2, seed: 1 });
        const losses: number[] = [];
        const replayed = backend.stats.replayed;
        await train(model, data, {
          iters: 10,
          batchSize: 2,
          learningRate: 1e-2,
          gradAccumulationSteps,
          stepsPerReport: 2,
          stepsPerEval: 100,
          seed: 3,
          captureSteps,
          onReport: (r) => losses.push(r.loss),
        });
        return { losses, replayed: backend.stats.replayed - replayed };
      };
      for (const accumulate of [1, 2]) {
        const plain = await run(false, accumulate);
        const captured = await run(true, accumulate);
        expect(plain.replayed).toBe(0);
        expect(captured.replayed, `accumulation ${accumulate}`).toBeGreaterThan(0);
        expect(captured.losses, `accumulation ${accumulate}`).toEqual(plain.losses);
        expect(plain.losses[plain.losses.length - 1]).toBeLessThan(plain.losses[0]);
      }
    } finally {
      await setBackend('cpu');
    }
  }, 120_000);
});
