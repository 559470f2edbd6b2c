/**
 * The Node entry's `train`: the loop of training.ts with its run written to files, as mlx-lm
 * writes them: the adapter (or full fine-tune) and `training_state.safetensors` in `adapterPath`,
 * numbered checkpoints every `saveEvery` steps, and one JSON line per event in `metricsFile`.
 */
import { appendFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadSafetensors, saveSafetensors } from '@metal-lora/adapter-io/node';
import type { LlamaForCausalLM } from '@metal-lora/nn';
import { saveAdapter, saveFineTune } from './adapters';
import type { Dataset } from './dataset';
import { STATE_FILE, type TrainingOptions, type TrainingStore, type TrainResult, train as trainLoop } from './training';

/** A store over an adapter folder and a metrics file (either may be absent). */
export function fileStore(options: Pick<TrainingOptions, 'adapterPath' | 'adapter' | 'metricsFile'>): TrainingStore {
  const dir = options.adapterPath;
  const metricsFile = options.metricsFile;
  return {
    save: dir
      ? async (at, numbered, { model, state }) => {
          const checkpoint = numbered ? at : undefined;
          if (options.adapter?.fineTuneType === 'full') await saveFineTune(model, dir, { numLayers: options.adapter.numLayers ?? -1, checkpoint });
          else
            await saveAdapter(model, dir, {
              format: options.adapter?.format ?? 'mlx',
              numLayers: options.adapter?.numLayers,
              keys: options.adapter?.keys ?? null,
              checkpoint,
            });
          saveSafetensors(join(dir, STATE_FILE), state.entries, state.metadata);
          return dir;
        }
      : undefined,
    load: dir
      ? async () => {
          const path = join(dir, STATE_FILE);
          return existsSync(path) ? loadSafetensors(path) : null;
        }
      : undefined,
    metrics: metricsFile ? (record) => appendFileSync(metricsFile, `${JSON.stringify(record)}\n`) : undefined,
  };
}

/**
 * Fine-tunes `model`'s trainable parameters (LoRA layers from `linearToLoRALayers`, or whatever is
 * left trainable) on `dataset.train`, evaluating on `dataset.valid`, writing adapters, checkpoints
 * and metrics to files. See `TrainingOptions`.
 *
 * @example
 * const { model, tokenizer } = loadModel('models/SmolLM2-135M-Instruct');
 * linearToLoRALayers(model, { numLayers: 8, rank: 8, scale: 20 });
 * const data = loadDataset('data/', tokenizer, { maskPrompt: true });
 * await train(model, data, { iters: 600, batchSize: 4, learningRate: 1e-4, adapterPath: 'adapters' });
 */
export function train(model: LlamaForCausalLM, dataset: Dataset, options: TrainingOptions): Promise<TrainResult> {
  const files = options.adapterPath !== undefined || options.metricsFile !== undefined;
  return trainLoop(model, dataset, files && !options.store ? { ...options, store: fileStore(options) } : options);
}
