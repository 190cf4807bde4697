"""The Python side of plugin-sdk: typed handlers over the `broker:plugin` WIT world.

Build a plugin with componentize-py against the SDK's world `plugin` (plugin-sdk/python/wit: the
broker's world `plugin` and `wasi:http`, for `broker_plugin.http`):

    componentize-py -d plugin-sdk/python/wit -w plugin componentize app \\
        -p plugin-sdk/python -p . -o my_plugin.wasm

where `app.py` defines `Handler = plugin.handler()` and `Describe = plugin.describe()` (the
world `plugin-core` needs only `Handler`). See plugins/echo-py and plugins/chat-py. The broker's
own world (`-d plugin-sdk/wit -w plugin`) builds too, without `broker_plugin.http`.

Payloads and frames are dataclasses. Each handler's payload class becomes the JSON Schema the
broker checks payloads against before the handler runs, so a Python plugin refuses bad input with
the same error frames as a Rust one.

The same words mean the same things as in the Rust and JavaScript SDKs: `kv.get`/`kv.set` and
`ctx.session_get`/`ctx.session_set` take and give text as stored, `*_json` encode and decode JSON
over them; a failed host call raises `PluginError` with the words the other SDKs use; and an
ordinary exception in a handler answers `plugin_error`, as `?` does in Rust.
"""

import dataclasses
import enum
import json
import logging
import types as pytypes
import typing
from typing import Any, Callable, ClassVar, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import groups, host, identity, kv as host_kv, session
from wit_world.imports import history as host_history

try:
    from wit_world.imports import types
except ImportError:
    # The SDK's world (plugin-sdk/python/wit) adds wasi:http, whose `types` interface makes
    # componentize-py qualify both names.
    from wit_world.imports import broker_plugin_types as types

__all__ = [
    "Context",
    "HistoryEntry",
    "HistoryPage",
    "HostLogHandler",
    "Message",
    "Plugin",
    "PluginError",
    "Reject",
    "history",
    "kv",
    "log",
    "members",
    "send_to",
]


# The same bytes serde_json writes: compact, UTF-8 as is. One encoder for every frame: `json.dumps`
# with these options would build a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


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


# Values JSON takes as they are (exactly these types: an Enum of str is not one).
_ATOMS = frozenset((str, int, float, bool, type(None)))
# The field names of each dataclass `_plain` has met, so a frame does not walk `dataclasses.fields`.
_FIELDS: dict = {}


def _plain(value: Any) -> Any:
    if type(value) in _ATOMS:
        return value
    names = _FIELDS.get(type(value))
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[type(value)] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: _plain(getattr(value, name)) for name in names}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _frame(message: Any) -> str:
    if isinstance(message, Message):
        return _dumps(message.frame())
    return _dumps(_plain(message))


_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(value: Any) -> Optional[str]:
    """The JSON type of a literal value, as schemars names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _values_schema(values: list, where: Any) -> dict:
    """`enum` of literal values, typed when they share a JSON type: what schemars writes for a Rust
    enum of unit variants (one value included, so `Literal["x"]` is refused as `enum`, as Rust's
    one-variant enum is)."""
    kinds = {_json_type(v) for v in values}
    if None in kinds:
        raise TypeError(f"{where!r}: only str, int, float, bool and None values have a JSON Schema")
    schema: dict = {}
    if len(kinds) == 1:
        schema["type"] = kinds.pop()
    schema["enum"] = list(values)
    return schema


def _schema(annotation: Any) -> dict:
    """The JSON Schema (draft-07) of a type annotation, as schemars writes it for the Rust type.

    A type without a schema raises `TypeError` when the handler is registered, so the build fails
    instead of publishing a schema that lets anything through.
    """
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if annotation is Any:
        # serde_json::Value: any JSON value.
        return {}
    if annotation is type(None) or annotation is None:
        return {"type": "null"}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, pytypes.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{annotation!r}: a union other than Optional[...] has no payload schema")
        inner = _schema(rest[0])
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return {"anyOf": [inner, {"type": "null"}]}
    if origin is list or annotation is list:
        return {"type": "array", "items": _schema(args[0]) if args else {}}
    if origin is dict or annotation is dict:
        # A HashMap<String, V>: an object whose every property is a V.
        if args and args[0] is not str:
            raise TypeError(f"{annotation!r}: JSON object keys are strings, use dict[str, ...]")
        return {"type": "object", "additionalProperties": _schema(args[1]) if args else {}}
    if origin is typing.Literal:
        return _values_schema(list(args), annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        schema = _values_schema([member.value for member in annotation], annotation)
        doc = annotation.__doc__
        if doc and doc != enum.Enum.__doc__ and not doc.startswith("An enumeration."):
            schema = {"description": doc.strip(), **schema}
        return schema
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
    raise TypeError(
        f"{annotation!r} has no payload schema: use str, int, float, bool, Any, Optional, list, "
        "dict[str, ...], Literal, an Enum or a dataclass of them"
    )


def _keep(value: Any) -> Any:
    return value


def _builder(cls: Any) -> Callable[[Any], Any]:
    """What makes a checked payload (the broker validated it against `_schema(cls)` already) a
    `cls`. Made once per handler, so no message looks its type hints up again."""
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        fields = {f.name: _builder(hints[f.name]) for f in dataclasses.fields(cls)}
        if all(build is _keep for build in fields.values()):
            names = fields.keys()

            def plain_fields(value: Any) -> Any:
                if not isinstance(value, dict):
                    return value
                if value.keys() <= names:
                    return cls(**value)
                return cls(**{k: v for k, v in value.items() if k in names})

            return plain_fields

        def typed_fields(value: Any) -> Any:
            if not isinstance(value, dict):
                return value
            return cls(**{k: fields[k](v) for k, v in value.items() if k in fields})

        return typed_fields
    if isinstance(cls, type) and issubclass(cls, enum.Enum):
        return cls
    origin, args = typing.get_origin(cls), typing.get_args(cls)
    if origin is list and args:
        item = _builder(args[0])
        if item is _keep:
            return _keep
        return lambda value: [item(v) for v in value] if isinstance(value, list) else value
    if origin is dict and len(args) == 2:
        item = _builder(args[1])
        if item is _keep:
            return _keep
        return lambda value: {k: item(v) for k, v in value.items()} if isinstance(value, dict) else value
    if origin in (typing.Union, pytypes.UnionType):
        inner = _builder(next(a for a in args if a is not type(None)))
        if inner is _keep:
            return _keep
        return lambda value: None if value is None else inner(value)
    return _keep


def _host_error(error: Any, connection: Optional[int] = None) -> "PluginError":
    """A failed host call (`Err(variant)`) as a `PluginError` with the words every SDK uses."""
    value = error.value if isinstance(error, Err) else error
    kind = type(value).__name__
    text = getattr(value, "value", None)
    if kind == "SendError_Closed":
        return PluginError(f"connection {connection} is closed" if connection is not None else "the connection is closed")
    if kind == "SendError_InvalidFrame":
        return PluginError(f"invalid frame: {text}")
    if kind == "GroupError_InvalidName":
        return PluginError("a group name is 1 to 256 bytes")
    if isinstance(text, str):
        return PluginError(text)
    if kind.endswith("_Closed"):
        return PluginError("the connection is closed")
    return PluginError(kind)


def _host(call: Callable, *args: Any, connection: Optional[int] = None) -> Any:
    """Makes a host call, raising what it refuses as a `PluginError`."""
    try:
        return call(*args)
    except Err as error:
        raise _host_error(error, connection) from None


def _decode(key: str, text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise PluginError(f"state {key!r} does not decode: {error}") from None


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
        """Adds this connection to a group of this plugin's namespace."""
        _host(groups.join, self.connection, group)

    def rewind(self, group: str, count: int) -> None:
        """Makes this connection's next `join` to `group` first replay the group's last `count`
        frames, as Ably's rewind does (see `history.rewind`)."""
        history.rewind(self.connection, group, count)

    def leave(self, group: str) -> None:
        """Removes this connection from a group."""
        groups.leave(self.connection, group)

    def broadcast(self, group: str, message: Any) -> int:
        """Sends to every member of `group`, this connection included; returns how many it reached."""
        return _host(groups.broadcast, group, _frame(message), None)

    def broadcast_to_others(self, group: str, message: Any) -> int:
        """Sends to every member of `group` but this connection; returns how many it reached."""
        return _host(groups.broadcast, group, _frame(message), self.connection)

    def close(self, code: int, reason: str) -> None:
        """Closes this connection with a WebSocket close code and reason, after what is queued."""
        host.close(self.connection, code, reason)

    def session_get(self, key: str) -> Optional[str]:
        """A value of this connection's session as stored: the text `session_set` was given."""
        return session.get(self.connection, key)

    def session_set(self, key: str, value: str) -> None:
        """Sets a value of this connection's session as it is; it is gone when the connection closes."""
        _host(session.set, self.connection, key, value)

    def session_get_json(self, key: str) -> Any:
        """A value of this connection's session, decoded from JSON (None when absent)."""
        return _decode(key, self.session_get(key))

    def session_set_json(self, key: str, value: Any) -> None:
        """Sets a value of this connection's session as JSON text."""
        self.session_set(key, _dumps(_plain(value)))

    def session_delete(self, key: str) -> None:
        """Deletes a value of this connection's session."""
        session.delete(self.connection, key)

    def claims(self) -> Optional[dict]:
        """The claims of the connection's token that broker.toml hands to plugins, or None."""
        text = identity.claims(self.connection)
        return None if text is None else json.loads(text)

    def settings(self) -> Any:
        """The plugin's `settings` table from broker.toml."""
        return json.loads(host.settings())

    def log(self, level: str, message: str) -> None:
        """Writes a line to the broker's log at `level` (`trace`, `debug`, `info`, `warn`, `error`)."""
        getattr(log, level)(message)


def send_to(connection: int, message: Any) -> None:
    """Queues a frame for any connection (of any node of a cluster)."""
    _host(host.send, connection, _frame(message), connection=connection)


def members(group: str) -> list:
    """The members of a group of this plugin's namespace: connection ids."""
    return groups.members(group)


class _Kv:
    """The plugin's key-value store, kept by the host across calls, instances and reloads, and
    shared by the plugins of its namespace whatever their language."""

    @staticmethod
    def get(key: str) -> Optional[str]:
        """A value as stored: the text `set` was given (None when absent)."""
        return _host(host_kv.get, key)

    @staticmethod
    def set(key: str, value: str, ttl_ms: Optional[int] = None) -> None:
        """Stores `value` as it is, expiring after `ttl_ms` milliseconds if given."""
        _host(host_kv.set, key, value, ttl_ms)

    @staticmethod
    def get_json(key: str) -> Any:
        """A value decoded from JSON (None when absent)."""
        return _decode(key, _Kv.get(key))

    @staticmethod
    def set_json(key: str, value: Any, ttl_ms: Optional[int] = None) -> None:
        """Stores a value as JSON text, expiring after `ttl_ms` milliseconds if given."""
        _Kv.set(key, _dumps(_plain(value)), ttl_ms)

    @staticmethod
    def delete(key: str) -> bool:
        """Deletes a key; True when it existed."""
        return _host(host_kv.delete, key)

    @staticmethod
    def compare_and_swap(key: str, expected: Optional[str], new: Optional[str], ttl_ms: Optional[int] = None) -> bool:
        """Sets `key` to `new` (None deletes it) only if its text is `expected` (None: absent)."""
        return _host(host_kv.compare_and_swap, key, expected, new, ttl_ms)


kv = _Kv()


@dataclasses.dataclass
class HistoryEntry:
    """One frame of a group's history: its offset, and the frame (JSON text) exactly as members
    received it, with its `group`, `offset` and `epoch` keys."""

    offset: int
    frame: str


@dataclasses.dataclass
class HistoryPage:
    """Frames of a group's history, oldest first, with the stream's epoch and last offset."""

    epoch: str
    offset: int
    entries: list


class _History:
    """The recent frames of the groups of the plugin's namespace, when broker.toml keeps them
    (`[plugins.<name>.history]`)."""

    @staticmethod
    def read(group: str, after: Optional[int] = None, limit: int = 100) -> HistoryPage:
        """The frames of `group` after offset `after` (None: the newest `limit`), oldest first, at
        most `limit` (and at most 1000) of those still kept. Raises `PluginError` when the
        namespace keeps no history."""
        page = _host(host_history.read, group, after, limit)
        entries = [HistoryEntry(entry.offset, entry.frame) for entry in page.entries]
        return HistoryPage(page.epoch, page.offset, entries)

    @staticmethod
    def rewind(connection: int, group: str, count: int) -> None:
        """Makes `connection`'s next join to `group` first replay the group's last `count` frames
        (as many as are kept), as a recovery does; nothing when the client named its own
        position in the group, or the namespace keeps no history."""
        host_history.rewind(connection, group, count)


history = _History()


class _Log:
    """Writes to the broker's log, tagged with the plugin's name: `log.info("...")`."""

    @staticmethod
    def trace(message: Any) -> None:
        host.log(types.Level.TRACE, str(message))

    @staticmethod
    def debug(message: Any) -> None:
        host.log(types.Level.DEBUG, str(message))

    @staticmethod
    def info(message: Any) -> None:
        host.log(types.Level.INFO, str(message))

    @staticmethod
    def warn(message: Any) -> None:
        host.log(types.Level.WARN, str(message))

    @staticmethod
    def error(message: Any) -> None:
        host.log(types.Level.ERROR, str(message))


log = _Log()


class HostLogHandler(logging.Handler):
    """A `logging` handler writing to the broker's log; installed on the root logger, so
    `logging.getLogger(__name__).info(...)` reaches the broker (which filters by level itself)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if record.levelno >= logging.ERROR:
                level = types.Level.ERROR
            elif record.levelno >= logging.WARNING:
                level = types.Level.WARN
            elif record.levelno >= logging.INFO:
                level = types.Level.INFO
            elif record.levelno >= logging.DEBUG:
                level = types.Level.DEBUG
            else:
                level = types.Level.TRACE
            host.log(level, text)
        except Exception:
            self.handleError(record)


def _install_logging() -> None:
    root = logging.getLogger()
    if not any(isinstance(h, HostLogHandler) for h in root.handlers):
        handler = HostLogHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root.addHandler(handler)
    # The broker's own filter (RUST_LOG) decides what is written.
    root.setLevel(logging.DEBUG)


_install_logging()


def _reason(error: BaseException) -> str:
    """The message of a plugin error, or of a host call's error (`Err(variant)`)."""
    if isinstance(error, Err):
        return str(_host_error(error))
    return str(error)


def _failure(error: Exception) -> str:
    """The `plugin_error` message of an ordinary exception: its type and text, as Python prints them."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@dataclasses.dataclass
class _Route:
    payload: Any
    schema: Optional[dict]
    handler: Callable
    replies: list
    # The payload's `_builder`.
    build: Callable[[Any], Any]


@dataclasses.dataclass
class _Raw:
    name: str
    schema: dict
    doc: Optional[str]


class Plugin:
    """A plugin: its name, the actions it accepts and the frames it sends."""

    def __init__(self, name: str, version: str, description: Optional[str] = None, tags: tuple = ()):
        self.name, self.version, self.description, self.tags = name, version, description, list(tags)
        self._routes: dict = {}
        self._sends: list = []
        self._raw: list = []
        self._on_connect: Optional[Callable] = None
        self._on_disconnect: Optional[Callable] = None

    def sends(self, *messages: type) -> "Plugin":
        """Declares frames the plugin sends besides its handlers' replies."""
        for m in messages:
            _schema(m)  # a type without a schema fails the build here
            if m not in self._sends:
                self._sends.append(m)
        return self

    def sends_raw(self, name: str, frame: type) -> "Plugin":
        """Declares a kind of frame sent as it is, outside the `{"action", "payload"}` envelope;
        `frame` (a dataclass) is the whole frame, and `name` labels it in the AsyncAPI document."""
        self._raw = [r for r in self._raw if r.name != name]
        self._raw.append(_Raw(name, _schema(frame), frame.__doc__))
        return self

    def on_connect(self, function: Callable) -> Callable:
        """Decorates `on_connect(ctx)`; raising `Reject(code, reason)` refuses the client."""
        self._on_connect = function
        return function

    def on_disconnect(self, function: Callable) -> Callable:
        """Decorates `on_disconnect(ctx)`, called once the connection has closed."""
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
            # Computed now, so a payload type without a schema fails the build.
            schema = None if payload is None else _schema(payload)
            build = _keep if payload is None else _builder(payload)
            self._routes[action] = _Route(payload, schema, function, replies, build)
            return function

        return register

    def _spec(self, name: str, schema: Optional[dict], doc: Optional[str]) -> types.ActionSpec:
        text = None
        if schema is not None:
            text = _dumps({"$schema": "http://json-schema.org/draft-07/schema#", **schema})
        summary = (doc or "").strip().splitlines()[0] if doc else None
        return types.ActionSpec(name=name, summary=summary, description=None, payload_schema=text)

    def manifest(self) -> types.PluginManifest:
        """What the broker asks once per load: the plugin, what it accepts and what it sends."""
        accepts = [self._spec(a, r.schema, r.handler.__doc__) for a, r in self._routes.items()]
        sends = [self._spec(m.action, _schema(m), m.__doc__) for m in self._sends]
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
                except Exception as error:
                    raise Err(types.Rejection(code=1011, reason=_failure(error)))

            def on_message(self, ctx: types.Context, action: str, payload: Optional[str]) -> Optional[str]:
                route = plugin._routes.get(action)
                if route is None:
                    raise Err(types.HandlerError_Failed(f"no handler for {action!r}"))
                try:
                    value = None if payload is None else json.loads(payload)
                    reply = route.handler(Context(ctx), route.build(value))
                    return None if reply is None else _frame(reply)
                except (PluginError, Err) as error:
                    raise Err(types.HandlerError_Failed(_reason(error)))
                except Exception as error:
                    # As `?` in Rust: an ordinary error answers `plugin_error`, and the instance
                    # keeps serving. Only a real trap is a crash.
                    raise Err(types.HandlerError_Failed(_failure(error)))

            def on_disconnect(self, ctx: types.Context) -> None:
                if plugin._on_disconnect is None:
                    return
                try:
                    plugin._on_disconnect(Context(ctx))
                except Exception as error:
                    # Nobody is left to answer: the log says what went wrong.
                    log.error(f"on_disconnect failed: {_reason(error) if isinstance(error, (PluginError, Err)) else _failure(error)}")

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
                return [plugin._spec(r.name, r.schema, r.doc) for r in plugin._raw]

        return Describe
