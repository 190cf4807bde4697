"""With an LLM: an OpenAI-compatible chat-completions API picks the tools and writes the answers
(plugins/assistant/src/llm.rs), reached with broker_plugin.http through the plugin's `allow_hosts`."""

import os
from typing import Any

import serde_json as sj
import shop
from rust_types import COMPLETION
from broker_plugin import Context, PluginError, http

# The session key of the conversation so far.
HISTORY = "history"
# Messages of history kept (and sent): the session is bounded.
HISTORY_LIMIT = 20

SYSTEM = (
    "You are the assistant of a pizza shop. Use the tools to answer about the menu, "
    "prices, orders and order status. Answer in short markdown."
)

def _at(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _str(value: Any, *keys: str) -> str:
    found = _at(value, *keys)
    return found if isinstance(found, str) else ""


def converse(ctx: Context, out: Any, settings: dict, message: str) -> None:
    """One user message: ask the model, run the tools it asks for, ask again for the final answer."""
    history = ctx.session_get_json(HISTORY) or []
    history.append({"role": "user", "content": message})
    try:
        first = ask(settings, history)
    except PluginError as error:
        return out.exception(f"the model could not be reached: {error}")
    content = _str(first, "content")
    calls = _at(first, "tool_calls")
    calls = calls if isinstance(calls, list) else []
    out.initial(content or "Let me check that for you.")

    if not calls:
        answer = content
    else:
        history.append(first)
        for call in calls:
            result = out.tool(_str(call, "function", "name"), _str(call, "function", "arguments"))
            history.append({"role": "tool", "tool_call_id": _at(call, "id"), "content": result})
        try:
            answer = _str(ask(settings, history), "content")
        except PluginError as error:
            return out.exception(f"the model could not be reached: {error}")
    out.final_response(answer)
    history.append({"role": "assistant", "content": answer})
    ctx.session_set_json(HISTORY, history[max(len(history) - HISTORY_LIMIT, 0) :])


def ask(settings: dict, history: list) -> Any:
    """One chat-completions request; the reply's `message`."""
    messages = [{"role": "system", "content": SYSTEM}, *history]
    body = {"model": settings["model"], "messages": messages, "tools": shop.tool_definitions()}
    headers = []
    variable = settings["api_key_env"]
    if variable is not None:
        key = os.environ.get(variable)
        if key is None:
            raise PluginError(f"{variable} is not in the plugin's environment")
        headers.append(("authorization", f"Bearer {key}"))
    url = settings["base_url"].rstrip("/") + "/chat/completions"
    response = http.post_json(url, body, headers, settings["timeout_ms"])
    if not response.ok:
        raise PluginError(f"{url} answered {response.status}: {response.text()}")
    try:
        completion = sj.from_str(COMPLETION, response.body.decode("utf-8", errors="replace"))
    except sj.Error as error:
        raise PluginError(f"the response is not the JSON expected: {error}") from None
    if not completion["choices"]:
        raise PluginError("the model sent no choices")
    return completion["choices"][0]["message"]
