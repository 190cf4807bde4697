// The JavaScript side of plugin-sdk: typed handlers over the `broker:plugin` WIT world.
//
// A plugin module builds a `Plugin`, registers handlers, and exports what the world asks for:
//
//     export const { handler, describe } = plugin.exports();
//
// `broker-plugin build app.js -o app.wasm` bundles the module with this SDK and makes a
// component of it with componentize-js. Payload types are written with `t` and become the JSON
// Schemas the broker checks payloads against before a handler runs, so a JavaScript plugin
// refuses bad input with the same error frames as a Rust or Python one.
//
// Handlers may be `async` (to `await fetch(...)`): componentize-js runs the event loop until the
// Promise an export returns settles, so the WIT calls stay synchronous. A rejection answers like
// a thrown exception. Outbound HTTP (`fetch`, `http`) is in http.js and the environment (`env`)
// in env.js; a plugin that uses neither is built without their `wasi:` imports.
//
// The same words mean the same things as in the Rust and Python SDKs: `kv.get`/`kv.set` and
// `ctx.session.get`/`set` take and give text as stored, `getJson`/`setJson` encode and decode JSON
// over them; a failed host call throws `PluginError` with the words the other SDKs use; and an
// ordinary exception in a handler answers `plugin_error`, as `?` does in Rust.

import * as groups from 'broker:plugin/groups@0.1.5';
import * as host from 'broker:plugin/host@0.1.5';
import * as identity from 'broker:plugin/identity@0.1.5';
import * as hostHistory from 'broker:plugin/history@0.1.5';
import * as hostKv from 'broker:plugin/kv@0.1.5';
import * as session from 'broker:plugin/session@0.1.5';

import { PluginError, Reject } from './errors.js';

export { PluginError, Reject };
export { env } from './env.js';
export { HttpError, HttpResponse, fetch, http } from './http.js';

const DRAFT_07 = 'http://json-schema.org/draft-07/schema#';
const OPTIONAL = Symbol('optional');

// Connection ids are u64, which the bindings hand over as BigInt; JSON has no BigInt, so a frame
// carries one as a number when it is exact, as a string otherwise.
function jsonValue(_key, value) {
  if (typeof value !== 'bigint') return value;
  return value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value.toString();
}

// A replacer makes the engine call back into JavaScript for every key of the frame, which costs
// more than the rest of an echo's encoding; so a frame is encoded without one, and again with it
// only when that failed (a BigInt, or what fails either way).
function dumps(value) {
  try {
    return JSON.stringify(value);
  } catch (error) {
    if (error instanceof TypeError) return JSON.stringify(value, jsonValue);
    throw error;
  }
}

/**
 * A failed host call's WIT error variant as the sentence every SDK uses; `connection` is the
 * target of a `send`.
 */
function hostError({ tag, val }, connection) {
  switch (tag) {
    case 'closed':
      return connection === undefined ? 'the connection is closed' : `connection ${connection} is closed`;
    case 'invalid-frame':
      return `invalid frame: ${val}`;
    case 'invalid-name':
      return 'a group name is 1 to 256 bytes';
    default:
      return typeof val === 'string' ? val : tag;
  }
}

/** Makes a host call, throwing what it refuses as a `PluginError`. */
function hostCall(call, connection) {
  try {
    return call();
  } catch (error) {
    if (error && Object.hasOwn(error, 'payload')) throw new PluginError(hostError(error.payload, connection));
    throw error;
  }
}

/** A stored value decoded from JSON, null when absent. */
function decode(key, text) {
  if (text === undefined || text === null) return null;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new PluginError(`state ${JSON.stringify(key)} does not decode: ${error.message}`);
  }
}

/** `{ type }` when the literal values share one JSON type, `{}` otherwise. */
function valuesType(values) {
  const kinds = new Set(
    values.map((value) => {
      if (value === null) return 'null';
      if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
      return typeof value;
    }),
  );
  return kinds.size === 1 ? { type: [...kinds][0] } : {};
}

/**
 * Payload types. Each builder returns the JSON Schema (draft-07) of its values, the same schema
 * schemars writes for the Rust type and the Python SDK for the dataclass.
 */
export const t = {
  string: (limits = {}) => ({ type: 'string', ...limits }),
  integer: (limits = {}) => ({ type: 'integer', ...limits }),
  number: (limits = {}) => ({ type: 'number', ...limits }),
  boolean: () => ({ type: 'boolean' }),
  array: (items, limits = {}) => ({ type: 'array', items, ...limits }),
  /** One of the given values (typed when they share a JSON type, as schemars writes a Rust enum). */
  enum: (values) => ({ ...valuesType(values), enum: [...values] }),
  /** Exactly this value. */
  literal: (value) => ({ ...valuesType([value]), const: value }),
  /** An object whose every property is of type `values` (a Rust `HashMap<String, V>`, a Python `dict[str, V]`). */
  record: (values) => ({ type: 'object', additionalProperties: values }),
  /** A field that may be absent or null. */
  optional: (inner) => {
    const nullable =
      typeof inner.type === 'string' ? { ...inner, type: [inner.type, 'null'] } : { anyOf: [inner, { type: 'null' }] };
    return Object.defineProperty(nullable, OPTIONAL, { value: true });
  },
  /** An object with these fields; `{ extra: false }` refuses fields it does not name. */
  object: (fields, { extra = true } = {}) => {
    const schema = { type: 'object', properties: { ...fields } };
    const required = Object.entries(fields)
      .filter(([, field]) => !field[OPTIONAL])
      .map(([name]) => name);
    if (required.length) schema.required = required;
    if (!extra) schema.additionalProperties = false;
    return schema;
  },
};

/**
 * A message type: `{"action": ACTION, "payload": {fields}}`. Call it with the payload to make a
 * frame: `SystemEcho({ message: 'hi' })`.
 */
export function message(action, fields, summary) {
  const payload = t.object(fields);
  const make = (values) => ({ action, payload: values });
  return Object.assign(make, { action, payload, summary });
}

const keep = (value) => value;

/**
 * The function that makes a checked payload what the handler sees: fields its type does not name
 * are left out, as serde and the Python SDK leave them out, so a relayed payload is the same in
 * every language. Made once per handler from its payload type; a payload with no field to leave
 * out is handed over as parsed, without a copy.
 */
function shaper(schema) {
  if (!schema) return keep;
  const items = schema.items ? shaper(schema.items) : keep;
  const inner = schema.anyOf ? schema.anyOf.find((s) => s.type !== 'null') : schema;
  const properties = inner?.properties;
  // The fields' shapers by name, in a record without a prototype: looking a key up in it is one
  // property access, where `Map.get` is a call; SpiderMonkey runs interpreted inside wasm, so each
  // op of a call counts.
  const fields =
    properties &&
    Object.assign(
      Object.create(null),
      Object.fromEntries(Object.keys(properties).map((key) => [key, shaper(properties[key])])),
    );
  if (items === keep && !fields) return keep;
  return (value) => {
    if (value === null || typeof value !== 'object') return value;
    if (Array.isArray(value)) return items === keep ? value : value.map((item) => items(item));
    if (!fields) return value;
    let kept = true;
    for (const key in value) {
      const field = fields[key];
      if (field === undefined || (field !== keep && field(value[key]) !== value[key])) {
        kept = false;
        break;
      }
    }
    if (kept) return value;
    return Object.fromEntries(
      Object.entries(value)
        .filter(([key]) => fields[key] !== undefined)
        .map(([key, field]) => [key, fields[key](field)]),
    );
  };
}

function spec(name, payload, summary, description) {
  return {
    name,
    summary: summary ?? undefined,
    description: description ?? undefined,
    payloadSchema: payload === undefined ? undefined : dumps({ $schema: DRAFT_07, ...payload }),
  };
}

const ttl = (ttlMs) => (ttlMs === undefined || ttlMs === null ? undefined : BigInt(ttlMs));

/**
 * The plugin's key-value store, kept by the host across calls, instances and reloads, and shared
 * by the plugins of its namespace whatever their language.
 */
export const kv = {
  /** A value as stored: the text `set` was given (null when absent). */
  get: (key) => hostCall(() => hostKv.get(key)) ?? null,
  /** Stores `value` as it is, expiring after `ttlMs` milliseconds if given. */
  set: (key, value, ttlMs) => hostCall(() => hostKv.set(key, value, ttl(ttlMs))),
  /** A value decoded from JSON (null when absent). */
  getJson: (key) => decode(key, kv.get(key)),
  /** Stores a value as JSON text, expiring after `ttlMs` milliseconds if given. */
  setJson: (key, value, ttlMs) => kv.set(key, dumps(value), ttlMs),
  /** Deletes a key; true when it existed. */
  delete: (key) => hostCall(() => hostKv.delete(key)),
  /** Sets `key` to `value` (null deletes it) only if its text is `expected` (null: absent). */
  compareAndSwap: (key, expected, value, ttlMs) =>
    hostCall(() => hostKv.compareAndSwap(key, expected ?? undefined, value ?? undefined, ttl(ttlMs))),
};

/**
 * The recent frames of the groups of the plugin's namespace, when broker.toml keeps them
 * (`[plugins.<name>.history]`).
 */
export const history = {
  /**
   * The frames of `group` after offset `after` (null: the newest `limit`), oldest first, at most
   * `limit` (and at most 1000) of those still kept: `{ epoch, offset, entries: [{ offset, frame }] }`,
   * offsets as numbers, each frame the JSON text members received. Throws `PluginError` when the
   * namespace keeps no history.
   */
  read(group, after = null, limit = 100) {
    const page = hostCall(() => hostHistory.read(group, after == null ? undefined : BigInt(after), limit));
    const entries = page.entries.map((entry) => ({ offset: Number(entry.offset), frame: entry.frame }));
    return { epoch: page.epoch, offset: Number(page.offset), entries };
  },
  /**
   * Makes `connection`'s next join to `group` first replay the group's last `count` frames (as
   * many as are kept), as a recovery does; nothing when the client named its own position in the
   * group, or the namespace keeps no history.
   */
  rewind(connection, group, count) {
    hostHistory.rewind(BigInt(connection), group, count);
  },
};

/** Writes to the broker's log, tagged with the plugin's name. */
export const log = Object.fromEntries(
  ['trace', 'debug', 'info', 'warn', 'error'].map((level) => [level, (text) => host.log(level, String(text))]),
);

/** Queues a frame for any connection (of any node of a cluster). */
export function sendTo(connection, frame) {
  hostCall(() => host.send(BigInt(connection), dumps(frame)), connection);
}

/** The members of a group of this plugin's namespace. */
export function members(group) {
  return Array.from(groups.members(group));
}

/** The plugin's `settings` table from broker.toml. */
export function settings() {
  return JSON.parse(host.settings());
}

// A Context's own state under symbol keys rather than `#private` fields: SpiderMonkey runs
// interpreted inside wasm, where a class with private fields costs more to make, and one is made
// per call (with the shaper's record, 3 µs less of a 62 µs echo call in the dispatch benchmark).
const RAW = Symbol('raw');
const PARAMS = Symbol('params');

/** Where a call runs: the connection, its route and path parameters, and what it may do. */
export class Context {
  // What the bindings lifted; the fields are read from it when asked for, since most handlers
  // read one or none of them, and `params` is made into an object once.
  constructor(raw) {
    this[RAW] = raw;
  }

  /** The connection the call is about. */
  get connection() {
    return this[RAW].connection;
  }

  /** The route pattern the connection matched, as written in broker.toml. */
  get route() {
    return this[RAW].route;
  }

  /** The request path the client connected to. */
  get path() {
    return this[RAW].path;
  }

  /** The route's path parameters by name. */
  get params() {
    this[PARAMS] ??= Object.fromEntries(this[RAW].params);
    return this[PARAMS];
  }

  /** The authenticated user, or null. */
  get user() {
    return this[RAW].user ?? null;
  }

  param(name) {
    return this.params[name] ?? null;
  }

  /** Queues a frame for this connection. */
  send(frame) {
    sendTo(this.connection, frame);
  }

  join(group) {
    hostCall(() => groups.join(this.connection, group));
  }

  leave(group) {
    groups.leave(this.connection, group);
  }

  /** Makes this connection's next `join` to `group` first replay its last `count` frames (see `history.rewind`). */
  rewind(group, count) {
    history.rewind(this.connection, group, count);
  }

  /** Sends to every member of `group`, this connection included; returns how many it reached. */
  broadcast(group, frame) {
    return hostCall(() => groups.broadcast(group, dumps(frame), undefined));
  }

  broadcastToOthers(group, frame) {
    return hostCall(() => groups.broadcast(group, dumps(frame), this.connection));
  }

  close(code, reason) {
    host.close(this.connection, code, reason);
  }

  /** Values kept for this connection until it closes. */
  get session() {
    const connection = this.connection;
    const values = {
      /** A value as stored: the text `set` was given (null when absent). */
      get: (key) => session.get(connection, key) ?? null,
      /** Sets a value as it is; it is gone when the connection closes. */
      set: (key, value) => hostCall(() => session.set(connection, key, value)),
      /** A value decoded from JSON (null when absent). */
      getJson: (key) => decode(key, values.get(key)),
      /** Sets a value as JSON text. */
      setJson: (key, value) => values.set(key, dumps(value)),
      delete: (key) => session.delete(connection, key),
    };
    return values;
  }

  /** The claims of the connection's token that broker.toml hands to plugins, or null. */
  claims() {
    const text = identity.claims(this.connection);
    return text === undefined ? null : JSON.parse(text);
  }

  settings() {
    return settings();
  }
}

function failed(message) {
  return { payload: { tag: 'failed', val: message } };
}

/** The `plugin_error` message of an ordinary exception: `TypeError: ...`, as JavaScript prints it. */
function failure(error) {
  if (error instanceof Error) return String(error);
  try {
    return `uncaught ${typeof error === 'string' ? error : dumps(error)}`;
  } catch {
    return `uncaught ${String(error)}`;
  }
}

/** A plugin: its name, the actions it accepts and the frames it sends. */
export class Plugin {
  constructor({ name, version, description, tags = [] }) {
    Object.assign(this, { name, version, description, tags: [...tags] });
    this.routes = new Map();
    this.sent = [];
    this.raw = [];
    this.connect = undefined;
    this.disconnect = undefined;
  }

  /** Declares message types the plugin sends besides its handlers' replies. */
  sends(...messages) {
    for (const message of messages) if (!this.sent.includes(message)) this.sent.push(message);
    return this;
  }

  /**
   * Declares a kind of frame sent as it is, outside the `{"action", "payload"}` envelope:
   * `frame` (from `t`) is the schema of the whole frame, and `name` labels it in the AsyncAPI
   * document.
   */
  sendsRaw(name, frame, summary) {
    this.raw = this.raw.filter((raw) => raw.name !== name);
    this.raw.push({ name, frame, summary });
    return this;
  }

  onConnect(handler) {
    this.connect = handler;
    return this;
  }

  onDisconnect(handler) {
    this.disconnect = handler;
    return this;
  }

  /**
   * `handler(ctx, payload)` for `action`: it may return a frame to reply with. `options.payload`
   * is the payload's type (from `t`), `options.replies` the message types it answers with.
   */
  handle(action, options, handler) {
    const replies = [options.replies ?? []].flat();
    this.sends(...replies);
    this.routes.set(action, { ...options, replies, handler, shape: shaper(options.payload) });
    return this;
  }

  manifest() {
    return {
      name: this.name,
      version: this.version,
      description: this.description ?? undefined,
      tags: this.tags,
      accepts: [...this.routes].map(([action, route]) => spec(action, route.payload, route.summary, route.description)),
      sends: this.sent.map((m) => spec(m.action, m.payload, m.summary)),
    };
  }

  /** The interfaces the component exports: `export const { handler, describe } = plugin.exports();` */
  exports() {
    const plugin = this;
    const handler = {
      manifest: () => plugin.manifest(),
      onConnect(raw) {
        if (!plugin.connect) return undefined;
        return settle(() => plugin.connect(new Context(raw)), refusal, () => undefined);
      },
      onMessage(raw, action, payload) {
        const route = plugin.routes.get(action);
        if (!route) throw failed(`no handler for ${JSON.stringify(action)}`);
        // Every message comes this way: a synchronous handler's reply is encoded here, with no
        // closure made for it; only a Promise goes through `settle`.
        let reply;
        try {
          reply = route.handler(new Context(raw), route.shape(payload === undefined ? null : JSON.parse(payload)));
          if (!reply || typeof reply.then !== 'function') return encodeReply(reply);
        } catch (error) {
          throw handlerFailure(error);
        }
        return settle(() => reply, handlerFailure, encodeReply);
      },
      onDisconnect(raw) {
        if (!plugin.disconnect) return undefined;
        // Nobody is left to answer: the log says what went wrong.
        return settle(
          () => plugin.disconnect(new Context(raw)),
          (error) => {
            log.error(`onDisconnect failed: ${error instanceof PluginError ? error.message : failure(error)}`);
            return undefined;
          },
          () => undefined,
          true,
        );
      },
    };
    const describe = {
      replies: () =>
        [...plugin.routes]
          .filter(([, route]) => route.replies.length)
          .map(([action, route]) => ({ action, replies: route.replies.map((m) => m.action) })),
      rawFrames: () => plugin.raw.map((raw) => spec(raw.name, raw.frame, raw.summary)),
    };
    return { handler, describe };
  }
}

/** `onMessage`'s result for what a handler returned: the frame as JSON text, none for no reply. */
function encodeReply(reply) {
  return reply === undefined || reply === null ? undefined : dumps(reply);
}

/**
 * `onMessage`'s error variant for what a handler threw or rejected with: a `PluginError` keeps its
 * message; as `?` in Rust, any other exception answers `plugin_error` too, and the instance keeps
 * serving. Only a real trap is a crash.
 */
function handlerFailure(error) {
  return failed(error instanceof PluginError ? error.message : failure(error));
}

/** `onConnect`'s error variant: a `Reject` keeps its code; any other failure is 1011, as in Rust. */
function refusal(error) {
  if (error instanceof Reject) return { payload: { code: error.code, reason: error.reason } };
  const reason = error instanceof PluginError ? error.message : failure(error);
  return { payload: { code: 1011, reason } };
}

/**
 * Runs a handler, synchronous or `async`, and gives the export's result: `done(value)` when it
 * returned or resolved, and `wrap(error)` thrown (or rejected with) when it threw or rejected.
 * componentize-js runs the event loop until an export's Promise settles, so the WIT function stays
 * synchronous; but an exception that is not the WIT error variant would trap the instance, so
 * every failure is turned into the variant here. `swallow` (for `onDisconnect`, which has no
 * error) returns `wrap`'s result instead of throwing it.
 */
function settle(run, wrap, done = (value) => value, swallow = false) {
  const fail = (error) => {
    const mapped = wrap(error);
    if (swallow) return mapped;
    throw mapped;
  };
  let value;
  try {
    value = run();
    if (!value || typeof value.then !== 'function') return done(value);
  } catch (error) {
    return fail(error);
  }
  return Promise.resolve(value).then(done).then(undefined, fail);
}
