// Outbound HTTP and async handlers from JavaScript (plugin-sdk/js), for tests/all/http.rs: each
// action makes the request its payload describes and answers what came back, or the error it
// threw; the async ones await before answering or rejecting.

import { HttpError, Plugin, PluginError, fetch, http, t } from '../../../plugin-sdk/js/index.js';

const Fetch = t.object({
  url: t.string(),
  method: t.optional(t.string()),
  headers: t.optional(t.record(t.string())),
  body: t.optional(t.string()),
  timeout_ms: t.optional(t.integer()),
});

const plugin = new Plugin({ name: 'http-js', version: '0.1.0', description: 'Outbound HTTP from JavaScript, for the tests' });

const answered = (response) => ({
  status: response.status,
  headers: Object.fromEntries(response.headers),
  body: response.text(),
});

const request = ({ url, method, headers, body, timeout_ms: timeoutMs }) =>
  http.request(method ?? 'GET', url, { headers: headers ?? undefined, body: body ?? undefined, timeoutMs });

plugin
  // Makes the request; an error goes through (plugin_error).
  .handle('fetch', { payload: Fetch }, (_ctx, payload) => ({ action: 'fetched', payload: answered(request(payload)) }))
  // Makes the request and answers the error it threw, by class.
  .handle('fetch_caught', { payload: Fetch }, (_ctx, payload) => {
    try {
      return { action: 'fetched', payload: answered(request(payload)) };
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      const kinds = [
        ['HttpError', HttpError],
        ['PluginError', PluginError],
      ].flatMap(([name, kind]) => (error instanceof kind ? [name] : []));
      return { action: 'failed', payload: { kinds, code: error.code, message: error.message } };
    }
  })
  // POSTs `{"hello": "wörld"}` and answers the response decoded from JSON.
  .handle('post_json', { payload: Fetch }, (_ctx, { url }) => {
    const response = http.postJson(url, { hello: 'wörld' });
    return { action: 'posted', payload: { status: response.status, json: response.json() } };
  })
  // `fetch`, awaited in an async handler; a rejection goes through (plugin_error).
  .handle('fetch_async', { payload: Fetch }, async (_ctx, { url, method, headers, body, timeout_ms: timeoutMs }) => {
    const response = await fetch(url, { method: method ?? 'GET', headers: headers ?? undefined, body: body ?? undefined, timeoutMs });
    return {
      action: 'fetched',
      payload: { status: response.status, ok: response.ok, header: response.headers.get('x-test'), body: await response.text() },
    };
  })
  // GETs every URL with `fetch`, all in flight at once, and answers the bodies in order.
  .handle('fetch_all', { payload: t.object({ urls: t.array(t.string()) }) }, async (_ctx, { urls }) => {
    const responses = await Promise.all(urls.map((url) => fetch(url)));
    return { action: 'fetched_all', payload: await Promise.all(responses.map((r) => r.text())) };
  })
  // GETs the URL bounded by `timeoutMs` of `seconds`, and sleeps a little beside it: the timer
  // fires once the request is answered or given up, as a pending fetch holds the event loop.
  .handle('fetch_within', { payload: t.object({ url: t.string(), seconds: t.number() }) }, async (_ctx, { url, seconds }) => {
    const after = (ms, value) => new Promise((resolve) => setTimeout(() => resolve(value), ms));
    const bounded = fetch(url, { timeoutMs: seconds * 1000 }).then(
      (response) => response.text(),
      (error) => (error instanceof HttpError && error.code === 'ConnectionReadTimeout' ? 'timed out' : Promise.reject(error)),
    );
    return { action: 'fetched_within', payload: await Promise.all([bounded, after(50, 'slept')]) };
  })
  // Waits `ms` on a timer, then answers.
  .handle('sleep', { payload: t.object({ ms: t.integer() }) }, async (_ctx, { ms }) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return { action: 'slept', payload: ms };
  })
  // Rejects after an await: with a PluginError (`plugin`) or a TypeError (`type`).
  .handle('reject', { payload: t.object({ kind: t.enum(['plugin', 'type']) }) }, async (_ctx, { kind }) => {
    await null;
    if (kind === 'plugin') throw new PluginError('refused after an await');
    return null.property;
  });

export const { handler, describe } = plugin.exports();
