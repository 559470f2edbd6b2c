/**
 * @metal-lora/adapter-io: safetensors, and LoRA adapters in the mlx-lm and PEFT formats, on
 * `Uint8Array` (browser and Node). File helpers live in `@metal-lora/adapter-io/node`.
 */
export {
  type AdapterFiles,
  detectFormat,
  type FullFineTune,
  type LoraAdapter,
  type LoraWeights,
  MLX_CONFIG,
  MLX_WEIGHTS,
  mlxFineTuneType,
  mlxToPeft,
  PEFT_CONFIG,
  PEFT_WEIGHTS,
  parseMlxAdapter,
  parseMlxFullFineTune,
  parsePeftAdapter,
  peftToMlx,
  serializeMlxAdapter,
  serializeMlxFullFineTune,
  serializePeftAdapter,
  validateAdapter,
} from './adapters';
export {
  adapterFromBlobs,
  type BlobSafetensors,
  downloadAdapter,
  downloadFile,
  fetchAdapter,
  type NamedBlob,
  openSafetensorsBlob,
  type SliceableBlob,
} from './web';
export { adapterFromTensors, adapterTensors, type LoraTensors } from './tensors';
export { DECODABLE, float32ToBFloat16Bits, SAFETENSORS_DTYPES, type SafetensorsDType } from './dtypes';
export {
  byteLength,
  fromNumbers,
  MAX_HEADER_BYTES,
  readSafetensors,
  type Safetensors,
  type SafetensorsEntry,
  type SafetensorsInfo,
  type TensorData,
  toFloat32,
  toFloat64,
  type WriteEntry,
  writeSafetensors,
} from './safetensors';
