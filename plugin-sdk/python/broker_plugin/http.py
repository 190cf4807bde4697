"""Outbound HTTP from a handler, over `wasi:http`.

    from broker_plugin import http

    response = http.get("https://api.example.com/v1/status", timeout_ms=2000)
    if response.ok:
        status = response.json()

The broker makes a request only to the hosts broker.toml lists in the plugin's `allow_hosts`;
any other host fails here, before a connection is opened, with `http.Denied`. A request that
gets no response (refused, timed out, a bad URL) raises `http.HttpError`; a response is returned
whatever its status. Both errors are `PluginError`s, with the words the Rust SDK uses, so a
handler that lets one through answers `plugin_error` as a Rust plugin's `?` does.

The calls block the handler, not the broker: while one waits on the network, the broker serves
other connections. `timeout_ms` bounds connecting, the first byte and each later byte; without it
the plugin's own `timeout_ms` in broker.toml bounds the whole call (`plugin_timeout`).

For requests made side by side, `request_async` is a coroutine and `run` runs coroutines on an
event loop over `wasi:io/poll` (the handler stays synchronous):

    first, second = http.run(http.request_async("GET", a), http.request_async("GET", b))

Needs the SDK's world (plugin-sdk/python/wit), which adds `wasi:http` to the broker's:
`componentize-py -d plugin-sdk/python/wit -w plugin componentize app ...`.
"""

import asyncio
import collections
import dataclasses
import heapq
import json
from typing import Any, Coroutine, Iterable, Optional, Union

from componentize_py_types import Err, Ok

from . import PluginError, _dumps, _plain

try:
    from wit_world.imports import monotonic_clock, outgoing_handler, poll, streams
    from wit_world.imports import wasi_http_types as wasi
except ImportError as missing:  # pragma: no cover - a build-time failure
    raise ImportError(
        "broker_plugin.http needs wasi:http: build against the SDK's world, "
        "`componentize-py -d <broker>/plugin-sdk/python/wit -w plugin componentize ...`"
    ) from missing

__all__ = [
    "Denied",
    "HttpError",
    "Response",
    "Timeout",
    "get",
    "post_json",
    "request",
    "request_async",
    "run",
]

Headers = Union[dict, Iterable]
"""Request headers: a dict of name to value, or (name, value) pairs (for a name given twice)."""


class HttpError(PluginError):
    """A request that got no response: the host refused or unreachable, a timeout, a bad URL.

    `url` is the request's; `code` the name of the `wasi:http` error code (`"ConnectionRefused"`,
    `"ConnectionTimeout"`, ...) when the host gave one."""

    def __init__(self, message: str, url: str, code: Optional[str] = None):
        super().__init__(message)
        self.url, self.code = url, code


class Denied(HttpError):
    """The host is not in the plugin's `allow_hosts`: nothing was sent."""


class Timeout(HttpError):
    """No connection, first byte or next byte within `timeout_ms`."""


_TIMEOUTS = {"ConnectionTimeout", "ConnectionReadTimeout", "ConnectionWriteTimeout", "HttpResponseTimeout"}


@dataclasses.dataclass
class Response:
    """A response: its status, headers (names in lower case; a repeated header's values joined
    with `, `) and whole body."""

    status: int
    headers: dict
    body: bytes

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body decoded from JSON; `PluginError` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError as error:
            raise PluginError(f"the response is not the JSON expected: {error}") from None


def request(
    method: str,
    url: str,
    headers: Optional[Headers] = None,
    body: Union[bytes, str, None] = None,
    timeout_ms: Optional[int] = None,
) -> Response:
    """Makes one request and returns the response, whatever its status.

    Raises `Denied` for a host off the allow-list, `Timeout` past `timeout_ms`, `HttpError` for
    any other failure to get a response."""
    pending, write_error = _send(method, url, headers, body, timeout_ms)
    with pending:
        with pending.subscribe() as ready:
            ready.block()
        return _receive(url, pending, write_error)


def get(url: str, headers: Optional[Headers] = None, timeout_ms: Optional[int] = None) -> Response:
    """GETs `url`."""
    return request("GET", url, headers, None, timeout_ms)


def post_json(url: str, value: Any, headers: Optional[Headers] = None, timeout_ms: Optional[int] = None) -> Response:
    """POSTs `value` as JSON (compact, UTF-8, as the other SDKs write it) to `url`."""
    pairs = [("content-type", "application/json"), *_pairs(headers)]
    return request("POST", url, pairs, _dumps(_plain(value)).encode(), timeout_ms)


async def request_async(
    method: str,
    url: str,
    headers: Optional[Headers] = None,
    body: Union[bytes, str, None] = None,
    timeout_ms: Optional[int] = None,
) -> Response:
    """`request` as a coroutine, for `run`: other coroutines run while it waits for the response."""
    pending, write_error = _send(method, url, headers, body, timeout_ms)
    with pending:
        with pending.subscribe() as ready:
            await _loop().wait(ready)
        return _receive(url, pending, write_error)


def run(*coroutines: Coroutine) -> Any:
    """Runs coroutines side by side until all are done, on an event loop over `wasi:io/poll`;
    returns the result of one, a list of results for several. The first exception is raised."""
    loop = _PollLoop()
    asyncio.set_event_loop(loop)
    try:
        if len(coroutines) == 1:
            return loop.run_until_complete(coroutines[0])
        return loop.run_until_complete(asyncio.gather(*coroutines))
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _pairs(headers: Optional[Headers]) -> list:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), str(value)) for name, value in items]


def _split(url: str) -> tuple:
    """`http://host:port/path?q` -> (scheme, "host:port", "/path?q"), as the Rust SDK splits it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise HttpError(f"{_debug(url)} is not an absolute URL", url)
    if scheme == "http":
        wasi_scheme: Any = wasi.Scheme_Http()
    elif scheme == "https":
        wasi_scheme = wasi.Scheme_Https()
    else:
        raise HttpError(f"unsupported scheme {_debug(scheme)}", url)
    slash = rest.find("/")
    if slash < 0:
        return wasi_scheme, rest, "/"
    return wasi_scheme, rest[:slash], rest[slash:]


_METHODS = {
    "GET": wasi.Method_Get,
    "HEAD": wasi.Method_Head,
    "POST": wasi.Method_Post,
    "PUT": wasi.Method_Put,
    "DELETE": wasi.Method_Delete,
    "PATCH": wasi.Method_Patch,
    "OPTIONS": wasi.Method_Options,
}


def _send(method: str, url: str, headers: Optional[Headers], body: Union[bytes, str, None], timeout_ms: Optional[int]):
    """Starts a request: the pending response, and why writing the body failed (or None)."""
    scheme, authority, path = _split(url)
    if isinstance(body, str):
        body = body.encode()
    try:
        fields = wasi.Fields.from_list([(name, value.encode()) for name, value in _pairs(headers)])
    except Err as error:
        raise HttpError(f"bad header: {_rust_debug(error.value)}", url) from None
    request = wasi.OutgoingRequest(fields)
    verb = method.upper()
    checks = [
        (request.set_method, _METHODS[verb]() if verb in _METHODS else wasi.Method_Other(method), "method"),
        (request.set_scheme, scheme, "scheme"),
        (request.set_authority, authority, "authority"),
        (request.set_path_with_query, path, "path"),
    ]
    for setter, value, what in checks:
        try:
            setter(value)
        except Err:
            raise HttpError(f"invalid {what} in {_debug(url)}", url) from None
    outgoing = request.body()
    options = None
    if timeout_ms is not None:
        options = wasi.RequestOptions()
        nanos = max(0, int(timeout_ms)) * 1_000_000
        for setter in (options.set_connect_timeout, options.set_first_byte_timeout, options.set_between_bytes_timeout):
            try:
                setter(nanos)
            except Err:
                pass  # a timeout the host does not support is not set, as in the Rust SDK
    try:
        pending = outgoing_handler.handle(request, options)
    except Err as error:
        outgoing.__exit__(None, None, None)
        raise _failure(url, error.value) from None
    # A request refused at once (a denied host) closes the body stream: the reason is then in the
    # response, so a failed write is reported only if the response has nothing better.
    write_error = None
    if body:
        with outgoing.write() as stream:
            for start in range(0, len(body), 4096):
                try:
                    stream.blocking_write_and_flush(body[start : start + 4096])
                except Err as error:
                    write_error = f"{url}: writing the body: {_rust_debug(error.value)}"
                    break
    try:
        wasi.OutgoingBody.finish(outgoing, None)
    except Err as error:
        write_error = write_error or f"{url}: {_rust_debug(error.value)}"
    return pending, write_error


def _receive(url: str, pending: Any, write_error: Optional[str]) -> Response:
    """The response of a request whose pending response is ready."""
    result = pending.get()
    if result is None or isinstance(result, Err):
        raise HttpError(write_error or f"{url}: no response", url)
    inner = result.value
    if isinstance(inner, Err):
        raise _failure(url, inner.value)
    if write_error is not None:
        raise HttpError(write_error, url)
    with inner.value as response:
        status = response.status()
        headers: dict = {}
        with response.headers() as fields:
            for name, value in fields.entries():
                name, text = name.lower(), value.decode("utf-8", errors="replace")
                headers[name] = f"{headers[name]}, {text}" if name in headers else text
        incoming = response.consume()
        try:
            body = _read_all(incoming)
        except _ReadError as error:
            raise HttpError(f"{url}: reading the body: {error}", url) from None
        finally:
            wasi.IncomingBody.finish(incoming).__exit__(None, None, None)
    return Response(status, headers, body)


class _ReadError(Exception):
    pass


def _read_all(incoming: Any) -> bytes:
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(64 * 1024))
            except Err as error:
                if isinstance(error.value, streams.StreamError_Closed):
                    return b"".join(chunks)
                raise _ReadError(error.value.value.to_debug_string()) from None


def _failure(url: str, code: Any) -> HttpError:
    """An `error-code` from the host as the exception that fits, worded as the Rust SDK words it."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    message = f"{url}: {_rust_debug(code)}"
    if name == "HttpRequestDenied":
        return Denied(message, url, name)
    if name in _TIMEOUTS:
        return Timeout(message, url, name)
    return HttpError(message, url, name)


def _debug(text: str) -> str:
    """A string as Rust's `{:?}` writes it."""
    escapes = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0"}
    out = []
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{{{ord(char):x}}}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _rust_debug(value: Any) -> str:
    """A `wasi:http` value as the Rust SDK's `{:?}` writes it (`ErrorCode::ConnectionRefused`,
    `ErrorCode::DnsError(DnsErrorPayload { rcode: Some("..."), info-code: None })`)."""
    if value is None:
        return "None"
    if isinstance(value, str):
        return _debug(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    kind = type(value).__name__
    if "_" in kind and dataclasses.is_dataclass(value):
        enum, _, case = kind.partition("_")
        fields = dataclasses.fields(value)
        name = f"{enum}::{case}"
        if not fields:
            return name
        inner = getattr(value, fields[0].name)
        return f"{name}({_option(inner)})" if not dataclasses.is_dataclass(inner) else f"{name}({_rust_debug(inner)})"
    if dataclasses.is_dataclass(value):
        parts = ", ".join(f"{f.name.replace('_', '-')}: {_option(getattr(value, f.name))}" for f in dataclasses.fields(value))
        return f"{kind} {{ {parts} }}"
    return kind


def _option(value: Any) -> str:
    """An `option<T>` field as Rust writes it."""
    return "None" if value is None else f"Some({_rust_debug(value)})"


class _PollLoop(asyncio.AbstractEventLoop):
    """An asyncio loop whose only sources of events are `wasi:io/poll` pollables and timers (over
    `wasi:clocks/monotonic-clock`): what `run` needs, and nothing that would need sockets."""

    def __init__(self) -> None:
        self._ready: collections.deque = collections.deque()
        self._waiting: list = []  # (pollable, future)
        self._timers: list = []  # heap of TimerHandle
        self._running = False
        self._closed = False

    async def wait(self, pollable: Any) -> None:
        """Waits until `pollable` is ready."""
        if pollable.ready():
            return
        future = self.create_future()
        self._waiting.append((pollable, future))
        await future

    def run_until_complete(self, future: Any) -> Any:
        task = asyncio.ensure_future(future, loop=self)
        self._running = True
        asyncio.events._set_running_loop(self)
        try:
            while not task.done():
                self._step()
            return task.result()
        finally:
            self._running = False
            asyncio.events._set_running_loop(None)

    def _step(self) -> None:
        now = self.time()
        while self._timers and (self._timers[0].cancelled() or self._timers[0].when() <= now):
            timer = heapq.heappop(self._timers)
            if not timer.cancelled():
                self._ready.append(timer)
        if self._ready:
            for _ in range(len(self._ready)):
                handle = self._ready.popleft()
                if not handle.cancelled():
                    handle._run()
            return
        self._waiting = [(p, f) for p, f in self._waiting if not f.done()]
        pollables = [p for p, _ in self._waiting]
        clock = None
        if self._timers:
            delay = max(0, int((self._timers[0].when() - now) * 1e9))
            clock = monotonic_clock.subscribe_duration(delay)
            pollables.append(clock)
        if not pollables:
            raise RuntimeError("the coroutines wait on nothing: they can never finish")
        ready = set(poll.poll(pollables))
        if clock is not None:
            clock.__exit__(None, None, None)
        still = []
        for index, (pollable, future) in enumerate(self._waiting):
            if index in ready:
                future.set_result(None)
            else:
                still.append((pollable, future))
        self._waiting = still

    def time(self) -> float:
        return monotonic_clock.now() / 1e9

    def call_soon(self, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context)
        heapq.heappush(self._timers, handle)
        return handle

    def call_later(self, delay: float, callback: Any, *args: Any, context: Any = None) -> asyncio.TimerHandle:
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def _timer_handle_cancelled(self, handle: Any) -> None:
        pass  # skipped when it comes up

    def create_future(self) -> asyncio.Future:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: Any = None, context: Any = None) -> asyncio.Task:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True

    def call_exception_handler(self, context: dict) -> None:
        pass  # an unretrieved task exception: `run` raises the first one already

    def default_exception_handler(self, context: dict) -> None:
        pass


def _loop() -> _PollLoop:
    loop = asyncio.get_running_loop()
    if not isinstance(loop, _PollLoop):
        raise RuntimeError("request_async runs under broker_plugin.http.run")
    return loop
