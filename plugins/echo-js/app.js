// The system echo of the Chanx tutorial, in JavaScript: the same frames as plugins/echo.

import { Plugin, message, t } from '../../plugin-sdk/js/index.js';

/** A message from the user, to be echoed. */
const UserMessage = t.object({ message: t.string() });

const SystemEcho = message(
  'system_echo',
  { message: t.string() },
  'A message from the system: the welcome, or the echo of a user\'s message.',
);

const plugin = new Plugin({
  name: 'echo',
  version: '0.1.0',
  description: 'System Messages Consumer - Direct WebSocket without channel layers',
  tags: ['system', 'direct'],
});

plugin.onConnect((ctx) => ctx.send(SystemEcho({ message: '🔧 System: Connection established!' })));

plugin.handle(
  'user_message',
  { payload: UserMessage, replies: SystemEcho, summary: 'Echoes the message back to its sender.' },
  (_ctx, { message }) => SystemEcho({ message: `🔧 System Echo: ${message}` }),
);

export const { handler, describe } = plugin.exports();
