// What bounds the orders one client can leave in the shop's key-value store, which every client
// of the namespace shares: a quota per client and a lifetime per order
// (plugins/assistant/src/orders.rs).

import { PluginError, kv } from '../../plugin-sdk/js/index.js';

import { debugString, struct } from './serde.js';

/** The session key counting the orders an anonymous connection has placed. */
const PLACED = 'orders_placed';

const DEFAULT_MAX_PER_CLIENT = 10n;
const DEFAULT_TTL_S = 24n * 60n * 60n;

/** `[plugins.<name>.settings.orders]` in broker.toml: every field defaults, unknown ones are refused. */
export const RulesType = struct(
  'Rules',
  [
    ['max_per_client', 'u32', () => DEFAULT_MAX_PER_CLIENT],
    ['ttl_s', 'u64', () => DEFAULT_TTL_S],
  ],
  { deny: true },
);

const U64_MAX = (1n << 64n) - 1n;

/** A count as Rust's `str::parse::<T>` reads it, or null. */
function parseCount(text, max, signed = false) {
  if (text === null || !(signed ? /^[+-]?[0-9]+$/ : /^\+?[0-9]+$/).test(text)) return null;
  const value = BigInt(text);
  return value > max || value < -max - 1n ? null : value;
}

export class Rules {
  /** `fields`: `max_per_client` and `ttl_s` as BigInts. */
  constructor({ max_per_client: maxPerClient, ttl_s: ttlS } = {}) {
    this.maxPerClient = maxPerClient ?? DEFAULT_MAX_PER_CLIENT;
    this.ttlS = ttlS ?? DEFAULT_TTL_S;
  }

  /** Refuses settings that would keep orders forever. */
  check() {
    if (this.ttlS === 0n) {
      throw new PluginError('plugin settings: orders.ttl_s must be at least 1 (seconds an order is kept)');
    }
  }

  /** How long an order, and an authenticated user's count, is kept, in milliseconds. */
  ttlMs() {
    return Number(this.ttlS) * 1000;
  }

  /** Takes one order from the client's quota: null, or the refusal for the client. */
  take(ctx) {
    const max = this.maxPerClient;
    let taken;
    if (ctx.user === null) {
      const placed = placedBy(ctx);
      if (placed >= max) {
        taken = false;
      } else {
        ctx.session.setJson(PLACED, Number(placed + 1n));
        taken = true;
      }
    } else {
      taken = add(userKey(ctx.user), 1n, max, this.ttlMs());
    }
    if (taken) return null;
    if (ctx.user !== null) {
      return (
        `order refused: ${debugString(ctx.user)} may place at most ${max} orders until ${this.ttlS}s after ` +
        'its last one (settings.orders.max_per_client)'
      );
    }
    return `order refused: one connection may place at most ${max} orders (settings.orders.max_per_client)`;
  }

  /** Gives back what `take` took, for an order that could not be stored. */
  giveBack(ctx) {
    if (ctx.user === null) {
      const placed = placedBy(ctx);
      ctx.session.setJson(PLACED, Number(placed > 0n ? placed - 1n : 0n));
    } else {
      add(userKey(ctx.user), -1n, null, this.ttlMs());
    }
  }
}

/** The session's count of placed orders (`Option<u32>` in Rust: a value that is not one fails). */
function placedBy(ctx) {
  const placed = ctx.session.getJson(PLACED);
  if (placed === null) return 0n;
  if (!Number.isInteger(placed) || placed < 0 || placed > 0xffffffff) {
    throw new PluginError(`state "${PLACED}" does not decode: not a count`);
  }
  return BigInt(placed);
}

function userKey(user) {
  return `orders-of:${user}`;
}

/**
 * Adds `delta` to the count under `key` unless it would pass `max`; safe against the user's other
 * connections doing the same at once. False when it would pass `max`.
 */
function add(key, delta, max, ttlMs) {
  const I64_MAX = (1n << 63n) - 1n;
  for (;;) {
    const current = kv.get(key);
    const count = parseCount(current, I64_MAX, true) ?? 0n;
    let next = count + delta;
    if (next > I64_MAX) next = I64_MAX;
    if (next < 0n) next = 0n;
    if (max !== null && next > max) return false;
    if (kv.compareAndSwap(key, current, next.toString(), ttlMs)) return true;
  }
}

export { U64_MAX, parseCount };
