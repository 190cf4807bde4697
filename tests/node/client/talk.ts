// Talks to a running broker through the client `broker client --lang typescript` generated
// (./broker.ts, written next to this file by the test). Usage: node talk.js ws://HOST:PORT
// The broker keeps the chat's history ([plugins.chat.history]), so a dropped client recovers.
import { type AddressInfo, createServer, type Socket, connect as tcp } from "node:net";

import {
  connectWsAssistant,
  connectWsChatRoom,
  connectWsSystem,
  type Recovered,
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

// Reconnection with recovery. Carol reaches the broker through a TCP proxy that can cut every
// connection without a close frame (as a network does) and refuse new ones while it is "down".
const broker = new URL(base);
const cut = new Set<Socket>();
let down = false;
const proxy = createServer((client) => {
  // Down, it answers like a load balancer without a backend.
  if (down) return void client.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  const upstream = tcp(Number(broker.port), broker.hostname);
  for (const [from, to] of [
    [client, upstream],
    [upstream, client],
  ]) {
    cut.add(from);
    from.pipe(to);
    from.on("error", () => to.destroy());
    from.on("close", () => {
      cut.delete(from);
      to.destroy();
    });
  }
});
await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const proxied = `ws://127.0.0.1:${(proxy.address() as AddressInfo).port}`;

async function until(what: string, done: () => boolean): Promise<void> {
  for (const start = Date.now(); !done(); await new Promise((r) => setTimeout(r, 20))) {
    if (Date.now() - start > 20_000) {
      fail(`timed out waiting for ${what}: read ${got}, recovered ${JSON.stringify(outcomes)}, lost ${codes}`);
    }
  }
}

const room = `recovery-${process.pid}`;
const carol = connectWsChatRoom(proxied, { room }, { initialDelayMs: 50, maxDelayMs: 400 });
const dave = connectWsChatRoom(base, { room });
const got: string[] = [];
const outcomes: Recovered[] = [];
const codes: number[] = [];
carol.onFrame((f) => {
  if (f.action === "new_chat_message") got.push(f.payload.message);
});
carol.onRecovered((outcome) => outcomes.push(outcome));
carol.onReconnecting((next) => codes.push(next.code));
await Promise.all([carol.opened, dave.opened]);
await Promise.all([carol.request({ action: "ping" }), dave.request({ action: "ping" })]);
const say = (message: string) => dave.send({ action: "new_chat_message", payload: { message, name: "dave" } });
say("m1");
await until("m1", () => got.length === 1);
const position = carol.lastPositions();
if (position.length !== 1 || position[0].group !== room || position[0].offset !== 1)
  fail(`expected carol at offset 1 of ${room}, got ${JSON.stringify(position)}`);

down = true;
for (const socket of cut) socket.destroy();
await until("carol to notice the drop", () => codes.length > 0);
for (let i = 2; i <= 6; i++) say(`m${i}`);
// Dave's frames are handled in order: once his ping is answered, m2..m6 are in the room's history.
await dave.request({ action: "ping" });
// A few attempts fail against the proxy while it is down; then it lets carol back in.
await until("carol to retry", () => codes.length >= 3);
down = false;
// The chat rewinds newcomers (`settings.rewind`), which tells its outcome as a recovery too: the
// reconnection's is the last.
const reconnected = () => outcomes.find((o) => o.replayed > 0);
await until("the recovery", () => reconnected() !== undefined && got.length === 6);
say("m7");
await until("m7, live", () => got.length === 7);
const expected = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"];
if (JSON.stringify(got) !== JSON.stringify(expected)) fail(`expected ${expected}, got ${got}`);
const outcome = outcomes[outcomes.length - 1];
console.log(`lost with ${codes[0]}, retried ${codes.length} times`);
if (outcome.group !== room) fail(`recovered another group: ${JSON.stringify(outcome)}`);
console.log(`recovered: ${outcome.recovered}, replayed ${outcome.replayed} up to ${outcome.offset}`);
console.log(`carol read: ${got.join(" ")}`);

for (const socket of [echo, alice, bob, assistant, carol, dave]) socket.close();
const closed = await Promise.all([echo.closed, alice.closed, bob.closed, assistant.closed, carol.closed, dave.closed]);
if (closed.some((code) => code !== 1000)) fail(`expected every close to be 1000, got ${closed}`);
proxy.close();
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
