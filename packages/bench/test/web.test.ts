import { existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { chromium } from 'playwright-core';
import { build } from 'vite';
import { describe, expect, it } from 'vitest';

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

describe.runIf(available || required)('the benchmark page in headless Chromium (WebGPU on SwiftShader)', () => {
  it('finds an adapter, passes the correctness check, benchmarks and fine-tunes', async () => {
    const outDir = mkdtempSync(join(tmpdir(), 'bench-web-'));
    await build({ configFile: new URL('../web/vite.config.ts', import.meta.url).pathname, logLevel: 'warn', build: { outDir, emptyOutDir: true } });
    const server = await serve(outDir);
    const browser = await chromium.launch({
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
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 1400 } });
      const logs: string[] = [];
      page.on('console', (m) => logs.push(m.text()));
      page.on('pageerror', (e) => logs.push(`pageerror: ${e.message}`));
      await page.goto(`http://127.0.0.1:${(server.address() as AddressInfo).port}/?auto=quick`);
      await page
        .waitForFunction(() => (window as unknown as { __done: boolean }).__done === true, undefined, { timeout: 540_000 })
        .catch(async (error: Error) => {
          // Where the page stood, so a timeout in CI says which phase was slow.
          const at = await page.evaluate(() =>
            ['summary', 'correctness', 'progress', 'finetune-status'].map((id) => `${id}: ${document.getElementById(id)?.textContent}`),
          );
          throw new Error(`${error.message}\n${at.join('\n')}\n${logs.slice(-20).join('\n')}`);
        });
      const results = (await page.evaluate(() => (window as unknown as { __results: unknown }).__results)) as {
        adapter?: { features: string[]; software: boolean };
        path?: string;
        correctness?: { ok: boolean; checks: number };
        bench?: { fusedFwdMs: number; unfusedFwdMs: number; fusedPeakBytes: number; unfusedPeakBytes: number }[];
        finetune?: { lossBefore: number; lossAfter: number; losses: number[] };
        error?: string;
      };
      expect(results.error, logs.join('\n')).toBeUndefined();
      expect(results.adapter?.features.length).toBeGreaterThan(0);
      expect(results.correctness).toMatchObject({ ok: true, checks: 6 });
      expect(results.bench).toHaveLength(1);
      expect(results.bench![0].fusedFwdMs).toBeGreaterThan(0);
      expect(results.bench![0].fusedPeakBytes).toBeLessThan(results.bench![0].unfusedPeakBytes);
      expect(results.finetune!.lossAfter).toBeLessThan(results.finetune!.lossBefore);
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
    } finally {
      await browser.close();
      server.close();
    }
  }, 600_000);
});
