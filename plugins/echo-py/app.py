"""The system echo of the Chanx tutorial, in Python: the same frames as plugins/echo."""

from dataclasses import dataclass

from broker_plugin import Context, Message, Plugin


@dataclass
class UserMessage:
    """A message from the user, to be echoed."""

    message: str


@dataclass
class SystemEcho(Message):
    """A message from the system: the welcome, or the echo of a user's message."""

    action = "system_echo"
    message: str


plugin = Plugin(
    "echo",
    "0.1.0",
    description="System Messages Consumer - Direct WebSocket without channel layers",
    tags=("system", "direct"),
)


@plugin.on_connect
def welcome(ctx: Context) -> None:
    ctx.send(SystemEcho("🔧 System: Connection established!"))


@plugin.handle("user_message")
def echo(ctx: Context, payload: UserMessage) -> SystemEcho:
    """Echoes the message back to its sender."""
    return SystemEcho(f"🔧 System Echo: {payload.message}")


Handler = plugin.handler()
Describe = plugin.describe()
