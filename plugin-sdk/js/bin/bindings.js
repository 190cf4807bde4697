// The bindings componentize-js generates for a component, made cheaper per call.
//
// componentize-js (0.23) writes JavaScript glue between the WIT calls and the plugin's module,
// and SpiderMonkey interprets it inside wasm, where every op counts. Two parts of it cost a
// message far more than their work needs, and are swapped here for what does the same work:
//
// - `_utf8AllocateAndEncode` lowers every string the guest hands the host: an `onMessage`
//   reply, a frame sent or broadcast, a value stored. It counts the string's UTF-8 bytes in a
//   loop over its UTF-16 units before it encodes, at about 240 ns a character: 14 µs of a 42 µs
//   call answering 50 characters, 248 µs of one answering 1,050. The replacement lets the
//   engine's `TextEncoder.encodeInto` (C++ compiled to wasm) write into an allocation of the most
//   a string can need (3 bytes a UTF-16 unit) and shrinks it to what was written. The bytes are
//   the same: both encode a lone surrogate as U+FFFD.
// - `_debugLog`, called twice a call with a record built for it, prints only when
//   `globalThis.process.env.JCO_DEBUG` is set, which a component never has: a function that does
//   nothing is 1.5 µs a call cheaper.
//
// Each replacement keeps the helper's name, arguments and result; the test in plugin-sdk/js/test
// checks them against the generated originals.

/** How the two definitions replaced start in the generated bindings. */
export const ENCODE = 'function _utf8AllocateAndEncode(s, realloc, memory) {';
export const DEBUG_LOG = 'const _debugLog = (...args) => {';

/** The string helper that replaces componentize-js's. */
export const NATIVE_ENCODE = `${ENCODE}
  if (typeof s !== 'string') {
    throw new TypeError('expected a string, received [' + typeof s + ']');
  }
  if (s.length === 0) { return { ptr: 1, len: 0 }; }
  const most = s.length * 3;
  const at = realloc(0, 0, 1, most);
  const { written } = TEXT_ENCODER_UTF8.encodeInto(s, new Uint8Array(memory.buffer, at, most));
  return { ptr: written === most ? at : realloc(at, most, 1, written), len: written };
}`;

/** The debug log that replaces componentize-js's. */
export const SILENT_DEBUG_LOG = 'const _debugLog = () => {};';

/**
 * The text of the top-level definition in `bindings` that starts with `head`: up to the first
 * line that closes it in the first column. Undefined when there is none.
 */
export function definition(bindings, head) {
  const start = bindings.indexOf(head);
  if (start < 0) return undefined;
  const rest = bindings.slice(start);
  const close = /\n\};?\n/.exec(rest);
  return close ? rest.slice(0, close.index + close[0].length - 1) : '';
}

/**
 * `bindings` with the definition that starts with `head` replaced by `replacement`, checked to be
 * the one expected with `expected` (a test of its text). Bindings without the definition are
 * returned as they are; a definition that fails the check is an error, so an upgrade of
 * componentize-js that changes it is noticed at the first build, not measured later.
 */
function replaceDefinition(bindings, head, expected, replacement) {
  const text = definition(bindings, head);
  if (text === undefined) return bindings;
  if (!text || !expected(text)) {
    throw new Error(`componentize-js generates a ${head.match(/_\w+/)[0]} that bin/bindings.js does not recognize`);
  }
  return bindings.replace(text, () => replacement);
}

/** `bindings` with both replacements made. */
export function cheaperBindings(bindings) {
  if (!bindings.includes(ENCODE) && bindings.includes('_utf8AllocateAndEncode(')) {
    throw new Error('componentize-js lowers strings with a helper bin/bindings.js does not recognize');
  }
  const encoded = replaceDefinition(
    bindings,
    ENCODE,
    (text) => text.includes('TEXT_ENCODER_UTF8.encodeInto(') && !/\n(?:async )?function /.test(text),
    NATIVE_ENCODE,
  );
  return replaceDefinition(
    encoded,
    DEBUG_LOG,
    (text) => text.includes('if (!globalThis?.process?.env?.JCO_DEBUG) { return; }') && text.split('\n').length === 4,
    SILENT_DEBUG_LOG,
  );
}

const PATCHED = Symbol.for('broker-plugin.cheaper-bindings');

/** Where componentize-js keeps the splicer that generates the bindings, and its engine. */
export const SPLICER = new URL(
  '../lib/spidermonkey-embedding-splicer.js',
  import.meta.resolve('@bytecodealliance/componentize-js'),
);

/**
 * Makes componentize-js's splicer, which generates the bindings `componentize` builds into the
 * component, give them through `cheaperBindings`. `componentize` imports the splicer from its own
 * package: the same module instance as here.
 */
export async function useCheaperBindings() {
  const { splicer } = await import(SPLICER.href);
  if (splicer[PATCHED]) return splicer;
  const splice = splicer.spliceBindings;
  splicer.spliceBindings = (...args) => {
    const spliced = splice(...args);
    return { ...spliced, jsBindings: cheaperBindings(spliced.jsBindings) };
  };
  splicer[PATCHED] = true;
  return splicer;
}
