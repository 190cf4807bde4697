"""What bounds the orders one client can leave in the shop's key-value store, which every client
of the namespace shares: a quota per client and a lifetime per order (plugins/assistant/src/orders.rs)."""

from dataclasses import dataclass
from typing import Optional

from broker_plugin import Context, PluginError, kv
from serde_json import debug_str

# The session key counting the orders an anonymous connection has placed.
PLACED = "orders_placed"


def parse_int(text: Optional[str], default: int) -> int:
    """An integer as Rust's `str::parse` reads it (digits, one optional sign), or `default`."""
    if text is None:
        return default
    body = text[1:] if text[:1] in "+-" else text
    if not body or not body.isascii() or not body.isdigit():
        return default
    return int(text)


@dataclass
class Rules:
    """`[plugins.<name>.settings.orders]` in broker.toml."""

    # Orders one client may place: an anonymous connection in its lifetime, an authenticated
    # user (the token's `sub`) over all its connections until `ttl_s` after its last order.
    max_per_client: int = 10
    # Seconds an order is kept; then it is gone from the store (and from `order_status`).
    ttl_s: int = 24 * 60 * 60

    def check(self) -> None:
        """Refuses settings that would keep orders forever."""
        if self.ttl_s == 0:
            raise PluginError("plugin settings: orders.ttl_s must be at least 1 (seconds an order is kept)")

    def ttl_ms(self) -> int:
        """How long an order, and an authenticated user's count, is kept."""
        return self.ttl_s * 1000

    def take(self, ctx: Context) -> Optional[str]:
        """Takes one order from the client's quota; the refusal for the client, or None."""
        limit = self.max_per_client
        if ctx.user is None:
            placed = ctx.session_get_json(PLACED) or 0
            taken = placed < limit
            if taken:
                ctx.session_set_json(PLACED, placed + 1)
        else:
            taken = _add(_user_key(ctx.user), 1, limit, self.ttl_ms())
        if taken:
            return None
        if ctx.user is not None:
            return (
                f"order refused: {debug_str(ctx.user)} may place at most {limit} orders until {self.ttl_s}s after "
                "its last one (settings.orders.max_per_client)"
            )
        return f"order refused: one connection may place at most {limit} orders (settings.orders.max_per_client)"

    def give_back(self, ctx: Context) -> None:
        """Gives back what `take` took, for an order that could not be stored."""
        if ctx.user is None:
            placed = ctx.session_get_json(PLACED) or 0
            ctx.session_set_json(PLACED, max(placed - 1, 0))
        else:
            _add(_user_key(ctx.user), -1, None, self.ttl_ms())


def _user_key(user: str) -> str:
    return f"orders-of:{user}"


def _add(key: str, delta: int, limit: Optional[int], ttl_ms: int) -> bool:
    """Adds `delta` to the count under `key` unless it would pass `limit`; safe against the
    user's other connections doing the same at once. False when it would pass `limit`."""
    while True:
        current = kv.get(key)
        count = parse_int(current, 0)
        next_count = max(count + delta, 0)
        if limit is not None and next_count > limit:
            return False
        if kv.compare_and_swap(key, current, str(next_count), ttl_ms):
            return True
