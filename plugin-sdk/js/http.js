// Outbound HTTP for JavaScript plugins, over `wasi:http`: `http.request` (and `get`, `postJson`),
// blocking as the Rust SDK's `plugin_sdk::http` is, and `fetch`, the same request behind the
// Promise a handler awaits.
//
// The broker makes a request only if broker.toml lists its host in the plugin's `allow_hosts`;
// otherwise it fails here, before any connection is opened, with `HttpError` (a `PluginError`)
// `<url>: ErrorCode::HttpRequestDenied`. Every failure the host reports reads as in the Rust and
// Python SDKs: the URL, then the `wasi:http` error code as Rust writes it
// (`ErrorCode::ConnectionRefused`, `ErrorCode::ConnectionReadTimeout`, ...), so a handler that
// lets it through answers the same `plugin_error` in every language; `HttpError.code` is the
// code's bare name (`HttpRequestDenied`). While a call waits on the network the broker serves other
// connections, and the plugin's `timeout_ms` bounds the whole call.
//
// A plugin that imports this module (through `http`, `fetch` or `HttpError`) is built against the
// world with `wasi:http` (plugin-sdk/js/wit/world.wit); one that does not is built without it.

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, IncomingBody, OutgoingBody, OutgoingRequest, RequestOptions } from 'wasi:http/types@0.2.12';

import { PluginError } from './errors.js';

/** A request that failed; `code` is the `wasi:http` error code's name when the host gave one. */
export class HttpError extends PluginError {
  constructor(message, code) {
    super(message);
    this.code = code ?? null;
  }
}

const METHODS = ['get', 'head', 'post', 'put', 'delete', 'connect', 'options', 'trace', 'patch'];

/** `HTTP-request-denied` -> `HttpRequestDenied`: the name Rust's bindings give a WIT case. */
function caseName(tag) {
  return tag
    .split('-')
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1).toLowerCase())
    .join('');
}

/** A string as Rust's `{:?}` writes it (the escapes ordinary text meets). */
function debugString(text) {
  const escapes = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\0': '\\0' };
  let out = '';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (escapes[ch]) out += escapes[ch];
    else if (code < 0x20 || code === 0x7f) out += `\\u{${code.toString(16)}}`;
    else out += ch;
  }
  return `"${out}"`;
}

/** An option (or a record of options) written as Rust's `{:?}` writes it, for error codes' payloads. */
function debug(value, record) {
  if (value === undefined || value === null) return 'None';
  if (typeof value === 'string') return `Some(${debugString(value)})`;
  if (typeof value === 'number' || typeof value === 'bigint') return `Some(${value})`;
  const fields = Object.entries(value).map(
    ([key, field]) => `${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}: ${debug(field)}`,
  );
  return `${record} { ${fields.join(', ')} }`;
}

/**
 * An `error-code` from the host: its case's name (`HttpRequestDenied`), and the case as the Rust
 * SDK's `{:?}` writes it (`ErrorCode::HttpRequestDenied`, `ErrorCode::DnsError(DnsErrorPayload {
 * rcode: Some("..."), info-code: None })`), which is what every SDK's message says.
 */
function errorCode({ tag, val }) {
  const name = caseName(tag);
  let text = `ErrorCode::${name}`;
  if (val !== undefined) {
    const record =
      tag === 'DNS-error' ? 'DnsErrorPayload' : tag === 'TLS-alert-received' ? 'TlsAlertReceivedPayload' : 'FieldSizePayload';
    text += `(${typeof val === 'object' && val !== null ? debug(val, record) : debug(val)})`;
  }
  return { name, text };
}

/** The `HttpError` of a failed request: `<url>: ErrorCode::...`, its `code` the case's name. */
function failure(url, payload) {
  if (!payload?.tag) return new HttpError(`${url}: ${payload}`);
  const { name, text } = errorCode(payload);
  return new HttpError(`${url}: ${text}`, name);
}

/** `http://host:port/path?q` -> [scheme, "host:port", "/path?q"], as the Rust SDK splits it. */
function splitUrl(url) {
  const at = url.indexOf('://');
  if (at < 0) throw new HttpError(`${JSON.stringify(url)} is not an absolute URL`);
  const scheme = url.slice(0, at);
  if (scheme !== 'http' && scheme !== 'https') throw new HttpError(`unsupported scheme ${JSON.stringify(scheme)}`);
  const rest = url.slice(at + 3);
  const slash = rest.indexOf('/');
  return slash < 0
    ? [scheme.toUpperCase(), rest, '/']
    : [scheme.toUpperCase(), rest.slice(0, slash), rest.slice(slash)];
}

const encoder = new TextEncoder();

function bytes(body) {
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return encoder.encode(String(body));
}

/** Headers as `[name, value]` pairs, from pairs, a plain object or a `Headers`-like object. */
function headerPairs(headers) {
  if (!headers) return [];
  const pairs = typeof headers.entries === 'function' && !Array.isArray(headers) ? [...headers.entries()] : headers;
  return (Array.isArray(pairs) ? pairs : Object.entries(pairs)).map(([name, value]) => [
    String(name).toLowerCase(),
    String(value),
  ]);
}

// The symbol componentize-js's bindings drop a resource under.
const DISPOSE = Symbol.dispose ?? Symbol.for('dispose');

/** Drops a resource now, so its parent can be finished (a stream before its body). */
function dispose(resource) {
  resource?.[DISPOSE]?.();
}

/** A response: its status, headers (names in lower case) and whole body. */
export class HttpResponse {
  constructor(status, headers, body) {
    this.status = status;
    this.headers = headers;
    this.body = body;
  }

  /** The first value of header `name` (any case), or null. */
  header(name) {
    const wanted = name.toLowerCase();
    return this.headers.find(([key]) => key === wanted)?.[1] ?? null;
  }

  /** The body as text (UTF-8; bytes that are not become U+FFFD, as in Rust's `text()`). */
  text() {
    return new TextDecoder().decode(this.body);
  }

  /** The body decoded from JSON; a body that is not JSON throws `HttpError`. */
  json() {
    try {
      return JSON.parse(this.text());
    } catch (error) {
      throw new HttpError(`the response is not the JSON expected: ${error.message}`);
    }
  }
}

function readAll(stream) {
  const chunks = [];
  let length = 0;
  for (;;) {
    let chunk;
    try {
      chunk = stream.blockingRead(65536n);
    } catch (error) {
      if (error?.payload?.tag === 'closed') break;
      const why = error?.payload?.val?.toDebugString?.() ?? String(error?.payload?.tag ?? error);
      throw new Error(why);
    }
    chunks.push(chunk);
    length += chunk.length;
  }
  const body = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body;
}

/**
 * Makes one request and returns the response, whatever its status. `timeoutMs` bounds connecting,
 * the first byte and each later byte (none: the host's defaults; the plugin's `timeout_ms` bounds
 * the call in any case). Throws `HttpError` when there is no response: a host off `allow_hosts`
 * (`HttpRequestDenied`), a refused connection, a timeout, a malformed URL.
 */
function request(method, url, options = {}) {
  return receive(send(method, url, options));
}

/** The first half of a request: it is on its way (the host connects and sends meanwhile). */
function send(method, url, { headers, body, timeoutMs } = {}) {
  const [scheme, authority, path] = splitUrl(url);
  let fields;
  try {
    fields = Fields.fromList(headerPairs(headers).map(([name, value]) => [name, encoder.encode(value)]));
  } catch (error) {
    throw new HttpError(`bad header: HeaderError::${caseName(error?.payload?.tag ?? 'invalid-syntax')}`);
  }
  const outgoing = new OutgoingRequest(fields);
  const verb = method.toLowerCase();
  const invalid = (what) => new HttpError(`invalid ${what} in ${JSON.stringify(url)}`);
  const set = (what, apply) => {
    try {
      apply();
    } catch {
      throw invalid(what);
    }
  };
  set('method', () => outgoing.setMethod(METHODS.includes(verb) ? { tag: verb } : { tag: 'other', val: method }));
  set('scheme', () => outgoing.setScheme({ tag: scheme }));
  set('authority', () => outgoing.setAuthority(authority));
  set('path', () => outgoing.setPathWithQuery(path));
  const outgoingBody = outgoing.body();

  const options = new RequestOptions();
  if (timeoutMs !== undefined && timeoutMs !== null) {
    const nanos = BigInt(Math.max(0, Math.round(timeoutMs))) * 1_000_000n;
    // Not every host supports every timeout; those it refuses are simply not set.
    for (const setTimeout of ['setConnectTimeout', 'setFirstByteTimeout', 'setBetweenBytesTimeout']) {
      try {
        options[setTimeout](nanos);
      } catch {
        // unsupported
      }
    }
  }
  let pending;
  try {
    pending = handle(outgoing, options);
  } catch (error) {
    throw failure(url, error?.payload ?? error);
  }

  // A request refused at once (`HttpRequestDenied`) closes the body stream: the reason is then in
  // the response, so a failed write is reported only if the response has nothing better.
  let writeError = null;
  const data = bytes(body);
  if (data) {
    const stream = outgoingBody.write();
    try {
      for (let at = 0; at < data.length; at += 4096) stream.blockingWriteAndFlush(data.subarray(at, at + 4096));
    } catch (error) {
      writeError = `${url}: writing the body: ${caseName(error?.payload?.tag ?? 'closed')}`;
    }
    dispose(stream);
  }
  try {
    OutgoingBody.finish(outgoingBody, undefined);
  } catch (error) {
    writeError ??= failure(url, error?.payload ?? error).message;
  }

  return { url, pending, writeError };
}

/** The second half: waits for the response and reads its whole body. */
function receive({ url, pending, writeError }) {
  const ready = pending.subscribe();
  ready.block();
  dispose(ready);
  const got = pending.get();
  dispose(pending);
  if (!got || got.tag === 'err') throw new HttpError(writeError ?? `${url}: no response`);
  if (got.val.tag === 'err') throw failure(url, got.val.val);
  if (writeError) throw new HttpError(writeError);
  const response = got.val.val;
  const status = response.status();
  const responseHeaders = response.headers();
  const pairs = responseHeaders.entries().map(([name, value]) => [name.toLowerCase(), new TextDecoder().decode(value)]);
  dispose(responseHeaders);
  const incoming = response.consume();
  const stream = incoming.stream();
  let content;
  try {
    content = readAll(stream);
  } catch (error) {
    throw new HttpError(`${url}: reading the body: ${error.message}`);
  } finally {
    dispose(stream);
  }
  dispose(IncomingBody.finish(incoming));
  dispose(response);
  return new HttpResponse(status, pairs, content);
}

/**
 * Outbound HTTP, blocking (as in the Rust SDK): `http.request(method, url, { headers, body,
 * timeoutMs })`, `http.get(url, options)`, `http.postJson(url, value, options)`.
 */
export const http = {
  request,
  /** GETs `url`. */
  get: (url, options = {}) => request('GET', url, options),
  /** POSTs `value` as JSON to `url` (with `content-type: application/json`). */
  postJson: (url, value, { headers, timeoutMs } = {}) =>
    request('POST', url, {
      headers: [['content-type', 'application/json'], ...headerPairs(headers)],
      body: JSON.stringify(value),
      timeoutMs,
    }),
};

/** What `fetch` resolves to: the parts of the Fetch API's `Response` a handler reads. */
class FetchResponse {
  #response;

  constructor(url, response) {
    this.#response = response;
    this.url = url;
    this.status = response.status;
    this.ok = response.status >= 200 && response.status < 300;
    this.statusText = '';
    const pairs = response.headers;
    this.headers = {
      get: (name) => {
        const values = pairs.filter(([key]) => key === name.toLowerCase()).map(([, value]) => value);
        return values.length ? values.join(', ') : null;
      },
      has: (name) => pairs.some(([key]) => key === name.toLowerCase()),
      entries: () => pairs[Symbol.iterator](),
      [Symbol.iterator]: () => pairs[Symbol.iterator](),
    };
  }

  async text() {
    return this.#response.text();
  }

  async json() {
    return this.#response.json();
  }

  async arrayBuffer() {
    return this.#response.body.slice().buffer;
  }

  async bytes() {
    return this.#response.body.slice();
  }
}

/**
 * `fetch(url, { method, headers, body, timeoutMs })`, as in a browser for what a handler needs,
 * over the same request as `http.request`: it rejects with `HttpError` (`<url>:
 * ErrorCode::HttpRequestDenied` for a host off `allow_hosts`), and `timeoutMs` bounds connecting
 * and each byte. The request goes out when `fetch` is called, so `Promise.all([fetch(a),
 * fetch(b)])` has both in flight at once.
 */
export async function fetch(input, init = {}) {
  const url = typeof input === 'string' ? input : (input?.href ?? input?.url ?? String(input));
  const method = (init.method ?? 'GET').toUpperCase();
  // Sent now, received once the caller awaits: `Promise.all` over several `fetch`es has them all
  // in flight at once.
  const sent = send(method, url, { headers: init.headers, body: init.body, timeoutMs: init.timeoutMs });
  await null;
  return new FetchResponse(url, receive(sent));
}
