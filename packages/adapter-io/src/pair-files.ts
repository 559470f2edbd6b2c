/**
 * Writing a weights file and its config as one unit (Node only).
 *
 * A save takes the folder's lock, then writes the weights to `<weights>.pending` and then the
 * config to `<config>.for-<weights>.pending`, each through a flushed temporary file, and renames
 * both over the old files. A pending config therefore means the new pair is complete, and names
 * its weights: a reader (and the next save) uses the new weights (`<weights>.pending`, or
 * `<weights>` once renamed) with it, while a pending weights file alone is an unfinished save,
 * ignored and removed. A kill at any point leaves the old pair or the new one, never a mix.
 */
import { randomBytes } from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { hostname } from 'node:os';
import { dirname, join } from 'node:path';
import { FormatError, StateError } from '@metal-lora/tensor';

const PENDING = '.pending';
export const LOCK_FILE = '.metal-lora.lock';

/** Writes `bytes` to `path` through a flushed temporary file named after it (`.<name>.<pid>-<hex>.tmp`). */
export function writeDurable(path: string, bytes: Uint8Array | string): void {
  const tmp = join(dirname(path), `.${path.slice(dirname(path).length + 1)}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'w');
  try {
    const data = typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : bytes;
    let written = 0;
    while (written < data.length) written += writeSync(fd, data, written, data.length - written);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (error) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
    rmSync(tmp, { force: true });
    throw error;
  }
}

/** Flushes a folder's entries (the renames in it) where the platform allows it. */
function syncFolder(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Not every platform can open a folder for syncing; the renames are still atomic.
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as { code?: string }).code === 'EPERM';
  }
}

/**
 * Takes the folder's save lock (`.metal-lora.lock`, created exclusively, holding the pid and host).
 * A lock whose process has died is taken over; one held by a live process is a `StateError`.
 * Returns the release function.
 */
export function lockFolder(op: string, dir: string): () => void {
  const lock = join(dir, LOCK_FILE);
  const me = JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() });
  for (let attempt = 0; attempt < 5; attempt++) {
    // The lock appears with its content or not at all: written beside it, then hard-linked to its
    // name (which fails if the name exists), so a holder killed at any point leaves a readable lock.
    const draft = join(dir, `${LOCK_FILE}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`);
    writeFileSync(draft, me);
    try {
      linkSync(draft, lock);
      return () => rmSync(lock, { force: true });
    } catch (error) {
      const code = (error as { code?: string }).code;
      if (code !== 'EEXIST') {
        // A file system without hard links (FAT, some network shares): an exclusive create,
        // whose content a holder killed at once may leave empty (then it is taken as stale).
        if (!['EPERM', 'ENOTSUP', 'ENOSYS', 'EOPNOTSUPP', 'EXDEV'].includes(code ?? '')) throw error;
        try {
          const fd = openSync(lock, 'wx');
          writeSync(fd, me);
          closeSync(fd);
          return () => rmSync(lock, { force: true });
        } catch (fallback) {
          if ((fallback as { code?: string }).code !== 'EEXIST') throw fallback;
        }
      }
    } finally {
      rmSync(draft, { force: true });
    }
    let holder: { pid?: number; host?: string } = {};
    try {
      const text = readFileSync(lock, 'utf8');
      // Empty only where hard links are missing and the holder died between create and write.
      holder = text === '' && Date.now() - statSync(lock).mtimeMs > 5000 ? { host: hostname() } : JSON.parse(text);
    } catch {
      // Just removed by its holder, or being written: try again.
      continue;
    }
    // A holder on another host cannot be checked; one here is alive or not (an old empty lock has no pid: dead).
    const sameHost = holder.host === hostname();
    if (!sameHost || (typeof holder.pid === 'number' && alive(holder.pid))) {
      throw new StateError(
        op,
        `another process (pid ${holder.pid} on ${holder.host}) is saving to ${dir}; expected the folder to be free (if no save is running, remove ${lock}), got it locked`,
      );
    }
    // The holder died: move its lock away under a name of our own, then try again.
    try {
      const stale = `${lock}.stale-${process.pid}-${randomBytes(4).toString('hex')}`;
      renameSync(lock, stale);
      rmSync(stale, { force: true });
    } catch {
      // Someone else took it over first.
    }
  }
  throw new StateError(op, `could not take the save lock of ${dir}; expected to create ${lock}, got it changing under us`);
}

/** A complete pending pair in `dir` (a save that got as far as writing its config), if there is one. */
function pendingPair(dir: string, config: string): { config: string; weights: string } | undefined {
  const prefix = `${config}.for-`;
  const found = readdirSync(dir).find((n) => n.startsWith(prefix) && n.endsWith(PENDING));
  return found ? { config: found, weights: found.slice(prefix.length, -PENDING.length) } : undefined;
}

/**
 * The newest complete pair of `config` in `dir`, as a reader should take it: the pending pair an
 * interrupted save completed on disk (the weights name tells the format), else undefined.
 */
export function completedPendingPair(dir: string, config: string): { weightsName: string; weights: string; config: string } | undefined {
  const p = pendingPair(dir, config);
  if (!p) return undefined;
  const pendingWeights = join(dir, p.weights + PENDING);
  return { weightsName: p.weights, weights: existsSync(pendingWeights) ? pendingWeights : join(dir, p.weights), config: join(dir, p.config) };
}

/** Under the lock: finishes a save that got as far as its pending config, discards an unfinished one, and removes dead savers' temporaries. */
function recover(dir: string, config: string): void {
  const p = pendingPair(dir, config);
  if (p) {
    if (existsSync(join(dir, p.weights + PENDING))) renameSync(join(dir, p.weights + PENDING), join(dir, p.weights));
    renameSync(join(dir, p.config), join(dir, config));
  }
  for (const name of readdirSync(dir)) {
    const tmp = /^\..+\.(\d+)-[0-9a-f]{8}\.tmp$/.exec(name);
    const ours = name.endsWith(`.safetensors${PENDING}`) || (name.startsWith(`${config}.for-`) && name.endsWith(PENDING));
    if (ours || (tmp && (Number(tmp[1]) === process.pid || !alive(Number(tmp[1]))))) rmSync(join(dir, name), { force: true });
  }
  syncFolder(dir);
}

/**
 * Writes a weights file and its config into `dir` as one unit under the folder's lock; `extra`
 * files (numbered checkpoints) are written durably beside them first, and `obsolete` files (the
 * other format's weights) are removed once the new pair is in place.
 */
export function writePair(
  op: string,
  dir: string,
  pair: { weights: [string, Uint8Array]; config: [string, string] },
  extra: [string, Uint8Array][] = [],
  obsolete: string[] = [],
): void {
  const release = lockFolder(op, dir);
  try {
    const [weightsName, weightsBytes] = pair.weights;
    const [configName, configText] = pair.config;
    recover(dir, configName);
    for (const [name, bytes] of extra) writeDurable(join(dir, name), bytes);
    const pendingConfig = join(dir, `${configName}.for-${weightsName}${PENDING}`);
    writeDurable(join(dir, weightsName + PENDING), weightsBytes);
    writeDurable(pendingConfig, configText);
    syncFolder(dir);
    renameSync(join(dir, weightsName + PENDING), join(dir, weightsName));
    renameSync(pendingConfig, join(dir, configName));
    for (const name of obsolete) rmSync(join(dir, name), { force: true });
    syncFolder(dir);
  } catch (error) {
    if (error instanceof FormatError || error instanceof StateError) throw error;
    const code = (error as { code?: string }).code;
    throw new FormatError(op, `could not write the adapter to ${dir} (${(error as Error).message})`, { key: dir }, 'a writable folder', code ?? 'an error');
  } finally {
    release();
  }
}
