/**
 * Browser helpers (web APIs only): adapters from `File`s, `Blob`s or fetched URLs, and a
 * download of a saved adapter's files.
 */
import { FormatError } from '@metal-lora/tensor';
import { type AdapterFiles, detectFormat, MLX_CONFIG, MLX_WEIGHTS, PEFT_WEIGHTS } from './adapters';

/** Anything with a name and bytes: a `File` from an `<input type=file multiple>` or a drop. */
export interface NamedBlob {
  name: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** The adapter files among `blobs` (format detected from their names), e.g. the files of a picked directory. */
export async function adapterFromBlobs(blobs: Iterable<NamedBlob>): Promise<{ format: 'mlx' | 'peft'; files: AdapterFiles }> {
  const byName = new Map<string, NamedBlob>();
  for (const b of blobs) byName.set(b.name.split('/').pop()!, b);
  const config = byName.get(MLX_CONFIG);
  const configText = config ? new TextDecoder().decode(await config.arrayBuffer()) : undefined;
  const format = detectFormat([...byName.keys()], configText);
  const weights = byName.get(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS)!;
  if (configText === undefined)
    throw new FormatError(
      'adapterFromBlobs',
      'adapter_config.json is missing',
      { key: MLX_CONFIG },
      'the config next to the weights',
      [...byName.keys()].join(', '),
    );
  return { format, files: { weights: new Uint8Array(await weights.arrayBuffer()), config: configText } };
}

/** Fetches an adapter directory served over HTTP (`${base}/adapter_config.json` and its weights). */
export async function fetchAdapter(base: string, format: 'mlx' | 'peft' = 'mlx', fetchFn: typeof fetch = fetch): Promise<AdapterFiles> {
  const get = async (name: string) => {
    const response = await fetchFn(`${base.replace(/\/$/, '')}/${name}`);
    if (!response.ok) throw new FormatError('fetchAdapter', `could not fetch ${name}`, { key: name }, 'HTTP 200', `HTTP ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  };
  const weights = await get(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS);
  const config = new TextDecoder().decode(await get(MLX_CONFIG));
  return { weights, config };
}

/** Offers `bytes` as a file download (a temporary object URL on an `<a download>`). */
export function downloadFile(name: string, bytes: Uint8Array | string, type = 'application/octet-stream'): void {
  const blob = new Blob([typeof bytes === 'string' ? bytes : new Uint8Array(bytes)], { type });
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Downloads an adapter's two files (`adapters.safetensors` or `adapter_model.safetensors`, and the config). */
export function downloadAdapter(files: AdapterFiles, format: 'mlx' | 'peft' = 'mlx'): void {
  downloadFile(format === 'peft' ? PEFT_WEIGHTS : MLX_WEIGHTS, files.weights);
  downloadFile(MLX_CONFIG, files.config, 'application/json');
}
