/**
 * A process that saves adapters to one folder (the crash and concurrency tests run it):
 *   save-child.ts DIR loop      alternates versions 1 and 2 until killed, printing each save
 *   save-child.ts DIR once V    saves version V once; prints "saved" or the error's message
 */
import { saveAdapter } from '../../src/node';
import { versionedAdapter } from './versions';

const [dir, mode, version] = process.argv.slice(2);
if (mode === 'loop') {
  process.stdout.write('ready\n');
  for (let i = 0; ; i++) {
    await saveAdapter(dir, versionedAdapter((i % 2) + 1), { format: i % 4 < 2 ? 'mlx' : 'peft' });
    process.stdout.write(`saved ${i}\n`);
  }
} else {
  try {
    await saveAdapter(dir, versionedAdapter(Number(version)), { format: 'mlx' });
    process.stdout.write('saved\n');
  } catch (error) {
    process.stdout.write(`error ${(error as Error).name}: ${(error as Error).message}\n`);
  }
}
