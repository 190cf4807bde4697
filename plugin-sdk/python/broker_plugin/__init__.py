"""The Python side of plugin-sdk: typed handlers over the `broker:plugin` WIT world.

Build a plugin with componentize-py against the world `plugin`:

    componentize-py -d plugin-sdk/wit -w plugin componentize app \\
        -p plugin-sdk/python -p . -o my_plugin.wasm

where `app.py` defines `Handler = plugin.handler()` and `Describe = plugin.describe()` (the
world `plugin-core` needs only `Handler`). See plugins/echo-py and plugins/chat-py.

Payloads and frames are dataclasses. Each handler's payload class becomes the JSON Schema the
broker checks payloads against before the handler runs, so a Python plugin refuses bad input with
the same error frames as a Rust one.
"""

import dataclasses
import json
import types as pytypes
import typing
from typing import Any, Callable, ClassVar, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import groups, host, identity, kv as host_kv, session, types

__all__ = ["Context", "Message", "Plugin", "PluginError", "Reject", "kv"]


def _dumps(value: Any) -> str:
    # The same bytes serde_json writes: compact, UTF-8 as is.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class PluginError(Exception):
    """A handler failure: the client gets a `plugin_error` frame with this message."""


class Reject(Exception):
    """Raised in `on_connect` to refuse a client with a WebSocket close code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class Message:
    """A frame `{"action": ACTION, "payload": {fields}}`: subclass as a dataclass and set `action`."""

    action: ClassVar[str]

    def frame(self) -> dict:
        return {"action": self.action, "payload": _plain(self)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _frame(message: Any) -> str:
    if isinstance(message, Message):
        return _dumps(message.frame())
    return _dumps(_plain(message))


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _schema(annotation: Any) -> dict:
    """The JSON Schema (draft-07) of a type annotation, as schemars writes it for the Rust type."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, pytypes.UnionType) and type(None) in args:
        inner = _schema(next(a for a in args if a is not type(None)))
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if origin is list:
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if dataclasses.is_dataclass(annotation):
        hints = typing.get_type_hints(annotation)
        fields = dataclasses.fields(annotation)
        required = [
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        schema = {"type": "object", "properties": {f.name: _schema(hints[f.name]) for f in fields}}
        if required:
            schema["required"] = required
        return schema
    return {}


def _build(cls: Any, value: Any) -> Any:
    """A checked payload as `cls`: the broker validated it against `_schema(cls)` already."""
    if dataclasses.is_dataclass(cls) and isinstance(value, dict):
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: _build(hints[k], v) for k, v in value.items() if k in names})
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin is list and args and isinstance(value, list):
        return [_build(args[0], v) for v in value]
    if origin in (typing.Union, pytypes.UnionType) and value is not None:
        return _build(next(a for a in args if a is not type(None)), value)
    return value


class Context:
    """Where a call runs: the connection, its route and path parameters, and what it may do."""

    def __init__(self, raw: types.Context):
        self.connection: int = raw.connection
        self.route: str = raw.route
        self.path: str = raw.path
        self.params: dict = dict(raw.params)
        self.user: Optional[str] = raw.user

    def param(self, name: str) -> Optional[str]:
        return self.params.get(name)

    def send(self, message: Any) -> None:
        """Queues a frame for this connection."""
        send_to(self.connection, message)

    def join(self, group: str) -> None:
        groups.join(self.connection, group)

    def leave(self, group: str) -> None:
        groups.leave(self.connection, group)

    def broadcast(self, group: str, message: Any) -> int:
        """Sends to every member of `group`, this connection included; returns how many it reached."""
        return groups.broadcast(group, _frame(message), None)

    def broadcast_to_others(self, group: str, message: Any) -> int:
        return groups.broadcast(group, _frame(message), self.connection)

    def close(self, code: int, reason: str) -> None:
        host.close(self.connection, code, reason)

    def session_get(self, key: str) -> Optional[str]:
        return session.get(self.connection, key)

    def session_set(self, key: str, value: str) -> None:
        session.set(self.connection, key, value)

    def session_delete(self, key: str) -> None:
        session.delete(self.connection, key)

    def claims(self) -> Optional[dict]:
        text = identity.claims(self.connection)
        return None if text is None else json.loads(text)

    def settings(self) -> Any:
        return json.loads(host.settings())


def send_to(connection: int, message: Any) -> None:
    """Queues a frame for any connection (of any node of a cluster)."""
    host.send(connection, _frame(message))


def members(group: str) -> list:
    return groups.members(group)


class _Kv:
    """The plugin's key-value store, kept by the host across calls, instances and reloads."""

    get = staticmethod(host_kv.get)
    delete = staticmethod(host_kv.delete)

    @staticmethod
    def set(key: str, value: str, ttl_ms: Optional[int] = None) -> None:
        host_kv.set(key, value, ttl_ms)

    @staticmethod
    def compare_and_swap(key: str, expected: Optional[str], new: Optional[str], ttl_ms: Optional[int] = None) -> bool:
        return host_kv.compare_and_swap(key, expected, new, ttl_ms)


kv = _Kv()


def _reason(error: Exception) -> str:
    """The message of a plugin error, or of a host call's error (`Err(variant)`)."""
    if isinstance(error, Err):
        value = getattr(error.value, "value", None)
        return value if isinstance(value, str) else type(error.value).__name__.split("_")[-1].lower()
    return str(error)


@dataclasses.dataclass
class _Route:
    payload: Any
    handler: Callable
    replies: list


class Plugin:
    """A plugin: its name, the actions it accepts and the frames it sends."""

    def __init__(self, name: str, version: str, description: Optional[str] = None, tags: tuple = ()):
        self.name, self.version, self.description, self.tags = name, version, description, list(tags)
        self._routes: dict = {}
        self._sends: list = []
        self._on_connect: Optional[Callable] = None
        self._on_disconnect: Optional[Callable] = None

    def sends(self, *messages: type) -> "Plugin":
        """Declares frames the plugin sends besides its handlers' replies."""
        self._sends.extend(m for m in messages if m not in self._sends)
        return self

    def on_connect(self, function: Callable) -> Callable:
        self._on_connect = function
        return function

    def on_disconnect(self, function: Callable) -> Callable:
        self._on_disconnect = function
        return function

    def handle(self, action: str) -> Callable:
        """Decorates `handler(ctx, payload: PayloadClass) -> Message | None` for `action`."""

        def register(function: Callable) -> Callable:
            hints = typing.get_type_hints(function)
            parameters = function.__code__.co_varnames[: function.__code__.co_argcount]
            payload = hints.get(parameters[1]) if len(parameters) > 1 else None
            reply = hints.get("return")
            replies = [reply] if isinstance(reply, type) and issubclass(reply, Message) else []
            self.sends(*replies)
            self._routes[action] = _Route(payload, function, replies)
            return function

        return register

    def _spec(self, name: str, payload: Any, doc: Optional[str]) -> types.ActionSpec:
        schema = None
        if payload is not None:
            schema = _dumps({"$schema": "http://json-schema.org/draft-07/schema#", **_schema(payload)})
        summary = (doc or "").strip().splitlines()[0] if doc else None
        return types.ActionSpec(name=name, summary=summary, description=None, payload_schema=schema)

    def manifest(self) -> types.PluginManifest:
        accepts = [self._spec(a, r.payload, r.handler.__doc__) for a, r in self._routes.items()]
        sends = [self._spec(m.action, m, m.__doc__) for m in self._sends]
        return types.PluginManifest(
            name=self.name,
            version=self.version,
            description=self.description,
            tags=self.tags,
            accepts=accepts,
            sends=sends,
        )

    def handler(self) -> type:
        """The class componentize-py exports: `Handler = plugin.handler()` in the app module."""
        plugin = self

        class Handler(exports.Handler):
            def manifest(self) -> types.PluginManifest:
                return plugin.manifest()

            def on_connect(self, ctx: types.Context) -> None:
                if plugin._on_connect is None:
                    return
                try:
                    plugin._on_connect(Context(ctx))
                except Reject as reject:
                    raise Err(types.Rejection(code=reject.code, reason=reject.reason))
                except (PluginError, Err) as error:
                    # As in the Rust SDK: a failure while accepting is an internal error (1011).
                    raise Err(types.Rejection(code=1011, reason=_reason(error)))

            def on_message(self, ctx: types.Context, action: str, payload: Optional[str]) -> Optional[str]:
                route = plugin._routes.get(action)
                if route is None:
                    raise Err(types.HandlerError_Failed(f"no handler for {action!r}"))
                value = None if payload is None else json.loads(payload)
                argument = _build(route.payload, value) if route.payload is not None else value
                try:
                    reply = route.handler(Context(ctx), argument)
                except (PluginError, Err) as error:
                    raise Err(types.HandlerError_Failed(_reason(error)))
                return None if reply is None else _frame(reply)

            def on_disconnect(self, ctx: types.Context) -> None:
                if plugin._on_disconnect is not None:
                    plugin._on_disconnect(Context(ctx))

        return Handler

    def describe(self) -> type:
        """The class componentize-py exports for the world `plugin`: `Describe = plugin.describe()`.

        It tells the broker which frames each handler answers with (from the return annotation),
        for the AsyncAPI document.
        """
        # Imported here: a build against the world `plugin-core` has no such export.
        from wit_world.exports import Describe as Exported
        from wit_world.exports import describe as wit

        plugin = self

        class Describe(Exported):
            def replies(self) -> list:
                return [
                    wit.HandlerReplies(action=action, replies=[m.action for m in route.replies])
                    for action, route in plugin._routes.items()
                    if route.replies
                ]

            def raw_frames(self) -> list:
                return []

        return Describe
