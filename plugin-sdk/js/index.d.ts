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

export declare class Plugin {
  constructor(info: { name: string; version: string; description?: string; tags?: string[] });
  sends(...messages: MessageType<any>[]): this;
  /** Declares a kind of frame sent outside the `{"action", "payload"}` envelope; `frame` is its whole schema. */
  sendsRaw(name: string, frame: Schema, summary?: string): this;
  onConnect(handler: (ctx: Context) => void): this;
  onDisconnect(handler: (ctx: Context) => void): this;
  handle<P = any>(action: string, options: HandleOptions, handler: (ctx: Context, payload: P) => Frame | void): this;
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
