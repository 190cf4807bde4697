// With an LLM: an OpenAI-compatible chat-completions API picks the tools and writes the answers
// (plugins/assistant/src/llm.rs).

import { PluginError, env, http } from '../../plugin-sdk/js/index.js';

import { SerdeError, fromStr, option, seq, struct } from './serde.js';
import { toolDefinitions } from './shop.js';

/** The session key of the conversation so far. */
const HISTORY = 'history';
/** Messages of history kept (and sent): the session is bounded. */
const HISTORY_LIMIT = 20;

const SYSTEM =
  'You are the assistant of a pizza shop. Use the tools to answer about the menu, prices, orders and order ' +
  'status. Answer in short markdown.';

/** `[plugins.<name>.settings.llm]` in broker.toml. */
export const SettingsType = struct(
  'Settings',
  [
    // `https://api.openai.com/v1`, or any OpenAI-compatible server.
    ['base_url', 'string'],
    ['model', 'string'],
    // The environment variable with the API key; broker.toml must pass it to the plugin (`env`).
    ['api_key_env', option('string')],
    ['timeout_ms', 'u64', () => 30_000n],
  ],
  { deny: true },
);

const Completion = struct('Completion', [['choices', seq(struct('Choice', [['message', 'any']]))]]);

const str = (value) => (typeof value === 'string' ? value : '');

/** One user message: ask the model, run the tools it asks for, ask again for the final answer. */
export function converse(ctx, out, settings, message) {
  const history = ctx.session.getJson(HISTORY) ?? [];
  history.push({ role: 'user', content: message });
  let first;
  try {
    first = ask(settings, history);
  } catch (error) {
    return out.exception(`the model could not be reached: ${error.message}`);
  }
  const content = str(first?.content);
  const calls = Array.isArray(first?.tool_calls) ? first.tool_calls : [];
  out.initial(content === '' ? 'Let me check that for you.' : content);

  let answer;
  if (calls.length === 0) {
    answer = content;
  } else {
    history.push(first);
    for (const call of calls) {
      const name = str(call?.function?.name);
      const args = str(call?.function?.arguments);
      const result = out.tool(name, args);
      history.push({ role: 'tool', tool_call_id: call?.id ?? null, content: result });
    }
    try {
      answer = str(ask(settings, history)?.content);
    } catch (error) {
      return out.exception(`the model could not be reached: ${error.message}`);
    }
  }
  out.finalResponse(answer);
  history.push({ role: 'assistant', content: answer });
  ctx.session.setJson(HISTORY, history.slice(Math.max(0, history.length - HISTORY_LIMIT)));
}

/** One chat-completions request; the reply's `message`. */
function ask(settings, history) {
  const messages = [{ role: 'system', content: SYSTEM }, ...history];
  const body = { model: settings.model, messages, tools: toolDefinitions() };
  const headers = [];
  if (settings.api_key_env !== null) {
    const key = env(settings.api_key_env);
    if (key === null) throw new PluginError(`${settings.api_key_env} is not in the plugin's environment`);
    headers.push(['authorization', `Bearer ${key}`]);
  }
  const url = `${settings.base_url.replace(/\/+$/, '')}/chat/completions`;
  const response = http.postJson(url, body, { headers, timeoutMs: Number(settings.timeout_ms) });
  if (response.status < 200 || response.status >= 300) {
    throw new PluginError(`${url} answered ${response.status}: ${response.text()}`);
  }
  let completion;
  try {
    completion = fromStr(response.text(), Completion);
  } catch (error) {
    if (error instanceof SerdeError) throw new PluginError(`the response is not the JSON expected: ${error.message}`);
    throw error;
  }
  if (completion.choices.length === 0) throw new PluginError('the model sent no choices');
  return completion.choices[0].message;
}
