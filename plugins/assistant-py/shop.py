"""The pizza shop: its menu and the four tools the assistant can call (plugins/assistant/src/shop.rs)."""

from typing import Any, Optional

import orders
import serde_json as sj
from rust_types import NO_ARGS, ORDER_ARGS, PRICE_ARGS, STATUS_ARGS
from broker_plugin import Context, PluginError, kv, log

# (name, small, medium, large) prices in cents.
MENU = [
    ("Margherita", 899, 1199, 1499),
    ("Pepperoni", 999, 1299, 1599),
    ("Hawaiian", 1049, 1349, 1649),
    ("Veggie", 949, 1249, 1549),
]

SIZES = ["small", "medium", "large"]

# Pizzas one line of an order may ask for.
MAX_QUANTITY = 50
# Lines one order may have.
MAX_LINES = 10

U64_MAX = 2**64 - 1


def tool_definitions() -> list:
    """The tools, as an OpenAI-compatible `tools` list."""
    string = {"type": "string"}
    return [
        {"type": "function", "function": {"name": "get_menu", "description": "The pizzas on the menu with their prices",
            "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "get_price", "description": "The price of one pizza in one size",
            "parameters": {"type": "object", "required": ["item", "size"],
                "properties": {"item": string, "size": {"type": "string", "enum": SIZES}}}}},
        {"type": "function", "function": {"name": "place_order", "description": "Orders pizzas; returns the order id",
            "parameters": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array",
                "minItems": 1, "maxItems": MAX_LINES,
                "items": {"type": "object", "required": ["item", "size"], "properties": {
                    "item": string, "size": {"type": "string", "enum": SIZES},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}}}}}}}},
        {"type": "function", "function": {"name": "order_status", "description": "The status of an order by id",
            "parameters": {"type": "object", "required": ["order_id"], "properties": {"order_id": string}}}},
    ]  # fmt: skip


class ToolError(Exception):
    """Why a tool call produced no result, named as the stage the client sees: `tool_missing`,
    `tool_args` (arguments not JSON or not fitting the tool), `tool_exec` (the tool failed)."""

    def __init__(self, stage: str, message: str = ""):
        super().__init__(message)
        self.stage, self.message = stage, message


def debug(text: str) -> str:
    """A string as Rust's `{:?}` writes it."""
    return sj.debug_str(text)


def _args(kind: sj.Struct, text: str) -> dict:
    if not text.strip():
        text = "{}"
    try:
        return sj.from_str(kind, text)
    except sj.Error as error:
        raise ToolError("tool_args", str(error)) from None


def call(ctx: Context, rules: "orders.Rules", name: str, arguments: str) -> str:
    """Runs tool `name` with `arguments` (JSON text) for the client of `ctx`, orders bound by
    `rules`; the result is the text the client sees. Raises `ToolError`."""
    if name == "get_menu":
        _args(NO_ARGS, arguments)
        return menu_text()
    if name == "get_price":
        a = _args(PRICE_ARGS, arguments)
        pizza, size, cents = _exec(lambda: price(a["item"], a["size"]))
        return f"{pizza} ({size}): {dollars(cents)}"
    if name == "place_order":
        a = _args(ORDER_ARGS, arguments)
        return sj.dumps(place_order(ctx, rules, a["items"]))
    if name == "order_status":
        a = _args(STATUS_ARGS, arguments)
        return sj.dumps(_exec(lambda: order_status(a["order_id"])))
    raise ToolError("tool_missing")


def _exec(run: Any) -> Any:
    try:
        return run()
    except PluginError as error:
        raise ToolError("tool_exec", str(error)) from None


def dollars(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02}"


def menu_text() -> str:
    return "\n".join(f"{n}: small {dollars(s)}, medium {dollars(m)}, large {dollars(l)}" for n, s, m, l in MENU)


def _ascii_lower(text: str) -> str:
    return "".join(c.lower() if c.isascii() else c for c in text)


def find(item: str) -> Optional[tuple]:
    """The menu's name for `item` (case-insensitive, ASCII), with its prices."""
    wanted = _ascii_lower(item.strip())
    return next((entry for entry in MENU if _ascii_lower(entry[0]) == wanted), None)


def mentioned(text: str) -> list:
    """Every menu pizza named in `text`, in menu order."""
    text = text.lower()
    return [name for name, *_ in MENU if name.lower() in text]


def price(item: str, size: str) -> tuple:
    entry = find(item)
    if entry is None:
        raise PluginError(f"there is no pizza called {debug(item)} on the menu")
    name, small, medium, large = entry
    wanted = size.strip().lower()
    prices = {"small": small, "medium": medium, "large": large}
    if wanted not in prices:
        raise PluginError(f"there is no size {debug(wanted)}: choose small, medium or large")
    return name, wanted, prices[wanted]


def place_order(ctx: Context, rules: "orders.Rules", items: list) -> dict:
    """Stores a new order under a fresh id (`ORD-0001`, ...), kept for `rules.ttl_s`, and
    returns it. Lines out of bounds are refused as bad arguments before anything is stored; an
    order past the client's quota is refused as the tool's failure."""
    if not items:
        raise ToolError("tool_args", "an order needs at least one pizza")
    if len(items) > MAX_LINES:
        raise ToolError("tool_args", f"an order has at most {MAX_LINES} lines, not {len(items)}")
    total = 0
    lines = []
    for item in items:
        quantity = item["quantity"]
        if not 1 <= quantity <= MAX_QUANTITY:
            raise ToolError(
                "tool_args",
                f"quantity {quantity} of {debug(item['item'])} is not between 1 and {MAX_QUANTITY}",
            )
        name, size, cents = _exec(lambda: price(item["item"], item["size"]))
        total += cents * quantity
        if total > U64_MAX:
            raise ToolError("tool_args", "the order's total is too large")
        lines.append({"item": name, "size": size, "quantity": quantity})
    _exec(rules.check)
    refusal = _exec(lambda: rules.take(ctx))
    if refusal is not None:
        raise ToolError("tool_exec", refusal)
    try:
        number = next_order_number()
        order_id = f"ORD-{number:04}"
        order = {"order_id": order_id, "items": lines, "total": dollars(total), "status": "received"}
        kv.set_json(f"order:{order_id}", order, rules.ttl_ms())
        return order
    except PluginError as error:
        # The client is not charged for an order the store refused; the refusal is what it sees.
        try:
            rules.give_back(ctx)
        except PluginError as failure:
            log.warn(f"an order's quota was not given back: {failure}")
        raise ToolError("tool_exec", str(error)) from None


def next_order_number() -> int:
    """A shop-wide counter, safe against concurrent orders from other connections and instances."""
    while True:
        current = kv.get("order-seq")
        next_number = orders.parse_int(current, 0) + 1
        if kv.compare_and_swap("order-seq", current, str(next_number), None):
            return next_number


def order_status(order_id: str) -> Any:
    order_id = order_id.strip().upper()
    order = kv.get_json(f"order:{order_id}")
    if order is None:
        raise PluginError(f"no order {order_id}")
    return order
