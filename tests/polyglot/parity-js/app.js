// The SDK parity plugin in JavaScript: the same actions, and the same answers, as the testbed's
// (tests/plugins/testbed) and tests/polyglot/parity-py.

import { Plugin, history, kv, log, sendTo, t } from '../../../plugin-sdk/js/index.js';

const TextValue = t.object({ key: t.string(), value: t.string() });
const JsonValue = t.object({ key: t.string(), value: {} });
const Key = t.object({ key: t.string() });
const SendTo = t.object({ connection: t.integer(), frame: {} });
const Typed = t.object({
  flags: t.record(t.boolean()),
  kind: t.enum(['plain', 'fancy']),
  // A one-variant Rust enum, Python's Literal['only']: `t.literal` would be `const`.
  only: t.enum(['only']),
});
const HistoryRead = t.object({ group: t.string(), after: t.optional(t.integer()), limit: t.integer() });
const Status = t.object({ status: t.string(), done: t.boolean() });

const plugin = new Plugin({ name: 'parity', version: '0.1.0' }).sendsRaw(
  'status',
  Status,
  'A frame sent outside the action envelope.',
);

const answer = (action, payload) => ({ action, payload: payload ?? null });

plugin
  .handle('kv_set', { payload: TextValue }, (_ctx, { key, value }) => answer('kv_set', kv.set(key, value)))
  .handle('kv_get', { payload: Key }, (_ctx, { key }) => answer('kv_get', kv.get(key)))
  .handle('kv_set_json', { payload: JsonValue }, (_ctx, { key, value }) => answer('kv_set_json', kv.setJson(key, value)))
  .handle('kv_get_json', { payload: Key }, (_ctx, { key }) => answer('kv_get_json', kv.getJson(key)))
  .handle('session_set', { payload: TextValue }, (ctx, { key, value }) =>
    answer('session_set', ctx.session.set(key, value)),
  )
  .handle('session_get', { payload: Key }, (ctx, { key }) => answer('session_get', ctx.session.get(key)))
  .handle('session_set_json', { payload: JsonValue }, (ctx, { key, value }) =>
    answer('session_set_json', ctx.session.setJson(key, value)),
  )
  .handle('session_get_json', { payload: Key }, (ctx, { key }) => answer('session_get_json', ctx.session.getJson(key)))
  // An ordinary exception: the client gets `plugin_error`, and the instance keeps serving.
  .handle('raise', { payload: { type: 'null' } }, () => {
    log.info('asked to raise');
    JSON.parse('not a number');
  })
  .handle('send_to', { payload: SendTo }, (_ctx, { connection, frame }) => sendTo(connection, frame))
  .handle('typed', { payload: Typed }, (_ctx, typed) => answer('typed', typed))
  .handle('history_read', { payload: HistoryRead }, (_ctx, { group, after, limit }) =>
    answer('history_read', history.read(group, after, limit)),
  );

export const { handler, describe } = plugin.exports();
