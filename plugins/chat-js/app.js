// The room chat of the Chanx tutorial, in JavaScript: the same frames as plugins/chat.

import { Plugin, PluginError, message, t } from '../../plugin-sdk/js/index.js';

const NewChatMessage = message(
  'new_chat_message',
  { message: t.string(), name: t.string() },
  'A chat message: sent by a member, relayed to every other member of the room.',
);

const plugin = new Plugin({
  name: 'chat',
  version: '0.1.0',
  description: 'Room chat: messages reach every other member of the room',
  tags: ['chat', 'groups'],
}).sends(NewChatMessage);

/** The room of the route `/ws/chat/{room}`. */
function room(ctx) {
  const name = ctx.param('room');
  if (name === null) throw new PluginError('mount chat on a route with a {room} parameter');
  return name;
}

// Joins the room; with the setting `rewind` (N), the newcomer first gets its last N messages.
plugin.onConnect((ctx) => {
  const rewind = Number(ctx.settings().rewind ?? 0);
  if (rewind > 0) ctx.rewind(room(ctx), rewind);
  ctx.join(room(ctx));
});

plugin.handle(
  'new_chat_message',
  { payload: NewChatMessage.payload, summary: 'Relays the message to every other member of the room.' },
  (ctx, payload) => {
    ctx.broadcastToOthers(room(ctx), NewChatMessage(payload));
  },
);

export const { handler, describe } = plugin.exports();
