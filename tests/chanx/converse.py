"""Talks to a broker through the client `chanx generate-client` generated from the broker's own
/asyncapi.json: typed messages out, typed messages in, on the echo and the chat routes.

Usage (the venv of `cargo xtask test`): python converse.py HOST:PORT PACKAGE_PARENT
Prints one line per step; exits non-zero on the first surprise.
"""

import asyncio
import sys

sys.path.insert(0, sys.argv[2])

from broker_client.chat import ChatClient, NewChatMessage, NewChatMessagePayload  # noqa: E402
from broker_client.shared.messages import ErrorMessage, PingMessage, PongMessage  # noqa: E402
from broker_client.system import SystemClient, SystemEchoMessage, UserMessage, UserMessagePayload  # noqa: E402

WAIT = 10


class Collecting:
    """A generated client whose frames land in a queue, validated by the generated models."""

    def __init__(self, client):
        self.client = client
        self.frames: asyncio.Queue = asyncio.Queue()
        client.handle_message = self.frames.put
        client.handle_invalid_message = self.invalid
        self.task = asyncio.create_task(client.handle())

    async def invalid(self, frame):
        raise SystemExit(f"a frame the generated models refuse: {frame}")

    async def next(self):
        return await asyncio.wait_for(self.frames.get(), WAIT)

    async def send(self, message):
        await self.client.send_message(message)

    async def connected(self):
        for _ in range(200):
            if getattr(self.client, "websocket", None) is not None:
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"no connection to {self.client.url}")

    async def quiet(self):
        try:
            frame = await asyncio.wait_for(self.frames.get(), 0.5)
        except asyncio.TimeoutError:
            return
        raise SystemExit(f"expected nothing, got {frame!r}")

    async def close(self):
        await self.client.disconnect()
        await asyncio.wait_for(self.task, WAIT)


def expect(frame, kind):
    if not isinstance(frame, kind):
        raise SystemExit(f"expected {kind.__name__}, got {frame!r}")
    return frame


async def main(base: str) -> None:
    echo = Collecting(SystemClient(base))
    await echo.connected()
    welcome = expect(await echo.next(), SystemEchoMessage)
    print(f"welcome: {welcome.payload.message}")
    await echo.send(UserMessage(payload=UserMessagePayload(message="typed hello")))
    print(f"echo: {expect(await echo.next(), SystemEchoMessage).payload.message}")
    await echo.send(UserMessage(payload=UserMessagePayload(message="with ref"), ref="r1"))
    answer = expect(await echo.next(), SystemEchoMessage)
    print(f"ref: {answer.ref} {answer.payload.message}")
    await echo.send(PingMessage())
    print(f"ping: {expect(await echo.next(), PongMessage).action}")
    # A payload the model forbids, forced through: the broker refuses it as pydantic would.
    await echo.client.send_json({"action": "user_message", "payload": None})
    refused = expect(await echo.next(), ErrorMessage)
    print("refused: " + ", ".join(f"{p['type']} at {'.'.join(map(str, p['loc']))}: {p['msg']}" for p in refused.payload))
    await echo.close()

    alice = Collecting(ChatClient(base, path_params={"room": "generated"}))
    bob = Collecting(ChatClient(base, path_params={"room": "generated"}))
    for member in (alice, bob):
        await member.connected()
        # Frames of a connection are handled in order: once ping is answered, it has joined.
        await member.send(PingMessage())
        expect(await member.next(), PongMessage)
    await alice.send(NewChatMessage(payload=NewChatMessagePayload(message="hi bob", name="alice")))
    heard = expect(await bob.next(), NewChatMessage)
    print(f"chat: {heard.payload.name}: {heard.payload.message}")
    await alice.quiet()
    print("sender excluded")
    await bob.send(NewChatMessage(payload=NewChatMessagePayload(message="hi alice", name="bob")))
    heard = expect(await alice.next(), NewChatMessage)
    print(f"chat: {heard.payload.name}: {heard.payload.message}")
    for member in (alice, bob):
        await member.close()
    print("done")


asyncio.run(main(sys.argv[1]))
