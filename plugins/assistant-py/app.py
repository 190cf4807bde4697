"""The pizza-shop assistant in Python: the same frames as the Rust one (plugins/assistant), sent as
the work progresses. Each user message gets an `initial_response`, one `tool_result` per tool call
and a `final_response` (the pizza-assistant wire format). With an LLM configured (an
OpenAI-compatible chat-completions API, reached through `allow_hosts`) the model picks the tools;
without one, a deterministic planner does, so the shop works with no external service. Its
settings in broker.toml are the Rust build's: `[plugins.<name>.settings.llm]` and `.orders`."""

import json
from dataclasses import dataclass
from typing import Any, Literal

import llm
import orders
import planner
import serde_json as sj
import shop
from rust_types import SETTINGS
from broker_plugin import Context, Plugin, PluginError


@dataclass
class UserMessage:
    message: str


@dataclass
class Notice:
    """The greeting on connect (`type: welcome`) and the farewell on `exit` (`type: goodbye`)."""

    status: Literal["success"]
    type: Literal["welcome", "goodbye"]
    message: str


@dataclass
class Response:
    """A stage of the answer: `initial_response` first, `final_response` (markdown) last."""

    status: Literal["success"]
    stage: Literal["initial_response", "final_response"]
    content: str


@dataclass
class ToolResult:
    """A tool the assistant called, with what it answered."""

    status: Literal["success"]
    stage: Literal["tool_result"]
    tool: str
    response: str


@dataclass
class ToolFailure:
    """A tool call that failed: no such tool, bad arguments, or the tool's own failure."""

    status: Literal["error"]
    stage: Literal["tool_missing", "tool_args", "tool_exec"]
    tool: str
    error: str


@dataclass
class Exception_:
    """The assistant could not answer (the model failed or could not be reached)."""

    status: Literal["error"]
    type: Literal["exception"]
    message: str


class Out:
    """Where the assistant's frames go, in the wire format of the pizza assistant."""

    def __init__(self, ctx: Context, rules: orders.Rules):
        self.ctx, self.rules = ctx, rules

    def initial(self, content: str) -> None:
        self.ctx.send({"status": "success", "stage": "initial_response", "content": content})

    def final_response(self, content: str) -> None:
        self.ctx.send({"status": "success", "stage": "final_response", "content": content})

    def exception(self, message: str) -> None:
        self.ctx.send({"status": "error", "type": "exception", "message": message})

    def tool(self, name: str, arguments: str) -> str:
        """Runs a tool and reports it: `tool_result`, or the error stage that fits. Returns the
        text to give a model as the tool's answer."""
        try:
            response = shop.call(self.ctx, self.rules, name, arguments)
        except shop.ToolError as error:
            message = {
                "tool_missing": f"there is no tool named {shop.debug(name)}",
                "tool_args": f"bad arguments for {name}: {error.message}",
            }.get(error.stage, error.message)
            self.ctx.send({"status": "error", "stage": error.stage, "tool": name, "error": message})
            return f"error: {message}"
        self.ctx.send({"status": "success", "stage": "tool_result", "tool": name, "response": response})
        return response


plugin = (
    Plugin(
        "assistant",
        "0.1.0",
        description="Pizza-shop assistant: menu, prices, orders and order status, with staged replies",
        tags=("assistant", "ai"),
    )
    .sends_raw("notice", Notice)
    .sends_raw("response", Response)
    .sends_raw("tool_result", ToolResult)
    .sends_raw("tool_failure", ToolFailure)
    .sends_raw("exception", Exception_)
)


@plugin.on_connect
def welcome(ctx: Context) -> None:
    message = "Welcome to the pizza shop! Ask for the menu, a price, an order or an order's status."
    ctx.send({"status": "success", "type": "welcome", "message": message})


@plugin.handle("user_message")
def user_message(ctx: Context, payload: UserMessage) -> None:
    """A question or request for the pizza shop, in plain words."""
    try:
        settings = sj.from_str(SETTINGS, json.dumps(ctx.settings(), separators=(",", ":"), ensure_ascii=False))
    except sj.Error as error:
        raise PluginError(f"plugin settings: {error}") from None
    out = Out(ctx, orders.Rules(**settings["orders"]))
    if settings["llm"] is not None:
        llm.converse(ctx, out, settings["llm"], payload.message)
    else:
        planner.answer(ctx, out, payload.message)


@plugin.handle("exit")
def leave(ctx: Context, payload: Any) -> None:
    ctx.send({"status": "success", "type": "goodbye", "message": "Thank you for visiting the pizza shop. Goodbye!"})
    ctx.close(1000, "goodbye")


Handler = plugin.handler()
Describe = plugin.describe()
