#!/usr/bin/env node
// `broker-plugin build ENTRY -o OUT.wasm [--http]`: bundles a plugin module with the SDK (rolldown)
// and makes a wasm32-wasip2 component of it against the world `plugin` (componentize-js).
//
// Without `--http` the component is built without componentize-js's default `wasi:http` import
// (and `fetch`), which a plugin that makes no outbound request does not need.

import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const USAGE = 'usage: broker-plugin build ENTRY.js -o OUT.wasm [--http]';
const WIT = resolve(dirname(fileURLToPath(import.meta.url)), '../../wit');

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
  const work = await mkdtemp(join(tmpdir(), 'broker-plugin-'));
  try {
    const bundle = await rolldown({
      input: resolve(entry),
      // The WIT imports are the component's, resolved by componentize-js.
      external: [/^broker:plugin\//, /^wasi:/],
      platform: 'neutral',
      logLevel: 'warn',
    });
    const source = join(work, 'plugin.js');
    await bundle.write({ file: source, format: 'esm' });
    await bundle.close();
    const { component } = await componentize({
      sourcePath: source,
      witPath: WIT,
      worldName: 'plugin',
      disableFeatures: http ? [] : ['http', 'fetch-event'],
    });
    // Written beside, then renamed over: a broker watching `out` never loads half a file.
    const partial = `${out}.${process.pid}.partial`;
    await writeFile(partial, component);
    await rename(partial, out);
    console.error(`built ${out} (${(component.length / 1048576).toFixed(1)} MiB)`);
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
