import { describe, expect, it } from 'vitest';
import { dawnToggles, precisionNotes } from '../src/device';
import { gpuIt } from '../../../test-support/gpu';

describe('Dawn toggles and precision notes', () => {
  it('asks Dawn for the toggles the options and METAL_LORA_GPU_EXPERIMENTAL name, and nothing else', () => {
    expect(dawnToggles({}, {})).toEqual({ enabled: [], disabled: [] });
    expect(dawnToggles({ preciseTimestamps: true }, {})).toEqual({ enabled: [], disabled: ['timestamp_quantization'] });
    expect(dawnToggles({ experimentalFeatures: true }, {})).toEqual({ enabled: ['allow_unsafe_apis'], disabled: [] });
    const both = { enabled: ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia'], disabled: [] };
    expect(dawnToggles({ f16OnNvidia: true }, {})).toEqual(both);
    for (const on of ['1', 'true', 'yes']) expect(dawnToggles({}, { METAL_LORA_GPU_EXPERIMENTAL: on }), on).toEqual(both);
    for (const off of ['', '0', 'false', 'FALSE'])
      expect(dawnToggles({}, { METAL_LORA_GPU_EXPERIMENTAL: off }), `'${off}'`).toEqual({ enabled: [], disabled: [] });
  });

  it('adds the toggles METAL_LORA_DAWN_TOGGLES names (a leading - turns one off), once each, and refuses other text', () => {
    const env = { METAL_LORA_DAWN_TOGGLES: ' disable_robustness, -lazy_clear_resource_on_first_use,,allow_unsafe_apis ' };
    expect(dawnToggles({ f16OnNvidia: true, preciseTimestamps: true }, env)).toEqual({
      enabled: ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia', 'disable_robustness'],
      disabled: ['timestamp_quantization', 'lazy_clear_resource_on_first_use'],
    });
    for (const bad of ['disable robustness', 'Disable_Robustness', '-', 'a=b'])
      expect(() => dawnToggles({}, { METAL_LORA_DAWN_TOGGLES: bad }), bad).toThrow(
        /requestGPU: METAL_LORA_DAWN_TOGGLES names Dawn toggles; expected snake_case names, e\.g\. disable_robustness, got/,
      );
  });

  it('says why f16 or subgroup matrices are missing, and how to get them where that is possible', () => {
    const nvidia = { vendor: 'nvidia', description: 'NVIDIA: 580.159.04', runtime: 'node-dawn' as const, features: ['subgroups', 'timestamp-query'] };
    const plain = precisionNotes(nvidia, []);
    expect(plain).toHaveLength(2);
    expect(plain[0]).toMatch(/^shader-f16: off, as Dawn keeps it on NVIDIA's Vulkan driver; pass \{ f16OnNvidia: true \}.*METAL_LORA_GPU_EXPERIMENTAL=1/);
    expect(plain[1]).toMatch(/^subgroup matrices: Dawn reports none without allow_unsafe_apis/);
    // Toggled on but still absent: the adapter's own answer, no advice that cannot help.
    const toggled = precisionNotes(nvidia, ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia']);
    expect(toggled).toEqual([
      'shader-f16: the adapter does not offer it; float16 tensors are refused on this backend (f32 runs everywhere)',
      'subgroup matrices: the adapter offers none; GEMMs use the portable kernels',
    ]);
    const all = { ...nvidia, features: ['shader-f16', 'chromium-experimental-subgroup-matrix'] };
    expect(precisionNotes(all, ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia'])).toEqual([]);
    expect(precisionNotes(all, [], ['shader-f16'])).toEqual(['shader-f16: left off by disableFeatures; float16 tensors are refused on this backend']);
    const browser = { vendor: 'apple', description: '', runtime: 'browser' as const, features: ['shader-f16'] };
    expect(precisionNotes(browser, [])).toEqual([
      'subgroup matrices: this browser does not offer them (Chrome behind its experimental WebGPU flag; Safari not yet); GEMMs use the portable kernels',
    ]);
  });

  gpuIt("the adapter's report carries the notes for what it lacks", async ({ context: { report } }) => {
    expect(Array.isArray(report.precisionNotes)).toBe(true);
    expect(report.precisionNotes.some((n) => n.startsWith('shader-f16'))).toBe(!report.shaderF16);
    expect(report.precisionNotes.some((n) => n.startsWith('subgroup matrices'))).toBe(report.subgroupMatrixConfigs.length === 0);
  });
});
