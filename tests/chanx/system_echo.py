"""The FastAPI system echo of Chanx's tutorial (seed 002, "Part 1: Simple System Echo WebSocket"),
as the tutorial writes it: `src/apps/system_chat/messages.py` and `consumer.py`, `src/base_consumer.py`
and the route of `src/main.py`, in one file so the differential test can run it with uvicorn.

Run: `uvicorn system_echo:app --port PORT` (from this folder, in the venv of `cargo xtask test`).
"""

from typing import Literal

from chanx.core.decorators import channel, ws_handler
from chanx.fast_channels.views import asyncapi_spec_json
from chanx.fast_channels.websocket import AsyncJsonWebsocketConsumer
from chanx.messages.base import BaseMessage
from chanx.messages.incoming import PingMessage
from chanx.messages.outgoing import PongMessage
from fastapi import FastAPI, Request
from pydantic import BaseModel


# src/base_consumer.py (the tutorial's checkout): the project's consumer defaults.
class BaseConsumer(AsyncJsonWebsocketConsumer):
    send_completion = False
    log_websocket_message = False
    camelize = False
    channel_layer_alias = "chat"


# src/apps/system_chat/messages.py
class MessagePayload(BaseModel):
    message: str


class UserMessage(BaseMessage):
    """System message for direct communication."""

    action: Literal["user_message"] = "user_message"
    payload: MessagePayload


class SystemEchoMessage(BaseMessage):
    """System echo response message."""

    action: Literal["system_echo"] = "system_echo"
    payload: MessagePayload


# src/apps/system_chat/consumer.py
@channel(
    name="system",
    description="System Messages Consumer - Direct WebSocket without channel layers",
    tags=["system", "direct"],
)
class SystemMessageConsumer(BaseConsumer):
    """
    Consumer for system messages without using channel layers.
    Direct connection without group messaging.
    """

    @ws_handler(
        summary="Handle ping requests",
        description="Simple ping-pong for connectivity testing",
    )
    async def handle_ping(self, _message: PingMessage) -> PongMessage:
        return PongMessage()

    @ws_handler(
        summary="Handle message user send to system",
        description="Echo system messages back directly without using channel layers",
    )
    async def handle_system(self, message: UserMessage) -> SystemEchoMessage:
        """Handle system messages and echo them back directly."""
        return SystemEchoMessage(
            payload=MessagePayload(message=f"🔧 System Echo: {message.payload.message}")
        )

    async def post_authentication(self) -> None:
        """Send connection established message directly to client."""
        await self.send_message(
            SystemEchoMessage(
                payload=MessagePayload(message="🔧 System: Connection established!")
            )
        )


# src/main.py: the WebSocket routes under /ws, and the AsyncAPI document.
app = FastAPI()
ws_router = FastAPI()
ws_router.add_websocket_route("/system", SystemMessageConsumer.as_asgi())  # Direct WebSocket (no layers)
app.mount("/ws", ws_router)


@app.get("/asyncapi.json")
async def asyncapi_json(request: Request):
    return await asyncapi_spec_json(request=request, app=app)
