"""The SDK parity plugin in Python: the same actions, and the same answers, as the testbed's
(tests/plugins/testbed) and tests/polyglot/parity-js."""

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, Optional

from broker_plugin import Context, Plugin, history, kv, send_to


@dataclass
class TextValue:
    key: str
    value: str


@dataclass
class JsonValue:
    key: str
    value: Any


@dataclass
class Key:
    key: str


@dataclass
class SendTo:
    connection: int
    frame: Any


class Kind(Enum):
    PLAIN = "plain"
    FANCY = "fancy"


@dataclass
class Typed:
    flags: dict[str, bool]
    kind: Kind
    only: Literal["only"]


@dataclass
class Status:
    """A frame sent outside the action envelope."""

    status: str
    done: bool


plugin = Plugin("parity", "0.1.0").sends_raw("status", Status)
logger = logging.getLogger("parity")


def answer(action: str, payload: Any) -> dict:
    return {"action": action, "payload": payload}


@plugin.handle("kv_set")
def kv_set(ctx: Context, payload: TextValue) -> dict:
    kv.set(payload.key, payload.value)
    return answer("kv_set", None)


@plugin.handle("kv_get")
def kv_get(ctx: Context, payload: Key) -> dict:
    return answer("kv_get", kv.get(payload.key))


@plugin.handle("kv_set_json")
def kv_set_json(ctx: Context, payload: JsonValue) -> dict:
    kv.set_json(payload.key, payload.value)
    return answer("kv_set_json", None)


@plugin.handle("kv_get_json")
def kv_get_json(ctx: Context, payload: Key) -> dict:
    return answer("kv_get_json", kv.get_json(payload.key))


@plugin.handle("session_set")
def session_set(ctx: Context, payload: TextValue) -> dict:
    ctx.session_set(payload.key, payload.value)
    return answer("session_set", None)


@plugin.handle("session_get")
def session_get(ctx: Context, payload: Key) -> dict:
    return answer("session_get", ctx.session_get(payload.key))


@plugin.handle("session_set_json")
def session_set_json(ctx: Context, payload: JsonValue) -> dict:
    ctx.session_set_json(payload.key, payload.value)
    return answer("session_set_json", None)


@plugin.handle("session_get_json")
def session_get_json(ctx: Context, payload: Key) -> dict:
    return answer("session_get_json", ctx.session_get_json(payload.key))


@plugin.handle("raise")
def fail(ctx: Context, payload: None) -> None:
    """An ordinary exception: the client gets `plugin_error`, and the instance keeps serving."""
    logger.info("asked to raise")
    int("not a number")


@plugin.handle("send_to")
def send(ctx: Context, payload: SendTo) -> None:
    send_to(payload.connection, payload.frame)


@dataclass
class HistoryRead:
    group: str
    limit: int
    after: Optional[int] = None


@plugin.handle("history_read")
def history_read(ctx: Context, payload: HistoryRead) -> dict:
    page = history.read(payload.group, payload.after, payload.limit)
    entries = [{"offset": e.offset, "frame": e.frame} for e in page.entries]
    return answer("history_read", {"epoch": page.epoch, "offset": page.offset, "entries": entries})


@plugin.handle("typed")
def typed(ctx: Context, payload: Typed) -> dict:
    return answer("typed", payload)


Handler = plugin.handler()
Describe = plugin.describe()
