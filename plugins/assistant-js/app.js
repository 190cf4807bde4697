// The pizza-shop assistant in JavaScript: the same frames as plugins/assistant (Rust). Each user
// message gets an `initial_response`, one `tool_result` per tool call and a `final_response`, sent
// as the work progresses. With an LLM configured (an OpenAI-compatible chat-completions API,
// reached through the plugin's `allow_hosts`) the model picks the tools; without one, a
// deterministic planner does. Orders live in the key-value store, the conversation in the session.
//
// Its settings are the Rust assistant's: `[plugins.<name>.settings.llm]` (`base_url`, `model`,
// `api_key_env`, `timeout_ms`) and `[plugins.<name>.settings.orders]` (`max_per_client`, `ttl_s`).

import { Plugin, PluginError, t } from '../../plugin-sdk/js/index.js';

import { converse, SettingsType as LlmSettings } from './llm.js';
import { Rules, RulesType } from './orders.js';
import { answer } from './planner.js';
import { SerdeError, debugString, fromStr, option, struct } from './serde.js';
import { ToolError, call } from './shop.js';

/** `[plugins.<name>.settings]` in broker.toml. */
const SettingsType = struct('Settings', [
  // The model; without it the planner picks the tools.
  ['llm', option(LlmSettings)],
  ['orders', RulesType, () => ({})],
]);

function settings(ctx) {
  try {
    return fromStr(JSON.stringify(ctx.settings()), SettingsType);
  } catch (error) {
    if (error instanceof SerdeError) throw new PluginError(`plugin settings: ${error.message}`);
    throw error;
  }
}

/** Where the assistant's frames go, in the wire format of the pizza assistant. */
class Out {
  constructor(ctx, orders) {
    this.ctx = ctx;
    this.orders = orders;
  }

  initial(content) {
    this.ctx.send({ status: 'success', stage: 'initial_response', content });
  }

  finalResponse(content) {
    this.ctx.send({ status: 'success', stage: 'final_response', content });
  }

  exception(message) {
    this.ctx.send({ status: 'error', type: 'exception', message });
  }

  /**
   * Runs a tool and reports it: `tool_result`, or the error stage that fits. Returns the text to
   * give a model as the tool's answer.
   */
  tool(name, args) {
    let response;
    try {
      response = call(this.ctx, this.orders, name, args);
    } catch (error) {
      if (!(error instanceof ToolError)) throw error;
      const message =
        error.stage === 'tool_missing'
          ? `there is no tool named ${debugString(name)}`
          : error.stage === 'tool_args'
            ? `bad arguments for ${name}: ${error.message}`
            : error.message;
      this.ctx.send({ status: 'error', stage: error.stage, tool: name, error: message });
      return `error: ${message}`;
    }
    this.ctx.send({ status: 'success', stage: 'tool_result', tool: name, response });
    return response;
  }
}

const success = t.literal('success');

const plugin = new Plugin({
  name: 'assistant',
  version: '0.1.0',
  description: 'Pizza-shop assistant: menu, prices, orders and order status, with staged replies',
  tags: ['assistant', 'ai'],
})
  .sendsRaw(
    'notice',
    t.object({ status: success, type: t.enum(['welcome', 'goodbye']), message: t.string() }),
    'The greeting on connect (`type: welcome`) and the farewell on `exit` (`type: goodbye`).',
  )
  .sendsRaw(
    'response',
    t.object({ status: success, stage: t.enum(['initial_response', 'final_response']), content: t.string() }),
    'A stage of the answer: `initial_response` first, `final_response` (markdown) last.',
  )
  .sendsRaw(
    'tool_result',
    t.object({ status: success, stage: t.literal('tool_result'), tool: t.string(), response: t.string() }),
    'A tool the assistant called, with what it answered.',
  )
  .sendsRaw(
    'tool_failure',
    t.object({
      status: t.literal('error'),
      stage: t.enum(['tool_missing', 'tool_args', 'tool_exec']),
      tool: t.string(),
      error: t.string(),
    }),
    "A tool call that failed: no such tool, bad arguments, or the tool's own failure.",
  )
  .sendsRaw(
    'exception',
    t.object({ status: t.literal('error'), type: t.literal('exception'), message: t.string() }),
    'The assistant could not answer (the model failed or could not be reached).',
  )
  .onConnect((ctx) => {
    const welcome = 'Welcome to the pizza shop! Ask for the menu, a price, an order or an order\'s status.';
    ctx.send({ status: 'success', type: 'welcome', message: welcome });
  })
  .handle(
    'user_message',
    {
      payload: t.object({ message: t.string() }),
      summary: 'A question or request for the pizza shop, in plain words.',
    },
    (ctx, { message }) => {
      const { llm, orders } = settings(ctx);
      const out = new Out(ctx, new Rules(orders));
      if (llm !== null) converse(ctx, out, llm, message);
      else answer(ctx, out, message);
    },
  )
  .handle('exit', {}, (ctx) => {
    ctx.send({ status: 'success', type: 'goodbye', message: 'Thank you for visiting the pizza shop. Goodbye!' });
    ctx.close(1000, 'goodbye');
  });

export const { handler, describe } = plugin.exports();
