"""The room chat of the Chanx tutorial, in Python: the same frames as plugins/chat."""

from dataclasses import dataclass

from broker_plugin import Context, Message, Plugin, PluginError


@dataclass
class NewChatMessage(Message):
    """A chat message: sent by a member, relayed to every other member of the room."""

    action = "new_chat_message"
    message: str
    name: str


plugin = Plugin(
    "chat",
    "0.1.0",
    description="Room chat: messages reach every other member of the room",
    tags=("chat", "groups"),
).sends(NewChatMessage)


def room(ctx: Context) -> str:
    """The room of the route `/ws/chat/{room}`."""
    name = ctx.param("room")
    if name is None:
        raise PluginError("mount chat on a route with a {room} parameter")
    return name


@plugin.on_connect
def join(ctx: Context) -> None:
    """Joins the room; with the setting `rewind` (N), the newcomer first gets its last N messages."""
    rewind = int(ctx.settings().get("rewind", 0))
    if rewind > 0:
        ctx.rewind(room(ctx), rewind)
    ctx.join(room(ctx))


@plugin.handle("new_chat_message")
def relay(ctx: Context, message: NewChatMessage) -> None:
    """Relays the message to every other member of the room."""
    ctx.broadcast_to_others(room(ctx), message)


Handler = plugin.handler()
Describe = plugin.describe()
