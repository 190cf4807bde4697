#!/usr/bin/env node
// `broker-plugin build ENTRY -o OUT.wasm [--http]`: bundles a plugin module with the SDK (rolldown)
// and makes a wasm32-wasip2 component of it (componentize-js).
//
// The world is chosen from the bundle: a plugin whose bundle imports `wasi:` interfaces (it uses
// the SDK's `http`, `fetch` or `env`) is built against `plugin-wasi` (plugin-sdk/js/wit/world.wit:
// `plugin` with `wasi:http` and `wasi:cli/environment`), any other against `plugin`, so a plugin
// that makes no request imports no `wasi:http` (the bindings cost 1.27 MB: echo-js is 12.21 MB
// without them, 13.48 MB with them).
//
// componentize-js's own `fetch` global (its `http` feature) is left out unless `--http` asks for
// it: the SDK's `fetch` says why a request failed (`HttpRequestDenied`), the engine's does not.

import { copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { useCheaperBindings } from './bindings.js';

const USAGE = 'usage: broker-plugin build ENTRY.js -o OUT.wasm [--http]';
const SDK = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const WIT = resolve(SDK, '../wit');

/**
 * A WIT folder for the world `plugin-wasi`: the SDK's world.wit, its WASI packages, and the
 * contract (plugin-sdk/wit) as one more dependency.
 */
async function wasiWit(work) {
  const dir = join(work, 'wit');
  await mkdir(join(dir, 'deps', 'broker-plugin'), { recursive: true });
  await copyFile(join(SDK, 'wit', 'world.wit'), join(dir, 'world.wit'));
  for (const file of await readdir(join(SDK, 'wit', 'deps'))) {
    await copyFile(join(SDK, 'wit', 'deps', file), join(dir, 'deps', file));
  }
  for (const file of await readdir(WIT)) {
    if (file.endsWith('.wit')) await copyFile(join(WIT, file), join(dir, 'deps', 'broker-plugin', file));
  }
  return dir;
}

function parse(args) {
  const [command, ...rest] = args;
  const options = { entry: undefined, out: undefined, http: false };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (arg === '-o' || arg === '--out') options.out = rest[++i];
    else if (arg === '--http') options.http = true;
    else if (!arg.startsWith('-') && options.entry === undefined) options.entry = arg;
    else throw new Error(`unexpected argument ${JSON.stringify(arg)}\n${USAGE}`);
  }
  if (command !== 'build' || !options.entry || !options.out) throw new Error(USAGE);
  return options;
}

async function build({ entry, out, http }) {
  // Loaded here so that a usage error needs neither.
  const { rolldown } = await import('rolldown');
  const { componentize } = await import('@bytecodealliance/componentize-js');
  // Two helpers of the glue componentize-js generates cost a call more than their work needs
  // (strings encoded character by character in interpreted JavaScript): bindings.js swaps them.
  await useCheaperBindings();
  const work = await mkdtemp(join(tmpdir(), 'broker-plugin-'));
  try {
    const bundle = await rolldown({
      input: resolve(entry),
      // The WIT imports are the component's, resolved by componentize-js.
      external: [/^broker:plugin\//, /^wasi:/],
      platform: 'neutral',
      logLevel: 'warn',
      // An import nothing uses is dropped, even from the component's interfaces: that is how a
      // plugin that never calls out ends up without `wasi:http`.
      treeshake: { moduleSideEffects: (_id, external) => !external },
    });
    const source = join(work, 'plugin.js');
    const { output } = await bundle.write({ file: source, format: 'esm' });
    await bundle.close();
    // The chunk's `imports` still names the modules tree-shaking emptied: its code says what is left.
    const wasi = output.some((chunk) => chunk.type === 'chunk' && /(?:from|import)\s*["']wasi:/.test(chunk.code));
    const { component } = await componentize({
      sourcePath: source,
      witPath: wasi ? await wasiWit(work) : WIT,
      worldName: wasi ? 'plugin-wasi' : 'plugin',
      disableFeatures: http ? [] : ['http', 'fetch-event'],
    });
    // Written beside, then renamed over: a broker watching `out` never loads half a file.
    const partial = `${out}.${process.pid}.partial`;
    await writeFile(partial, component);
    await rename(partial, out);
    console.error(`built ${out} (${(component.length / 1048576).toFixed(1)} MiB${wasi ? ', with wasi:http' : ''})`);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

try {
  await build(parse(process.argv.slice(2)));
} catch (error) {
  console.error(`broker-plugin: ${error.message ?? error}`);
  process.exit(1);
}
