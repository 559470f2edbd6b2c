import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { type Browser, chromium, type Download, type Page } from 'playwright-core';
import { build } from 'vite';
import { parseMlxAdapter, parsePeftAdapter } from 'metal-lora';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const CHROMIUM = process.env.METAL_LORA_CHROMIUM ?? '/usr/bin/chromium';
// CI installs Debian's Chromium and sets this: a missing browser is then a failure, not a skip.
const required = process.env.METAL_LORA_REQUIRE_BROWSER === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) console.warn(`[bench] skipping the browser test: no Chromium at ${CHROMIUM}`);

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.json': 'application/json',
  '.jsonl': 'text/plain',
  '.svg': 'image/svg+xml',
};

/** A static file server on 127.0.0.1 for the built page. */
function serve(root: string): Promise<Server> {
  const server = createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    let file = join(root, path);
    if (existsSync(file) && statSync(file).isDirectory()) file = join(file, 'index.html');
    if (!file.startsWith(root) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file));
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe.runIf(available || required)('the pages in headless Chromium (WebGPU on SwiftShader)', () => {
  let outDir: string;
  let server: Server;
  let browser: Browser;
  let origin: string;
  beforeAll(async () => {
    outDir = mkdtempSync(join(tmpdir(), 'bench-web-'));
    await build({ configFile: new URL('../web/vite.config.ts', import.meta.url).pathname, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
    server = await serve(outDir);
    origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--enable-unsafe-webgpu',
        '--enable-unsafe-swiftshader',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 120_000);
  afterAll(async () => {
    await browser?.close();
    server?.close();
  });

  /** A page with its console and errors collected. */
  async function open(path: string): Promise<{ page: Page; logs: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1100, height: 1400 }, acceptDownloads: true });
    const logs: string[] = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/${path}`);
    return { page, logs };
  }

  it('the benchmark page finds an adapter, passes the correctness check and benchmarks', async () => {
    {
      const { page, logs } = await open('?auto=quick');
      await page
        .waitForFunction(() => (window as unknown as { __done: boolean }).__done === true, undefined, { timeout: 540_000 })
        .catch(async (error: Error) => {
          // Where the page stood, so a timeout in CI says which phase was slow.
          const at = await page.evaluate(() => ['summary', 'correctness', 'progress'].map((id) => `${id}: ${document.getElementById(id)?.textContent}`));
          throw new Error(`${error.message}\n${at.join('\n')}\n${logs.slice(-20).join('\n')}`);
        });
      const results = (await page.evaluate(() => (window as unknown as { __results: unknown }).__results)) as {
        adapter?: { features: string[]; software: boolean };
        path?: string;
        correctness?: { ok: boolean; checks: number };
        bench?: { fusedFwdMs: number; unfusedFwdMs: number; fusedPeakBytes: number; unfusedPeakBytes: number }[];
        error?: string;
      };
      expect(results.error, logs.join('\n')).toBeUndefined();
      expect(results.adapter?.features.length).toBeGreaterThan(0);
      expect(results.correctness).toMatchObject({ ok: true, checks: 6 });
      expect(results.bench).toHaveLength(1);
      expect(results.bench![0].fusedFwdMs).toBeGreaterThan(0);
      expect(results.bench![0].fusedPeakBytes).toBeLessThan(results.bench![0].unfusedPeakBytes);
      expect(await page.locator('a[href="./finetune.html"]').count()).toBe(1);
      expect(await page.locator('#correctness').textContent()).toContain('PASS');
      // What a Mac user would screenshot: the device and path on top, a warning on a software
      // adapter, the form showing the shapes measured, a table, a chart with an axis, and copies.
      expect(await page.locator('#summary').textContent()).toMatch(/^Device: .+\. Path: f32, portable kernels; the adapter also offers /);
      expect(await page.locator('#software').isVisible()).toBe(results.adapter!.software);
      if (results.adapter!.software) expect(await page.locator('#software').textContent()).toContain('software renderer');
      expect(await page.locator('#adapter table').textContent()).toContain('shader-f16');
      expect(await page.inputValue('input[name="M"]')).toBe('64');
      expect(await page.inputValue('input[name="dim"]')).toBe('128');
      expect(await page.inputValue('input[name="ranks"]')).toBe('8');
      expect(await page.locator('#shapes').textContent()).toBe('Results for M = 64, in = out = 128, r = 8 (f32):');
      expect(await page.locator('#table td').first().textContent()).toBe('64 × 128 × 128');
      expect(await page.inputValue('#markdown')).toContain('| 64 × 128 × 128 | 8 |');
      expect(JSON.parse(await page.inputValue('#json'))).toMatchObject({ path: results.path });
      const chart = (await page.locator('#chart').innerHTML()) ?? '';
      expect(chart).toContain('ms per step');
      expect(chart).not.toContain('>tfjs</text>');
      // The docs' screenshot is refreshed on request only, so a test run leaves the tree clean.
      const shot =
        process.env.METAL_LORA_UPDATE_SCREENSHOT === '1' ? new URL('../web/screenshot.png', import.meta.url).pathname : join(outDir, 'screenshot.png');
      await page.screenshot({ path: shot, fullPage: true });
      expect(statSync(shot).size).toBeGreaterThan(10_000);
      await page.close();
    }
  }, 600_000);
  it('the fine-tuning page loads a model folder, trains, stops, resumes after a reload, chats and downloads the adapter', async () => {
    const fixtures = new URL('../../metal-lora/test/fixtures/', import.meta.url).pathname;
    const model = join(fixtures, 'models/llama');
    const { page, logs } = await open('finetune.html');
    type State = {
      ready: boolean;
      run: string;
      step: number;
      resumedFrom?: number;
      losses: number[];
      valLosses: { step: number; loss: number }[];
      reply?: { withAdapter: boolean; text: string };
      error?: string;
    };
    const state = () => page.evaluate(() => (window as unknown as { __finetune: State }).__finetune);
    const until = async (what: string, fn: string, timeout = 240_000) => {
      await page.waitForFunction(fn, undefined, { timeout }).catch(async (error: Error) => {
        const at = await page.evaluate(() =>
          ['error', 'model-status', 'data-info', 'train-status', 'generate-status'].map((id) => `${id}: ${document.getElementById(id)?.textContent}`),
        );
        throw new Error(`waiting for ${what}: ${error.message}\n${at.join('\n')}\n${logs.slice(-20).join('\n')}`);
      });
    };
    const done = (run: string) => `window.__finetune.run === '${run}' || window.__finetune.error !== undefined`;
    const settings = async () => {
      for (const [id, value] of Object.entries({
        rank: '4',
        layers: '2',
        scale: '2',
        iters: '200',
        batch: '2',
        'max-length': '24',
        lr: '0.01',
        'eval-every': '6',
      }))
        await page.fill(`#${id}`, value);
    };
    await until('the adapter', 'window.__finetune.ready === true');

    // A folder that is not a model: one clear message on the page.
    await page.setInputFiles('#model-folder', join(fixtures, 'tokenizers/wordpiece'));
    await until('the error', 'window.__finetune.error !== undefined');
    expect(await page.locator('#error').textContent()).toMatch(
      /^openModelFolder: config\.json not found; expected a model folder: config\.json, tokenizer\.json and model\.safetensors/,
    );

    // The embedded model, fetched from the page's own server (fetchModelFolder).
    await page.click('#model-embedded');
    await until('the embedded model', "document.getElementById('model-status').textContent.startsWith('loaded') || window.__finetune.error !== undefined");
    expect((await state()).error).toBeUndefined();
    expect(await page.locator('#model-info').textContent()).toContain('the embedded tiny model');

    await page.setInputFiles('#model-folder', model);
    await until('the model', "document.getElementById('model-status').textContent.startsWith('loaded llama') || window.__finetune.error !== undefined");
    expect((await state()).error).toBeUndefined();
    expect(await page.locator('#error').isVisible()).toBe(false);
    const info = (await page.locator('#model-info').textContent()) ?? '';
    expect(info).toContain('LlamaForCausalLM (llama), 2 layers, hidden 64, vocabulary 600');
    expect(info).toContain('F32 in model.safetensors');
    expect(info).toContain('f32, portable kernels');
    // SwiftShader has no shader-f16: the f16 choice is offered disabled, saying why.
    expect(await page.locator('#dtype option[value="float16"]').textContent()).toBe('f16 (this adapter has no shader-f16)');
    expect(await page.$eval('#dtype option[value="float16"]', (o) => (o as HTMLOptionElement).disabled)).toBe(true);
    expect(await page.locator('#memory').textContent()).toMatch(/^Training needs about [\d.]+ MB of GPU memory/);

    await page.click('#data-sample');
    expect(await page.locator('#data-info').textContent()).toMatch(/^train: \d+ text examples, \d+ tokens .*; valid: \d+ text examples/);
    await settings();
    // The base model's reply, before any adapter exists.
    await page.fill('#max-tokens', '6');
    await page.click('#generate');
    await until('the reply before training', 'window.__finetune.reply !== undefined || window.__finetune.error !== undefined');
    const before = (await state()).reply!;
    expect(before.withAdapter).toBe(false);
    expect(await page.locator('#generate-status').textContent()).toMatch(/^[1-9]\d* tokens without the adapter/);
    await page.click('#train');
    await until('a few steps', 'window.__finetune.step >= 2 || window.__finetune.error !== undefined');
    await page.click('#stop');
    await until('the stop', done('stopped'));
    const stopped = await state();
    expect(stopped.error, logs.join('\n')).toBeUndefined();
    expect(stopped.step).toBeLessThan(10);
    expect(await page.locator('#train-status').textContent()).toMatch(/^stopped at iteration \d+: saved in this browser/);

    // A reload forgets everything but what IndexedDB keeps: Resume continues the stopped run.
    await page.reload();
    await until('the adapter again', 'window.__finetune.ready === true');
    await page.setInputFiles('#model-folder', model);
    await until('the model again', "document.getElementById('model-status').textContent.startsWith('loaded') || window.__finetune.error !== undefined");
    expect(await page.locator('#model-status').textContent()).toContain(`A stopped run of this model (step ${stopped.step}) is saved in this browser`);
    // The saved settings are back in the form; fewer iterations than first asked for end the run sooner.
    expect(await page.inputValue('#iters')).toBe('200');
    expect(await page.inputValue('#rank')).toBe('4');
    await page.fill('#iters', '10');
    await page.click('#data-sample');
    await page.click('#resume');
    await until('the resumed run', done('done'));
    const trained = await state();
    expect(trained.error, logs.join('\n')).toBeUndefined();
    expect(trained.step).toBe(10);
    expect(trained.resumedFrom).toBe(stopped.step);
    expect(await page.locator('#train-status').textContent()).toMatch(/^done: 10 iterations, loss [\d.]+, validation loss [\d.]+/);
    // The curve before the stop came back from IndexedDB, and the loss fell.
    expect(trained.losses).toHaveLength(10);
    expect(trained.losses.slice(0, stopped.step)).toEqual(stopped.losses.slice(0, stopped.step));
    expect(trained.losses.every(Number.isFinite)).toBe(true);
    expect(Math.min(...trained.losses.slice(-3))).toBeLessThan(trained.losses[0]);
    expect(trained.valLosses.map((v) => v.step)).toEqual([0, 6, 10]);

    // Greedy replies, streamed into the page: the trained adapter changes the reply; switched off,
    // the model replies as before training.
    await page.fill('#max-tokens', '6');
    await page.click('#generate');
    await until('the reply', 'window.__finetune.reply?.withAdapter === true || window.__finetune.error !== undefined');
    const adapted = (await state()).reply!;
    expect(await page.locator('#generate-status').textContent()).toMatch(/^[1-9]\d* tokens with the adapter/);
    expect(await page.locator('#reply').textContent()).toBe(adapted.text);
    expect(adapted.text).not.toBe(before.text);
    await page.uncheck('#use-adapter');
    await page.click('#generate');
    await until('the base reply', 'window.__finetune.reply?.withAdapter === false || window.__finetune.error !== undefined');
    expect((await state()).reply?.text).toBe(before.text);

    // The adapter as files mlx-lm and PEFT read.
    const downloads = async (id: string): Promise<Record<string, Uint8Array>> => {
      const got: Download[] = [];
      const both = new Promise<void>((resolve) => {
        const on = (d: Download) => {
          got.push(d);
          if (got.length === 2) {
            page.off('download', on);
            resolve();
          }
        };
        page.on('download', on);
      });
      await page.click(id);
      await both;
      return Object.fromEntries(await Promise.all(got.map(async (d) => [d.suggestedFilename(), new Uint8Array(readFileSync(await d.path()))] as const)));
    };
    const mlx = await downloads('#download-mlx');
    expect(Object.keys(mlx).sort()).toEqual(['adapter_config.json', 'adapters.safetensors']);
    const mlxAdapter = parseMlxAdapter({ weights: mlx['adapters.safetensors'], config: new TextDecoder().decode(mlx['adapter_config.json']) });
    expect(mlxAdapter).toMatchObject({ rank: 4, scale: 2, numLayers: 2 });
    expect(Object.keys(mlxAdapter.modules)).toHaveLength(14);
    // Trained: B left zero would mean the adapter did nothing.
    expect(Object.values(mlxAdapter.modules).some((m) => Array.from(m.b).some((v) => v !== 0))).toBe(true);
    expect(await page.locator('#downloads a').allTextContents()).toEqual(['adapters.safetensors', 'adapter_config.json']);
    const peft = await downloads('#download-peft');
    expect(Object.keys(peft).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const peftAdapter = parsePeftAdapter({ weights: peft['adapter_model.safetensors'], config: new TextDecoder().decode(peft['adapter_config.json']) });
    expect(Object.keys(peftAdapter.modules)).toHaveLength(14);
    expect(peftAdapter.modules).toEqual(mlxAdapter.modules);
    expect((await state()).error).toBeUndefined();

    const shot = process.env.METAL_LORA_UPDATE_SCREENSHOT === '1' ? new URL('../web/finetune.png', import.meta.url).pathname : join(outDir, 'finetune.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).toBeGreaterThan(10_000);
    await page.close();
  }, 600_000);
});
