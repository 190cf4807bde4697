// bin/bindings.js against the bindings componentize-js really generates for the plugin world:
// its two helpers are replaced, nothing else changes, and the string helper writes what the
// original wrote. Run by `cargo xtask test` (tests/all/plugins.rs) with `node --test`.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  DEBUG_LOG,
  ENCODE,
  NATIVE_ENCODE,
  SILENT_DEBUG_LOG,
  SPLICER,
  cheaperBindings,
  definition,
  useCheaperBindings,
} from '../bin/bindings.js';

const WIT = new URL('../../wit', import.meta.url);
const ENGINE = new URL('../lib/starlingmonkey_embedding.wasm', SPLICER);

/** The bindings of the world `plugin`, as `componentize` asks the splicer for them. */
async function bindings(splicer) {
  const engine = await readFile(ENGINE);
  const spliced = splicer.spliceBindings(engine, ['stdio', 'random', 'clocks'], undefined, fileURLToPath(WIT), 'plugin', false);
  return spliced.jsBindings;
}

/** The string helper defined in `source`, over a fresh encoder. */
function encoder(source) {
  const text = definition(source, ENCODE);
  assert.ok(text, 'the bindings define the string helper');
  return new Function('TEXT_ENCODER_UTF8', `${text}\nreturn _utf8AllocateAndEncode;`)(new TextEncoder());
}

/** A guest memory with `cabi_realloc`'s contract: a new block, or a block moved or shrunk in place. */
function guest() {
  const memory = new WebAssembly.Memory({ initial: 4 });
  let next = 8;
  const realloc = (old, oldSize, align, size) => {
    if (old !== 0 && size <= oldSize) return old;
    const at = Math.ceil(next / align) * align;
    next = at + size;
    if (old !== 0) new Uint8Array(memory.buffer).copyWithin(at, old, old + oldSize);
    return at;
  };
  return { memory, realloc };
}

const SAMPLES = [
  '',
  'a',
  'h\u00e9llo "quoted"',
  '\u20ac \ud834\udd1e \ud83d\udd27 System Echo: Price of a large margherita?',
  '\u65e5\u672c\u8a9e',
  '\ud800',
  '\udc00',
  'a\ud83d',
  '\udc00\ud800',
  '\u0000\u007f\u0080\u07ff\u0800\uffff',
  `${'x'.repeat(10_000)}\u00e9\ud83d\udd27`,
];

// Generated before the splicer is patched.
const { splicer } = await import(SPLICER.href);
const original = await bindings(splicer);

test('the generated bindings get the two replacements and nothing else', async () => {
  assert.match(definition(original, ENCODE), /charCodeAt/, 'componentize-js counts bytes in JavaScript');
  assert.ok(definition(original, DEBUG_LOG), 'the bindings define the debug log');
  await useCheaperBindings();
  await useCheaperBindings();
  const patched = await bindings(splicer);
  const expected = original
    .replace(definition(original, ENCODE), () => NATIVE_ENCODE)
    .replace(definition(original, DEBUG_LOG), () => SILENT_DEBUG_LOG);
  assert.notEqual(expected, original);
  assert.equal(patched, expected);
  assert.equal(cheaperBindings(patched), patched, 'a second pass changes nothing');
});

test('the string helper writes the bytes the generated one wrote', () => {
  const before = encoder(original);
  const after = encoder(cheaperBindings(original));
  for (const sample of SAMPLES) {
    const [a, b] = [guest(), guest()];
    const old = before(sample, a.realloc, a.memory);
    const now = after(sample, b.realloc, b.memory);
    const bytes = (g, at) => Buffer.from(new Uint8Array(g.memory.buffer, at.ptr, at.len));
    assert.deepEqual(bytes(b, now), bytes(a, old), JSON.stringify(sample));
    assert.deepEqual(bytes(b, now), Buffer.from(sample, 'utf8'), JSON.stringify(sample));
  }
  assert.throws(() => after(7, guest().realloc, guest().memory), TypeError);
});

test('a helper it does not recognize fails the build', () => {
  const changed = `${ENCODE}\n  return encode(s);\n}\n_utf8AllocateAndEncode(x);\n`;
  assert.throws(() => cheaperBindings(changed), /does not recognize/);
  const unused = 'const x = 1;\n';
  assert.equal(cheaperBindings(unused), unused);
});
