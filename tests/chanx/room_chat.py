"""The room chat of Chanx's tutorial (seed 001, "Part 2: Chat WebSocket"), as the tutorial writes it
(`chat/messages.py`, `chat/consumers/chat_consumer.py`, the route `ws/chat/<group_name>/`), served by
FastAPI instead of Django: Chanx runs the same consumer on both. The adaptations, and only these:
- the consumer extends `chanx.fast_channels.websocket.AsyncJsonWebsocketConsumer` (fast-channels)
  instead of `chanx.channels.websocket.AsyncJsonWebsocketConsumer` (Django Channels), with an
  in-memory channel layer registered under `channel_layer_alias`, as Channels' settings would;
- the group name is read with `self.url_params` (Starlette's `path_params`) instead of Django's
  `self.scope["url_route"]["kwargs"]`;
- the route is Starlette's `/ws/chat/{group_name}/` instead of Django's `path("<str:group_name>/")`.

Run: `uvicorn room_chat:app --port PORT` (from this folder, in the venv of `cargo xtask test`).
"""

from typing import Literal

from chanx.core.decorators import ws_handler
from chanx.fast_channels.views import asyncapi_spec_json
from chanx.fast_channels.websocket import AsyncJsonWebsocketConsumer
from chanx.messages.base import BaseMessage
from chanx.messages.incoming import PingMessage
from chanx.messages.outgoing import PongMessage
from fast_channels.layers import register_channel_layer
from fast_channels.layers.in_memory import InMemoryChannelLayer
from fastapi import FastAPI, Request
from pydantic import BaseModel

register_channel_layer("chat", InMemoryChannelLayer())


# chat/messages.py
class ChatMessagePayload(BaseModel):
    message: str
    name: str


class NewChatMessage(BaseMessage):
    action: Literal["new_chat_message"] = "new_chat_message"
    payload: ChatMessagePayload


# chat/consumers/chat_consumer.py
class ChatConsumer(AsyncJsonWebsocketConsumer):
    channel_layer_alias = "chat"

    async def post_authentication(self) -> None:
        assert self.channel_layer
        self.group_name = self.url_params["group_name"]
        self.groups.append(self.group_name)
        await self.channel_layer.group_add(self.group_name, self.channel_name)

    @ws_handler
    async def handle_ping(self, _message: PingMessage) -> PongMessage:
        return PongMessage()

    @ws_handler(output_type=NewChatMessage)
    async def handle_new_chat_message(self, message: NewChatMessage) -> None:
        await self.broadcast_message(message, exclude_current=True)


# chat/routing.py and config/routing.py: /ws/chat/<group_name>/
app = FastAPI()
app.add_websocket_route("/ws/chat/{group_name}/", ChatConsumer.as_asgi())


@app.get("/asyncapi.json")
async def asyncapi_json(request: Request):
    return await asyncapi_spec_json(request=request, app=app)
