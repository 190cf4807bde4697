// Without an LLM: pick the tools from the words of the message (plugins/assistant/src/planner.rs).

import { SIZES, mentioned } from './shop.js';

/** The session key of the connection's last order, for "where is my order?". */
const LAST_ORDER = 'last_order';

const U64_MAX = (1n << 64n) - 1n;

/** `serde_json::from_str::<Value>`, or undefined for text that is not JSON. */
function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const str = (value) => (typeof value === 'string' ? value : '');

/** `str::lines`: split at `\n`, a `\r` before it dropped, no empty last line. */
function lines(text) {
  const all = text.split('\n').map((line) => (line.endsWith('\r') ? line.slice(0, -1) : line));
  if (all.length && all[all.length - 1] === '') all.pop();
  return all;
}

export function answer(ctx, out, message) {
  const text = message.toLowerCase();
  const pizzas = mentioned(text);
  const size = SIZES.find((s) => text.includes(s)) ?? 'medium';

  const orderId = orderIdIn(message) ?? (wantsStatus(text) ? lastOrder(ctx) : null);
  if (orderId !== null) {
    out.initial(`Let me check on order ${orderId}.`);
    const status = out.tool('order_status', JSON.stringify({ order_id: orderId }));
    const order = parse(status);
    return out.finalResponse(
      order === undefined
        ? `I could not find order ${orderId}.`
        : `Order **${str(order?.order_id)}** is *${str(order?.status)}*: ${describe(order?.items)} for ${str(order?.total)}.`,
    );
  }
  if (wantsStatus(text)) {
    out.initial('Let me check on your order.');
    return out.finalResponse('I have no order for you yet: tell me its id, like `ORD-0001`.');
  }
  if (pizzas.length && ['order', 'i want', "i'd like", 'i would like', 'buy', 'get me'].some((w) => text.includes(w))) {
    const quantity = firstNumber(text) ?? 1n;
    // Written by hand: a quantity past 2^53 must reach the tool as the number it is.
    const items = pizzas.map(
      (pizza) => `{"item":${JSON.stringify(pizza)},"size":${JSON.stringify(size)},"quantity":${quantity}}`,
    );
    out.initial('Placing your order now.');
    const order = parse(out.tool('place_order', `{"items":[${items.join(',')}]}`));
    if (order === undefined) return out.finalResponse('I could not place that order.');
    const id = str(order?.order_id);
    ctx.session.setJson(LAST_ORDER, id);
    return out.finalResponse(`Your order **${id}** is placed: ${describe(order?.items)} for ${str(order?.total)}.`);
  }
  if (pizzas.length && ['price', 'how much', 'cost'].some((w) => text.includes(w))) {
    out.initial('Let me look up the price.');
    const prices = pizzas.map((pizza) => out.tool('get_price', JSON.stringify({ item: pizza, size })));
    return out.finalResponse(prices.map((line) => `- ${line}`).join('\n'));
  }
  if (['menu', 'pizzas', 'what do you have', 'options'].some((w) => text.includes(w))) {
    out.initial('Let me check the menu for you.');
    const menu = out.tool('get_menu', '{}');
    return out.finalResponse(`## Our menu\n\n${lines(menu).map((line) => `- ${line}`).join('\n')}`);
  }
  out.initial("I'm the pizza shop assistant.");
  return out.finalResponse(
    'I can show the **menu**, tell you a **price** ("how much is a large Pepperoni?"), take an **order** ' +
      '("I\'d like 2 small Margherita") and check an **order\'s status** ("status of ORD-0001").',
  );
}

function wantsStatus(text) {
  return ['status', 'where is my order', 'my order'].some((w) => text.includes(w));
}

function lastOrder(ctx) {
  try {
    const id = ctx.session.getJson(LAST_ORDER);
    return typeof id === 'string' ? id : null;
  } catch {
    return null;
  }
}

/** `ORD-0001` (any case) in the message. */
function orderIdIn(message) {
  const upper = message.toUpperCase();
  const start = upper.indexOf('ORD-');
  if (start < 0) return null;
  const digits = /^[0-9]*/.exec(upper.slice(start + 4))[0];
  return digits ? `ORD-${digits}` : null;
}

/**
 * The first number in `text`, when it is not 0; a number past `u64` is `u64::MAX`, so that the
 * tool refuses it rather than the planner ordering one pizza instead.
 */
function firstNumber(text) {
  const run = /[0-9]+/.exec(text);
  if (!run) return null;
  const number = BigInt(run[0]);
  const capped = number > U64_MAX ? U64_MAX : number;
  return capped > 0n ? capped : null;
}

/** serde_json's `Display` of a value, for a quantity (null when absent). */
function valueText(value) {
  return value === undefined ? 'null' : JSON.stringify(value);
}

function describe(items) {
  if (!Array.isArray(items)) return '';
  return items.map((i) => `${valueText(i?.quantity)} × ${str(i?.size)} ${str(i?.item)}`).join(', ');
}
