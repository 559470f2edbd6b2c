#!/usr/bin/env node
// The packages as a user installs them: builds, packs every publishable package with pnpm,
// installs the tarballs with npm into a fresh project outside the workspace (no workspace links,
// no `source` condition), and then, against the built output only:
//   - publint (strict) and arethetypeswrong (ESM-only profile) on each tarball;
//   - every ```ts block of the root README and of each published package's README, type-checked
//     by tsc (strict, no skipLibCheck) under a Node tsconfig and a browser tsconfig, then run with
//     Node (the blocks of one README run in order in one folder, so a block may use files an
//     earlier one wrote);
//   - the umbrella's exports: every name of tensor, nn, adapter-io and metal-kernels is there;
//   - a browser bundle (esbuild, platform browser, no externals) of every browser entry, which must
//     not contain Dawn or a Node built-in;
//   - the CLI the tarball installs: --help, and the main job on its embedded default (--quick).
// Any failure exits 1 with the step named. `--keep` leaves the temporary project for inspection.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const keep = process.argv.includes('--keep');
const started = Date.now();
const rootPkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const pinned = (name) => rootPkg.devDependencies[name];

let failures = 0;
function step(name) {
  console.log(`consumer-check: ${name} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}
function fail(what, detail = '') {
  failures++;
  console.log(`consumer-check: FAILED ${what}${detail ? `\n${detail.trimEnd()}` : ''}`);
}
/** Runs a command; its output is shown only when it fails. Returns whether it succeeded. */
function run(what, command, args, options = {}) {
  const r = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 600_000, ...options });
  if (r.status !== 0) {
    fail(what, `${r.error ? `${r.error.message}\n` : ''}${r.stdout ?? ''}${r.stderr ?? ''}`);
    return undefined;
  }
  return r;
}

const packages = readdirSync(join(root, 'packages'))
  .map((dir) => ({ dir: join(root, 'packages', dir), pkg: JSON.parse(readFileSync(join(root, 'packages', dir, 'package.json'), 'utf8')) }))
  .filter(({ pkg }) => !pkg.private);

step('build');
execFileSync('pnpm', ['build'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });

const work = mkdtempSync(join(tmpdir(), 'metal-lora-consumer-'));
const packs = join(work, 'packs');
mkdirSync(packs);
step(`pack ${packages.length} packages into ${packs}`);
const tarballs = {};
for (const { dir, pkg } of packages) {
  const before = new Set(readdirSync(packs));
  if (!run(`pnpm pack ${pkg.name}`, 'pnpm', ['pack', '--pack-destination', packs], { cwd: dir })) continue;
  const made = readdirSync(packs).find((f) => !before.has(f));
  tarballs[pkg.name] = join(packs, made);
}

step('publint (strict) and arethetypeswrong (esm-only) on each tarball');
const { publint } = await import('publint');
const { formatMessage } = await import('publint/utils');
for (const { dir, pkg } of packages) {
  const tarball = readFileSync(tarballs[pkg.name]);
  const { messages } = await publint({
    pack: { tarball: tarball.buffer.slice(tarball.byteOffset, tarball.byteOffset + tarball.byteLength) },
    strict: true,
    level: 'suggestion',
  });
  const packed = JSON.parse(execFileSync('tar', ['-xzOf', tarballs[pkg.name], 'package/package.json'], { encoding: 'utf8' }));
  for (const m of messages) {
    const text = `${pkg.name}: ${m.type}: ${formatMessage(m, packed) ?? m.code}`;
    if (m.type === 'suggestion') console.log(`consumer-check: publint ${text}`);
    else fail(`publint ${text}`);
  }
  if (JSON.stringify(packed.exports ?? {}).includes('"source"')) fail(`${pkg.name}: the published exports carry the workspace-only 'source' condition`);
  const listed = execFileSync('tar', ['-tzf', tarballs[pkg.name]], { encoding: 'utf8' }).split('\n');
  for (const file of ['LICENSE', 'README.md']) {
    if (!listed.includes(`package/${file}`)) fail(`${pkg.name}: the tarball has no ${file}`);
  }
  if (!/^\d+\.\d+\.\d+/.test(packed.version) || packed.version === '0.0.0') fail(`${pkg.name}: version ${packed.version}; expected a real starting version`);
  run(`attw ${pkg.name}`, join(root, 'node_modules/.bin/attw'), [tarballs[pkg.name], '--profile', 'esm-only', '--format', 'ascii'], { cwd: dir });
}

const project = join(work, 'project');
mkdirSync(project);
step(`npm install the tarballs into ${project}`);
const deps = Object.fromEntries(Object.entries(tarballs).map(([name, file]) => [name, `file:${file}`]));
writeFileSync(
  join(project, 'package.json'),
  `${JSON.stringify(
    {
      name: 'metal-lora-consumer',
      private: true,
      type: 'module',
      dependencies: deps,
      // The packages depend on each other by version: point those at the tarballs too.
      overrides: Object.fromEntries(Object.keys(deps).map((name) => [name, `$${name}`])),
      devDependencies: { typescript: pinned('typescript'), '@types/node': pinned('@types/node'), esbuild: pinned('esbuild') },
    },
    null,
    2,
  )}\n`,
);
run('npm install', 'npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: project });
const installed = readdirSync(join(project, 'node_modules', '@metal-lora'));
if (installed.includes('bench')) fail('the private bench package was installed');

step('README code blocks: extract');
const readmes = [['root', join(root, 'README.md')], ...packages.map(({ dir, pkg }) => [pkg.name.replace('@metal-lora/', ''), join(dir, 'README.md')])];
const snippets = [];
for (const [name, file] of readmes) {
  const text = readFileSync(file, 'utf8');
  let n = 0;
  for (const m of text.matchAll(/^```(ts|typescript|js|javascript)\n([\s\S]*?)^```/gm)) {
    n++;
    snippets.push({ readme: name, file: `${name}-${n}.ts`, code: m[2] });
  }
}
mkdirSync(join(project, 'snippets'));
for (const s of snippets) writeFileSync(join(project, 'snippets', s.file), `${s.code}\nexport {};\n`);
console.log(`consumer-check: ${snippets.length} blocks from ${readmes.length} READMEs`);

const common = {
  target: 'ES2022',
  module: 'NodeNext',
  moduleResolution: 'NodeNext',
  strict: true,
  skipLibCheck: false,
  noEmit: true,
  verbatimModuleSyntax: true,
};
const configs = {
  // A Node project. WebGPU's types (@webgpu/types, a dependency of the packages) name DOM types,
  // so declarations are checked with TypeScript's default DOM library.
  'tsconfig.node.json': { ...common, lib: ['ES2022', 'DOM'], types: ['node'] },
  // A Node project set up as @tsconfig/node20 does: no DOM library, declarations not checked.
  'tsconfig.node-nodom.json': { ...common, lib: ['ES2022'], types: ['node'], skipLibCheck: true },
  // A browser project.
  'tsconfig.browser.json': { ...common, lib: ['ES2022', 'DOM'], types: [] },
};
for (const [file, compilerOptions] of Object.entries(configs)) {
  writeFileSync(join(project, file), JSON.stringify({ compilerOptions, include: ['snippets', 'exports-check.ts'] }, null, 2));
}
writeFileSync(
  join(project, 'exports-check.ts'),
  `import * as umbrella from 'metal-lora';
import * as tensor from '@metal-lora/tensor';
import * as nn from '@metal-lora/nn';
import * as io from '@metal-lora/adapter-io';
import * as kernels from '@metal-lora/metal-kernels';
// Names the umbrella takes from a higher layer on purpose: nn's valueAndGrad (both forms) over
// tensor's, and its own saveAdapter / loadAdapter on models over adapter-io's on folders.
const own = new Set(['valueAndGrad', 'saveAdapter', 'loadAdapter']);
const missing: string[] = [];
for (const [pkg, mod] of Object.entries({ tensor, nn, io, kernels })) {
  for (const name of Object.keys(mod)) if (!own.has(name) && (umbrella as Record<string, unknown>)[name] !== (mod as Record<string, unknown>)[name]) missing.push(pkg + '.' + name);
}
if (missing.length) throw new Error('metal-lora does not re-export ' + missing.length + ' names: ' + missing.slice(0, 20).join(', '));
console.log('metal-lora exports ' + Object.keys(umbrella).length + ' names, all of tensor, nn, adapter-io and metal-kernels');
export {};
`,
);

step('tsc --noEmit (strict; Node, Node without DOM, browser configurations)');
const tsc = join(project, 'node_modules', 'typescript', 'bin', 'tsc');
for (const file of Object.keys(configs)) run(`tsc -p ${file}`, process.execPath, [tsc, '-p', file], { cwd: project });

step('run the blocks and the exports check with Node (compiled by esbuild, imports left to Node)');
const esbuild = join(project, 'node_modules', '.bin', 'esbuild');
const compiled = join(project, 'compiled');
const entries = [...snippets.map((s) => join('snippets', s.file)), 'exports-check.ts'];
run(
  'esbuild (compile the blocks)',
  esbuild,
  [...entries, `--outdir=${compiled}`, '--format=esm', '--platform=node', '--target=node20', '--out-extension:.js=.mjs'],
  { cwd: project },
);
// Node's own environment, without the workspace's module conditions.
const env = { ...process.env, NODE_OPTIONS: '' };
const exportsRun = run('the umbrella exports every package', process.execPath, [join(compiled, 'exports-check.mjs')], { cwd: project, env });
if (exportsRun) console.log(`consumer-check: ${exportsRun.stdout.trim()}`);
for (const [name] of readmes) {
  const cwd = join(work, `run-${name}`);
  mkdirSync(cwd);
  if (name === 'metal-lora') {
    // The fine-tuning example reads a downloaded model folder and a data folder: a tiny Llama
    // fixture (with a chat template) stands in for the model, and a few chat lines for the data.
    cpSync(join(root, 'packages/metal-lora/test/fixtures/models/llama'), join(cwd, 'models/SmolLM2-135M-Instruct'), { recursive: true });
    mkdirSync(join(cwd, 'data'));
    const line = (i) =>
      JSON.stringify({
        messages: [
          { role: 'user', content: `What comes after ${i}?` },
          { role: 'assistant', content: `${i + 1}.` },
        ],
      });
    writeFileSync(join(cwd, 'data', 'train.jsonl'), Array.from({ length: 12 }, (_, i) => line(i)).join('\n'));
    writeFileSync(join(cwd, 'data', 'valid.jsonl'), Array.from({ length: 4 }, (_, i) => line(i + 40)).join('\n'));
  }
  // Resolution starts at the script, so the script sits in the project; the folder is the cwd.
  for (const s of snippets.filter((x) => x.readme === name)) {
    const script = join(compiled, 'snippets', basename(s.file).replace(/\.ts$/, '.mjs'));
    const r = run(`README block ${s.file}`, process.execPath, [script], { cwd, env, timeout: 300_000 });
    if (r) console.log(`consumer-check: ${s.file} ran: ${r.stdout.trim().split('\n').slice(-1)[0] ?? ''}`);
  }
}

step('browser bundles (esbuild, platform browser, no externals)');
const browserEntries = ['metal-lora', 'metal-lora/browser', '@metal-lora/metal-kernels', '@metal-lora/tensor', '@metal-lora/nn', '@metal-lora/adapter-io'];
mkdirSync(join(project, 'web'));
for (const [i, spec] of browserEntries.entries()) {
  const entry = join(project, 'web', `entry-${i}.js`);
  writeFileSync(entry, `import * as m from '${spec}';\nconsole.log(Object.keys(m).length);\n`);
  const out = join(project, 'web', `bundle-${i}.js`);
  if (
    !run(`browser bundle of ${spec}`, esbuild, [entry, '--bundle', '--platform=browser', '--format=esm', `--outfile=${out}`, '--log-level=warning'], {
      cwd: project,
    })
  )
    continue;
  const bundle = readFileSync(out, 'utf8');
  const leaked = [
    ...new Set(
      [...bundle.matchAll(/\b(?:import|from|require)\s*\(?\s*["']((?:node:)?(?:fs|path|url|crypto|os|child_process|module|webgpu)(?:\/[\w/]*)?)["']/g)].map(
        (m) => m[1],
      ),
    ),
  ];
  if (leaked.length) fail(`browser bundle of ${spec} imports ${leaked.join(', ')}`);
}

step('the installed CLI');
const bin = join(project, 'node_modules', '.bin', 'metal-lora');
const help = run('metal-lora --help', bin, ['--help'], { cwd: project, env });
if (help && !/--iters/.test(help.stdout)) fail('metal-lora --help does not list --iters', help.stdout);
const cliDir = join(work, 'run-cli');
mkdirSync(cliDir);
const job = run('metal-lora --quick (the main job on its embedded default)', bin, ['--quick', '--backend', 'cpu'], { cwd: cliDir, env, timeout: 600_000 });
if (job) console.log(`consumer-check: metal-lora --quick: ${job.stdout.trim().split('\n').slice(-1)[0]}`);

const seconds = ((Date.now() - started) / 1000).toFixed(0);
if (!keep) rmSync(work, { recursive: true, force: true });
if (failures) {
  console.log(`consumer-check: ${failures} failure(s) in ${seconds} s${keep ? `; the project is in ${work}` : ''}`);
  process.exit(1);
}
console.log(`consumer-check: ok in ${seconds} s${keep ? `; the project is in ${work}` : ''}`);
