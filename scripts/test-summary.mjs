// Adds up the vitest JSON reports of every package and prints one closing line,
// "N passed, N failed, N skipped", so a reader (or CI) sees the whole suite's result at once.
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
if (process.argv.includes('--clean')) {
  // Old reports must not count for a run that did not happen.
  for (const name of readdirSync(join(root, 'packages'))) rmSync(join(root, 'packages', name, 'test-results.json'), { force: true });
  process.exit(0);
}
let passed = 0;
let failed = 0;
let skipped = 0;
const missing = [];
for (const name of readdirSync(join(root, 'packages'))) {
  const pkg = JSON.parse(readFileSync(join(root, 'packages', name, 'package.json'), 'utf8'));
  if (!pkg.scripts?.test) continue;
  const file = join(root, 'packages', name, 'test-results.json');
  if (!existsSync(file)) {
    missing.push(name);
    continue;
  }
  const report = JSON.parse(readFileSync(file, 'utf8'));
  passed += report.numPassedTests;
  failed += report.numFailedTests;
  skipped += report.numPendingTests + report.numTodoTests;
  for (const suite of report.testResults) {
    for (const t of suite.assertionResults) {
      if (t.status !== 'failed') continue;
      console.log(`FAILED ${name}: ${t.fullName}`);
      // The first lines of why, so a log's tail names the cause (the whole message is above).
      const why = (t.failureMessages ?? [])
        .join('\n')
        .split('\n')
        .filter((l) => l.trim())
        .slice(0, 6);
      for (const line of why) console.log(`  ${line.length > 300 ? `${line.slice(0, 300)}…` : line}`);
    }
  }
}
if (missing.length) console.log(`no test report from: ${missing.join(', ')}`);
// A package's test command can fail with every test passed (vitest's unhandled errors: a worker
// that timed out or crashed, an error thrown outside any test), which its JSON report does not
// show; turbo's exit status does.
const at = process.argv.indexOf('--turbo-exit');
const turboExit = at > 0 ? Number(process.argv[at + 1]) : 0;
if (turboExit !== 0 && failed === 0)
  console.log(`a package's test command failed (exit ${turboExit}) with no failing test: see its output above (unhandled errors?)`);
// .ci/run records when it started: its log shows the whole run's duration next to the result.
const ciStarted = Number(process.env.METAL_LORA_CI_STARTED);
if (ciStarted > 0) console.log(`ci: ${Math.round(Date.now() / 1000 - ciStarted)} s since .ci/run started`);
console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed > 0 || missing.length > 0 || passed === 0 || turboExit !== 0 ? 1 : 0);
