// Types of the JavaScript plugin SDK, for TypeScript plugins and editors.

/** A JSON Schema (draft-07) built with `t`. */
export type Schema = Record<string, unknown>;

/** A frame: `{"action": ..., "payload": ...}`, or any JSON object the plugin sends as it is. */
export type Frame = Record<string, unknown>;

/** A message type made by `message`: call it with the payload to make the frame. */
export interface MessageType<P = Record<string, unknown>> {
  (payload: P): { action: string; payload: P };
  readonly action: string;
  readonly payload: Schema;
  readonly summary?: string;
}

export declare const t: {
  string(limits?: { minLength?: number; maxLength?: number; pattern?: string; format?: string }): Schema;
  integer(limits?: { minimum?: number; maximum?: number; exclusiveMinimum?: number; exclusiveMaximum?: number }): Schema;
  number(limits?: { minimum?: number; maximum?: number; exclusiveMinimum?: number; exclusiveMaximum?: number }): Schema;
  boolean(): Schema;
  array(items: Schema, limits?: { minItems?: number; maxItems?: number; uniqueItems?: boolean }): Schema;
  enum(values: readonly unknown[]): Schema;
  literal(value: unknown): Schema;
  record(values: Schema): Schema;
  optional(inner: Schema): Schema;
  object(fields: Record<string, Schema>, options?: { extra?: boolean }): Schema;
};

export declare function message<P = Record<string, unknown>>(
  action: string,
  fields: Record<string, Schema>,
  summary?: string,
): MessageType<P>;

/** A handler failure: the client gets a `plugin_error` frame with this message. */
export declare class PluginError extends Error {}

/** Thrown in `onConnect` to refuse a client with a WebSocket close code and reason. */
export declare class Reject extends Error {
  constructor(code: number, reason: string);
  readonly code: number;
  readonly reason: string;
}

/** A connection's values: text as stored under `get`/`set`, JSON under `getJson`/`setJson`. */
export interface Session {
  get(key: string): string | null;
  set(key: string, value: string): void;
  getJson<T = unknown>(key: string): T | null;
  setJson(key: string, value: unknown): void;
  delete(key: string): void;
}

/** Where a call runs: the connection, its route and path parameters, and what it may do. */
export declare class Context {
  readonly connection: bigint;
  readonly route: string;
  readonly path: string;
  readonly params: Record<string, string>;
  readonly user: string | null;
  param(name: string): string | null;
  send(frame: Frame): void;
  join(group: string): void;
  leave(group: string): void;
  /** Makes this connection's next `join` to `group` first replay its last `count` frames. */
  rewind(group: string, count: number): void;
  broadcast(group: string, frame: Frame): number;
  broadcastToOthers(group: string, frame: Frame): number;
  close(code: number, reason: string): void;
  readonly session: Session;
  claims(): Record<string, unknown> | null;
  settings(): unknown;
}

export interface HandleOptions {
  /** The payload's type; none: any payload reaches the handler. */
  payload?: Schema;
  /** The message types the handler answers with. */
  replies?: MessageType<any> | MessageType<any>[];
  summary?: string;
  description?: string;
}

/** A handler may be `async`: the SDK awaits it, and a rejection answers as a throw does. */
type MaybeAsync<T> = T | Promise<T>;

export declare class Plugin {
  constructor(info: { name: string; version: string; description?: string; tags?: string[] });
  sends(...messages: MessageType<any>[]): this;
  /** Declares a kind of frame sent outside the `{"action", "payload"}` envelope; `frame` is its whole schema. */
  sendsRaw(name: string, frame: Schema, summary?: string): this;
  onConnect(handler: (ctx: Context) => MaybeAsync<void>): this;
  onDisconnect(handler: (ctx: Context) => MaybeAsync<void>): this;
  handle<P = any>(
    action: string,
    options: HandleOptions,
    handler: (ctx: Context, payload: P) => MaybeAsync<Frame | void | null>,
  ): this;
  /** What the component exports: `export const { handler, describe } = plugin.exports();` */
  exports(): { handler: unknown; describe: unknown };
}

/** The key-value store: text as stored under `get`/`set`, JSON under `getJson`/`setJson`. */
export declare const kv: {
  get(key: string): string | null;
  set(key: string, value: string, ttlMs?: number): void;
  getJson<T = unknown>(key: string): T | null;
  setJson(key: string, value: unknown, ttlMs?: number): void;
  delete(key: string): boolean;
  compareAndSwap(key: string, expected: string | null, value: string | null, ttlMs?: number): boolean;
};

/** One frame of a group's history: its offset, and the JSON text members received. */
export interface HistoryEntry {
  offset: number;
  frame: string;
}

/** Frames of a group's history, oldest first, with the stream's epoch and last offset. */
export interface HistoryPage {
  epoch: string;
  offset: number;
  entries: HistoryEntry[];
}

/** The recent frames of the groups of the plugin's namespace (`[plugins.<name>.history]`). */
export declare const history: {
  read(group: string, after?: number | null, limit?: number): HistoryPage;
  rewind(connection: bigint | number, group: string, count: number): void;
};

export declare const log: Record<'trace' | 'debug' | 'info' | 'warn' | 'error', (text: unknown) => void>;

export declare function sendTo(connection: bigint | number, frame: Frame): void;
export declare function members(group: string): bigint[];
export declare function settings(): unknown;

/**
 * A request that got no response: `message` is `<url>: ErrorCode::...` as every SDK words it
 * (`ErrorCode::HttpRequestDenied` for a host off `allow_hosts`), `code` the case's bare name.
 */
export declare class HttpError extends PluginError {
  readonly code: string | null;
}

/** A response of `http.request`: its status, headers (names in lower case) and whole body. */
export declare class HttpResponse {
  readonly status: number;
  readonly headers: [string, string][];
  readonly body: Uint8Array;
  /** The first value of a header (any case), or null. */
  header(name: string): string | null;
  text(): string;
  /** The body decoded from JSON; throws `HttpError` when it is not JSON. */
  json<T = unknown>(): T;
}

export interface RequestOptions {
  headers?: Record<string, string> | [string, string][];
  body?: string | Uint8Array | ArrayBuffer;
  /** Bounds connecting, the first byte and each later byte; the plugin's `timeout_ms` bounds the call anyway. */
  timeoutMs?: number;
}

/** Outbound HTTP to the hosts broker.toml allows (`allow_hosts`), blocking, as in the Rust SDK. */
export declare const http: {
  request(method: string, url: string, options?: RequestOptions): HttpResponse;
  get(url: string, options?: Omit<RequestOptions, 'body'>): HttpResponse;
  postJson(url: string, value: unknown, options?: Omit<RequestOptions, 'body'>): HttpResponse;
};

/** What `fetch` resolves to: the parts of the Fetch API's `Response` a handler reads. */
export interface FetchResponse {
  readonly url: string;
  readonly status: number;
  readonly ok: boolean;
  readonly statusText: string;
  readonly headers: {
    get(name: string): string | null;
    has(name: string): boolean;
    entries(): IterableIterator<[string, string]>;
    [Symbol.iterator](): IterableIterator<[string, string]>;
  };
  text(): Promise<string>;
  json<T = unknown>(): Promise<T>;
  arrayBuffer(): Promise<ArrayBuffer>;
  bytes(): Promise<Uint8Array>;
}

/** `fetch` over the broker's `wasi:http`: rejects with `HttpError` (a denied host, a timeout, ...). */
export declare function fetch(
  input: string | URL | { url: string },
  init?: { method?: string; headers?: RequestOptions['headers']; body?: RequestOptions['body']; timeoutMs?: number },
): Promise<FetchResponse>;

/** An environment variable broker.toml passes to the plugin (`env = [...]`), or null. */
export declare function env(name: string): string | null;
