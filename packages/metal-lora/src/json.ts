import { FormatError } from '@metal-lora/tensor';

/**
 * A model folder's JSON file (`config.json`, `tokenizer_config.json`, ...) read as an object:
 * invalid JSON, or JSON that is not an object, is a `FormatError` of `op` naming the file (`key`:
 * the name, or the path where the file came from disk).
 */
export function parseJsonObject(op: string, text: string, name: string, key = name): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new FormatError(op, `${name} is not valid JSON (${(error as Error).message})`, { key });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new FormatError(op, `${name} is not a JSON object`, { key }, 'an object', JSON.stringify(value));
  return value as Record<string, unknown>;
}
