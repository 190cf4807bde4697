// Talks to a running broker through the client `broker client --lang typescript` generated
// (./broker.ts, written next to this file by the test). Usage: node talk.js ws://HOST:PORT
import {
  connectWsAssistant,
  connectWsChatRoom,
  connectWsSystem,
  type UserMessagePayload,
  type WsAssistantServerFrame,
  type WsChatRoomServerFrame,
  type WsSystemServerFrame,
} from "./broker.js";

const base = process.argv[2];

function fail(message: string): never {
  console.error(message);
  process.exit(1);
}

const echo = connectWsSystem(base, {});
const welcome = new Promise<WsSystemServerFrame>((resolve) => echo.onFrame(resolve));
await echo.opened;
const greeting = await welcome;
if (greeting.action !== "system_echo") fail(`expected the welcome, got ${JSON.stringify(greeting)}`);
console.log(`welcome: ${greeting.payload.message}`);

const reply = await echo.request({ action: "user_message", payload: { message: "typed hello" } });
if (reply.action !== "system_echo") fail(`expected system_echo, got ${JSON.stringify(reply)}`);
// `reply.payload` is typed by the narrowing above: a typo in `message` would not compile.
console.log(`echo: ${reply.payload.message}`);

const pong = await echo.request({ action: "ping" });
console.log(`ping: ${pong.action}`);

// A payload the types forbid, forced through: the broker refuses it at the edge.
const forced = {} as unknown as UserMessagePayload;
const refused = await echo.request({ action: "user_message", payload: forced });
if (refused.action !== "error") fail(`expected an error, got ${JSON.stringify(refused)}`);
console.log(`refused: ${refused.payload.map((p) => `${p.type} at ${p.loc.join(".")}`).join(", ")}`);

const alice = connectWsChatRoom(base, { room: "typed-room" });
const bob = connectWsChatRoom(base, { room: "typed-room" });
await Promise.all([alice.opened, bob.opened]);
// Frames of a connection are handled in order: once ping is answered, on_connect has joined.
await Promise.all([alice.request({ action: "ping" }), bob.request({ action: "ping" })]);
const heard = new Promise<WsChatRoomServerFrame>((resolve) => bob.onFrame(resolve));
alice.send({ action: "new_chat_message", payload: { message: "hi bob", name: "alice" } });
const frame = await heard;
if (frame.action !== "new_chat_message") fail(`expected a chat message, got ${JSON.stringify(frame)}`);
console.log(`chat: ${frame.payload.name}: ${frame.payload.message}`);

// The assistant's frames have no action envelope; their types still tell them apart.
const assistant = connectWsAssistant(base, {});
const seen: string[] = [];
const answered = new Promise<void>((resolve) =>
  assistant.onFrame((f: WsAssistantServerFrame) => {
    seen.push("stage" in f ? f.stage : "type" in f ? f.type : f.action);
    if ("stage" in f && f.stage === "final_response") resolve();
  }),
);
await assistant.opened;
assistant.send({ action: "user_message", payload: { message: "What is on the menu?" } });
await answered;
console.log(`assistant: ${seen.join(", ")}`);

for (const socket of [echo, alice, bob, assistant]) socket.close();
await Promise.all([echo.closed, alice.closed, bob.closed, assistant.closed]);
console.log("done");

// Never called: each line must fail to compile, or tsc reports the unused directive. This is what
// "compile-time checked frames" means.
export function rejectedAtCompileTime(): void {
  // @ts-expect-error the message is a string
  echo.send({ action: "user_message", payload: { message: 5 } });
  // @ts-expect-error no such action on this route
  echo.send({ action: "new_chat_message", payload: { message: "m", name: "n" } });
  // @ts-expect-error the chat payload needs a name
  alice.send({ action: "new_chat_message", payload: { message: "m" } });
  // @ts-expect-error the room parameter is required
  connectWsChatRoom(base, {});
}
