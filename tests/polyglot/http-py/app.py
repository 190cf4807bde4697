"""Outbound HTTP from Python (broker_plugin.http), for tests/all/http.rs: each action makes the
request its payload describes and answers what came back, or the exception it raised."""

import asyncio
from dataclasses import dataclass
from typing import Any, Optional

from broker_plugin import Context, Plugin, http


@dataclass
class Fetch:
    url: str
    method: str = "GET"
    headers: Optional[dict[str, str]] = None
    body: Optional[str] = None
    timeout_ms: Optional[int] = None


@dataclass
class Urls:
    urls: list[str]


plugin = Plugin("http-py", "0.1.0", description="Outbound HTTP from Python, for the tests")


def answered(response: http.Response) -> dict:
    return {"status": response.status, "headers": response.headers, "body": response.text()}


@plugin.handle("fetch")
def fetch(ctx: Context, payload: Fetch) -> Any:
    """Makes the request; an exception goes through (plugin_error)."""
    response = http.request(payload.method, payload.url, payload.headers, payload.body, payload.timeout_ms)
    return {"action": "fetched", "payload": answered(response)}


@plugin.handle("fetch_caught")
def fetch_caught(ctx: Context, payload: Fetch) -> Any:
    """Makes the request and answers the exception it raised, by class."""
    try:
        response = http.request(payload.method, payload.url, payload.headers, payload.body, payload.timeout_ms)
    except http.HttpError as error:
        kinds = [k.__name__ for k in (http.Denied, http.Timeout, http.HttpError) if isinstance(error, k)]
        return {"action": "failed", "payload": {"kinds": kinds, "code": error.code, "message": str(error)}}
    return {"action": "fetched", "payload": answered(response)}


@plugin.handle("post_json")
def post_json(ctx: Context, payload: Fetch) -> Any:
    """POSTs `{"hello": "wörld"}` and answers the response decoded from JSON."""
    response = http.post_json(payload.url, {"hello": "wörld"}, payload.headers, payload.timeout_ms)
    return {"action": "posted", "payload": {"status": response.status, "json": response.json()}}


@plugin.handle("fetch_all")
def fetch_all(ctx: Context, payload: Urls) -> Any:
    """GETs every URL side by side (asyncio) and answers the bodies in order."""
    responses = http.run(*(http.request_async("GET", url) for url in payload.urls))
    if len(payload.urls) == 1:
        responses = [responses]
    return {"action": "fetched_all", "payload": [r.text() for r in responses]}


@dataclass
class Within:
    url: str
    seconds: float


@plugin.handle("fetch_within")
def fetch_within(ctx: Context, payload: Within) -> Any:
    """GETs the URL under asyncio.wait_for, and sleeps a little beside it (the loop's timers)."""

    async def bounded() -> str:
        try:
            response = await asyncio.wait_for(http.request_async("GET", payload.url), payload.seconds)
        except asyncio.TimeoutError:
            return "timed out"
        return response.text()

    async def nap() -> str:
        await asyncio.sleep(0.05)
        return "slept"

    return {"action": "fetched_within", "payload": http.run(bounded(), nap())}


Handler = plugin.handler()
Describe = plugin.describe()
