"""Without an LLM: pick the tools from the words of the message (plugins/assistant/src/planner.rs)."""

import json
from typing import Any, Optional

import serde_json as sj
import shop
from broker_plugin import Context, PluginError

# The session key of the connection's last order, for "where is my order?".
LAST_ORDER = "last_order"


def answer(ctx: Context, out: Any, message: str) -> None:
    text = message.lower()
    pizzas = shop.mentioned(text)
    size = next((size for size in shop.SIZES if size in text), "medium")

    order_id = order_id_in(message) or (last_order(ctx) if wants_status(text) else None)
    if order_id is not None:
        out.initial(f"Let me check on order {order_id}.")
        status = out.tool("order_status", sj.dumps({"order_id": order_id}))
        order = _parsed(status)
        if order is _INVALID:
            return out.final_response(f"I could not find order {order_id}.")
        return out.final_response(
            f"Order **{_str(order, 'order_id')}** is *{_str(order, 'status')}*: "
            f"{describe(_at(order, 'items'))} for {_str(order, 'total')}."
        )
    if wants_status(text):
        out.initial("Let me check on your order.")
        return out.final_response("I have no order for you yet: tell me its id, like `ORD-0001`.")
    if pizzas and any(w in text for w in ["order", "i want", "i'd like", "i would like", "buy", "get me"]):
        quantity = first_number(text) or 1
        items = [{"item": pizza, "size": size, "quantity": quantity} for pizza in pizzas]
        out.initial("Placing your order now.")
        placed = out.tool("place_order", sj.dumps({"items": items}))
        order = _parsed(placed)
        if order is _INVALID:
            return out.final_response("I could not place that order.")
        order_id = _str(order, "order_id")
        ctx.session_set_json(LAST_ORDER, order_id)
        return out.final_response(
            f"Your order **{order_id}** is placed: {describe(_at(order, 'items'))} for {_str(order, 'total')}."
        )
    if pizzas and any(w in text for w in ["price", "how much", "cost"]):
        out.initial("Let me look up the price.")
        lines = [out.tool("get_price", sj.dumps({"item": pizza, "size": size})) for pizza in pizzas]
        return out.final_response("\n".join(f"- {line}" for line in lines))
    if any(w in text for w in ["menu", "pizzas", "what do you have", "options"]):
        out.initial("Let me check the menu for you.")
        menu = out.tool("get_menu", "{}")
        return out.final_response("## Our menu\n\n" + "\n".join(f"- {line}" for line in _lines(menu)))
    out.initial("I'm the pizza shop assistant.")
    out.final_response(
        "I can show the **menu**, tell you a **price** (\"how much is a large Pepperoni?\"), take an **order** "
        "(\"I'd like 2 small Margherita\") and check an **order's status** (\"status of ORD-0001\")."
    )


_INVALID = object()


def _parsed(text: str) -> Any:
    """`serde_json::from_str::<Value>`: the value, or `_INVALID`."""
    try:
        return sj.from_str(sj.Value, text)
    except sj.Error:
        return _INVALID


def _at(value: Any, key: str) -> Any:
    """`value[key]` as serde_json's `Value` indexes: null when it is not there."""
    return value.get(key) if isinstance(value, dict) else None


def _str(value: Any, key: str) -> str:
    """`value[key].as_str().unwrap_or_default()`."""
    found = _at(value, key)
    return found if isinstance(found, str) else ""


def _lines(text: str) -> list:
    """Rust's `str::lines`: split at `\\n` (and a `\\r` before it), no last empty line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def wants_status(text: str) -> bool:
    return any(w in text for w in ["status", "where is my order", "my order"])


def last_order(ctx: Context) -> Optional[str]:
    try:
        order_id = ctx.session_get_json(LAST_ORDER)
    except PluginError:
        return None
    return order_id if isinstance(order_id, str) else None


def order_id_in(message: str) -> Optional[str]:
    """`ORD-0001` (any case) in the message."""
    upper = message.upper()
    start = upper.find("ORD-")
    if start < 0:
        return None
    digits = ""
    for char in upper[start + 4 :]:
        if not ("0" <= char <= "9"):
            break
        digits += char
    return f"ORD-{digits}" if digits else None


def first_number(text: str) -> Optional[int]:
    """The first number in `text`, when it is not 0; a number past u64 is u64's largest, so that
    the tool refuses it rather than the planner ordering one pizza instead."""
    digits = ""
    for char in text:
        if "0" <= char <= "9":
            digits += char
        elif digits:
            break
    if not digits:
        return None
    number = min(int(digits), shop.U64_MAX)
    return number if number > 0 else None


def describe(items: Any) -> str:
    if not isinstance(items, list):
        return ""
    return ", ".join(
        f"{_display(_at(i, 'quantity'))} × {_str(i, 'size')} {_str(i, 'item')}" for i in items
    )


def _display(value: Any) -> str:
    """A `Value` as its `Display` writes it (compact JSON)."""
    return sj.dumps(value) if not isinstance(value, float) else json.dumps(value)
