import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';

export const root = new URL('../../..', import.meta.url).pathname;

/**
 * Runs the CLI from source, as `pnpm start` does. Asynchronously: a worker blocked on a child
 * process cannot answer vitest's RPC, which fails the whole run on a loaded machine.
 */
export function cli(args: string[], input?: string): Promise<{ code: number | null; out: string; err: string }> {
  const argv = ['--conditions=source', '--import', './scripts/register-wgsl.mjs', '--import', 'tsx', 'packages/metal-lora/src/cli.ts', ...args];
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      argv,
      { cwd: root, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024, env: { ...process.env, XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? tmpdir() } },
      (error, stdout, stderr) => {
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, out: stdout, err: stderr });
      },
    );
    // What a user would type or pipe in (`chat`, `generate --prompt -`); nothing otherwise.
    child.stdin?.end(input ?? '');
  });
}
