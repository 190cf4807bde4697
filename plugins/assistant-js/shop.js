// The pizza shop: its menu and the four tools the assistant can call (plugins/assistant/src/shop.rs).

import { kv, log } from '../../plugin-sdk/js/index.js';

import { U64_MAX, parseCount } from './orders.js';
import { SerdeError, debugString, fromStr, seq, struct } from './serde.js';

/** [name, small, medium, large] prices in cents. */
const MENU = [
  ['Margherita', 899, 1199, 1499],
  ['Pepperoni', 999, 1299, 1599],
  ['Hawaiian', 1049, 1349, 1649],
  ['Veggie', 949, 1249, 1549],
];

export const SIZES = ['small', 'medium', 'large'];

/** Pizzas one line of an order may ask for. */
export const MAX_QUANTITY = 50;
/** Lines one order may have. */
export const MAX_LINES = 10;

/** The tools, as an OpenAI-compatible `tools` list. */
export function toolDefinitions() {
  const string = { type: 'string' };
  const size = { type: 'string', enum: SIZES };
  const fn = (name, description, parameters) => ({ type: 'function', function: { name, description, parameters } });
  return [
    fn('get_menu', 'The pizzas on the menu with their prices', { type: 'object', properties: {} }),
    fn('get_price', 'The price of one pizza in one size', {
      type: 'object',
      required: ['item', 'size'],
      properties: { item: string, size },
    }),
    fn('place_order', 'Orders pizzas; returns the order id', {
      type: 'object',
      required: ['items'],
      properties: {
        items: {
          type: 'array',
          minItems: 1,
          maxItems: MAX_LINES,
          items: {
            type: 'object',
            required: ['item', 'size'],
            properties: {
              item: string,
              size,
              quantity: { type: 'integer', minimum: 1, maximum: MAX_QUANTITY },
            },
          },
        },
      },
    }),
    fn('order_status', 'The status of an order by id', {
      type: 'object',
      required: ['order_id'],
      properties: { order_id: string },
    }),
  ];
}

/** Why a tool call produced no result, named as the stage the client sees. */
export class ToolError extends Error {
  /** `stage`: `tool_missing`, `tool_args` (bad arguments) or `tool_exec` (the tool failed). */
  constructor(stage, why = '') {
    super(why);
    this.stage = stage;
  }
}

const NoArgs = struct('NoArgs', [], { deny: true });
const PriceArgs = struct('PriceArgs', [['item', 'string'], ['size', 'string']], { deny: true });
export const OrderItem = struct(
  'OrderItem',
  [['item', 'string'], ['size', 'string'], ['quantity', 'u64', () => 1n]],
  { deny: true },
);
const OrderArgs = struct('OrderArgs', [['items', seq(OrderItem)]], { deny: true });
const StatusArgs = struct('StatusArgs', [['order_id', 'string']], { deny: true });

/** Whitespace as Rust's `char::is_whitespace` knows it (`str::trim`). */
const RUST_SPACE = '[\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
const TRIM = new RegExp(`^${RUST_SPACE}+|${RUST_SPACE}+$`, 'g');

/** `str::trim`. */
export function trim(text) {
  return text.replace(TRIM, '');
}

/** `str::eq_ignore_ascii_case`. */
function asciiLower(text) {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function args(text, type) {
  try {
    return fromStr(trim(text) === '' ? '{}' : text, type);
  } catch (error) {
    if (error instanceof SerdeError) throw new ToolError('tool_args', error.message);
    throw error;
  }
}

/** A tool's own failure (a host error included) as `tool_exec`. */
function exec(run) {
  try {
    return run();
  } catch (error) {
    if (error instanceof ToolError) throw error;
    throw new ToolError('tool_exec', error.message);
  }
}

/**
 * Runs tool `name` with `argumentsText` (JSON text) for the client of `ctx`, orders bound by
 * `rules`; the result is the text the client sees. Throws `ToolError`.
 */
export function call(ctx, rules, name, argumentsText) {
  switch (name) {
    case 'get_menu':
      args(argumentsText, NoArgs);
      return menuText();
    case 'get_price': {
      const { item, size } = args(argumentsText, PriceArgs);
      return exec(() => {
        const [pizza, sized, cents] = price(item, size);
        return `${pizza} (${sized}): ${dollars(cents)}`;
      });
    }
    case 'place_order': {
      const { items } = args(argumentsText, OrderArgs);
      return JSON.stringify(placeOrder(ctx, rules, items));
    }
    case 'order_status': {
      const { order_id: orderId } = args(argumentsText, StatusArgs);
      return exec(() => JSON.stringify(orderStatus(orderId)));
    }
    default:
      throw new ToolError('tool_missing');
  }
}

export function dollars(cents) {
  return `$${Math.floor(cents / 100)}.${String(cents % 100).padStart(2, '0')}`;
}

export function menuText() {
  return MENU.map(
    ([name, s, m, l]) => `${name}: small ${dollars(s)}, medium ${dollars(m)}, large ${dollars(l)}`,
  ).join('\n');
}

/** The menu's entry for `item` (case-insensitive), with its prices. */
function find(item) {
  const wanted = asciiLower(trim(item));
  return MENU.find(([name]) => asciiLower(name) === wanted) ?? null;
}

/** Every menu pizza named in `text`, in menu order. */
export function mentioned(text) {
  const lower = text.toLowerCase();
  return MENU.map(([name]) => name).filter((name) => lower.includes(name.toLowerCase()));
}

/** [the menu's name, the size, the price in cents]; throws with the reason otherwise. */
function price(item, size) {
  const found = find(item);
  if (!found) throw new Error(`there is no pizza called ${debugString(item)} on the menu`);
  const [name, s, m, l] = found;
  const wanted = trim(size).toLowerCase();
  const cents = { small: s, medium: m, large: l }[wanted];
  if (cents === undefined) throw new Error(`there is no size ${debugString(wanted)}: choose small, medium or large`);
  return [name, wanted, cents];
}

/**
 * Stores a new order under a fresh id (`ORD-0001`, ...), kept for `rules.ttl_s`, and returns it.
 * Lines out of bounds are refused as bad arguments before anything is stored; an order past the
 * client's quota is refused as the tool's failure.
 */
function placeOrder(ctx, rules, items) {
  if (items.length === 0) throw new ToolError('tool_args', 'an order needs at least one pizza');
  if (items.length > MAX_LINES) {
    throw new ToolError('tool_args', `an order has at most ${MAX_LINES} lines, not ${items.length}`);
  }
  let total = 0;
  const lines = [];
  for (const item of items) {
    if (item.quantity < 1n || item.quantity > BigInt(MAX_QUANTITY)) {
      throw new ToolError(
        'tool_args',
        `quantity ${item.quantity} of ${debugString(item.item)} is not between 1 and ${MAX_QUANTITY}`,
      );
    }
    const quantity = Number(item.quantity);
    const [name, size, cents] = exec(() => price(item.item, item.size));
    total += cents * quantity;
    lines.push({ item: name, size, quantity });
  }
  exec(() => rules.check());
  const refusal = exec(() => rules.take(ctx));
  if (refusal !== null) throw new ToolError('tool_exec', refusal);
  try {
    const id = `ORD-${String(nextOrderNumber()).padStart(4, '0')}`;
    const order = { order_id: id, items: lines, total: dollars(total), status: 'received' };
    kv.setJson(`order:${id}`, order, rules.ttlMs());
    return order;
  } catch (error) {
    // The client is not charged for an order the store refused; the refusal is what it sees.
    try {
      rules.giveBack(ctx);
    } catch (giveBack) {
      log.warn(`an order's quota was not given back: ${giveBack.message}`);
    }
    throw new ToolError('tool_exec', error.message);
  }
}

/** A shop-wide counter, safe against concurrent orders from other connections and instances. */
function nextOrderNumber() {
  for (;;) {
    const current = kv.get('order-seq');
    const next = (parseCount(current, U64_MAX) ?? 0n) + 1n;
    if (kv.compareAndSwap('order-seq', current, next.toString())) return next;
  }
}

export function orderStatus(orderId) {
  const id = trim(orderId).toUpperCase();
  const order = kv.getJson(`order:${id}`);
  if (order === null) throw new Error(`no order ${id}`);
  return order;
}
