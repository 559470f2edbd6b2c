import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateError } from '@metal-lora/tensor';
import { describe, expect, it } from 'vitest';
import { loadAdapter, saveAdapter } from '../src/node';
import { versionedAdapter, versionOf } from './helpers/versions';

const root = new URL('../../..', import.meta.url).pathname;
const child = new URL('./helpers/save-child.ts', import.meta.url).pathname;

function start(args: string[]): { proc: ChildProcess; lines: string[]; line: (match: RegExp) => Promise<string> } {
  const proc = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', child, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
  const lines: string[] = [];
  const waiters: [RegExp, (l: string) => void][] = [];
  let buffer = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop() ?? '';
    for (const l of parts) {
      lines.push(l);
      for (const [i, [re, resolve]] of [...waiters.entries()].reverse()) {
        if (!re.test(l)) continue;
        waiters.splice(i, 1);
        resolve(l);
      }
    }
  });
  const line = (match: RegExp) =>
    new Promise<string>((resolve, reject) => {
      const seen = lines.find((l) => match.test(l));
      if (seen) return resolve(seen);
      const timer = setTimeout(() => reject(new Error(`no line matching ${match} from the child; it printed: ${lines.join(' | ')}`)), 30_000);
      waiters.push([
        match,
        (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      ]);
    });
  return { proc, lines, line };
}

const exited = (proc: ChildProcess) =>
  new Promise<void>((resolve) => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve())));

describe('adapter saves under kills and concurrency', () => {
  it('a process killed at a random point of its saves leaves the old or the new adapter, whole (60 kills)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'adapter-kill-'));
    await saveAdapter(dir, versionedAdapter(1), { format: 'mlx' });
    const seen = new Set<number>();
    let interrupted = 0;
    for (let k = 0; k < 60; k++) {
      const { proc, line } = start([dir, 'loop']);
      await line(/^saved 0$/);
      // Kill somewhere inside the following saves (each takes a few milliseconds).
      await new Promise((r) => setTimeout(r, Math.random() * 60));
      proc.kill('SIGKILL');
      await exited(proc);
      // The lock is held for the whole of a save: left behind, it shows the kill landed inside one.
      if (existsSync(join(dir, '.metal-lora.lock'))) interrupted++;
      const adapter = loadAdapter(dir);
      seen.add(versionOf(adapter));
    }
    expect([...seen].sort()).toEqual([1, 2]);
    expect(interrupted).toBeGreaterThanOrEqual(3);
    // The next save cleans up what the killed ones left, and takes over their lock.
    await saveAdapter(dir, versionedAdapter(3), { format: 'mlx' });
    expect(versionOf(loadAdapter(dir))).toBe(3);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.endsWith('.pending') || f.startsWith('.metal-lora.lock'))).toEqual([]);
  }, 240_000);

  it('two processes saving to one folder: one wins whole, the other fails with a clear error', async () => {
    for (let round = 0; round < 4; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'adapter-race-'));
      const a = start([dir, 'once', '1']);
      const b = start([dir, 'once', '2']);
      await Promise.all([exited(a.proc), exited(b.proc)]);
      const results = [a.lines[0], b.lines[0]];
      for (const r of results) expect(r).toMatch(/^(saved|error StateError: saveAdapter: another process \(pid \d+ on .+\) is saving to .+)$/);
      expect(results.some((r) => r === 'saved')).toBe(true);
      const version = versionOf(loadAdapter(dir));
      if (!results.every((r) => r === 'saved')) expect(results[version - 1]).toBe('saved');
    }
  }, 120_000);

  it('a save into a folder locked by a live process is refused at once', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'adapter-locked-'));
    const { utimesSync, writeFileSync } = await import('node:fs');
    const { hostname } = await import('node:os');
    const lock = join(dir, '.metal-lora.lock');
    writeFileSync(lock, JSON.stringify({ pid: process.pid, host: hostname() }));
    await expect(saveAdapter(dir, versionedAdapter(1), { format: 'mlx' })).rejects.toThrow(StateError);
    // Another machine's lock (a shared folder) cannot be checked, so it is respected too.
    writeFileSync(lock, JSON.stringify({ pid: 1, host: `not-${hostname()}` }));
    await expect(saveAdapter(dir, versionedAdapter(1), { format: 'mlx' })).rejects.toThrow(/another process \(pid 1 on not-/);
    expect(existsSync(join(dir, 'adapters.safetensors'))).toBe(false);
    // An empty lock (a holder killed between creating and writing it, where hard links are
    // missing) is stale once it is a few seconds old.
    writeFileSync(lock, '');
    utimesSync(lock, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    await saveAdapter(dir, versionedAdapter(2), { format: 'mlx' });
    expect(versionOf(loadAdapter(dir))).toBe(2);
    expect(existsSync(lock)).toBe(false);
  });
});
