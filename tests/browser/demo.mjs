// The demo page in a real browser: echo, a two-person chat, a chat that loses its connection and
// recovers what was said meanwhile, and an assistant conversation.
// Usage: BROKER_API_KEY=... node demo.mjs http://127.0.0.1:PORT/ SCREENSHOT_DIR (the broker keeps the
// chat's history). Exits non-zero on any failure.
import net from "node:net";
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);

// Alice's page reaches the broker through this TCP proxy, which can cut every connection without a
// close frame (as a network does) and, while "down", answers new ones like a load balancer without
// a backend.
const broker = new URL(url);
const live = new Set();
let down = false;
const proxy = net.createServer((client) => {
  if (down) return void client.end("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  const upstream = net.connect(Number(broker.port), broker.hostname);
  for (const [from, to] of [[client, upstream], [upstream, client]]) {
    live.add(from);
    from.pipe(to);
    from.on("error", () => to.destroy());
    from.on("close", () => { live.delete(from); to.destroy(); });
  }
});
await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
const proxied = `http://127.0.0.1:${proxy.address().port}/`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const timeout = 20000;

async function open(at = url) {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await page.goto(at);
  return page;
}

async function publish(message) {
  const response = await fetch(new URL("/api/publish", url), {
    method: "POST",
    headers: { authorization: `Bearer ${process.env.BROKER_API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ group: "chat:browser-room", frame: { action: "new_chat_message", payload: { message, name: "API" } } }),
  });
  if (!response.ok) throw new Error(`publish: ${response.status} ${await response.text()}`);
}

/** The texts of a page's chat messages, in the order shown. */
const messages = (page) => page.locator("#chat-log .msg.message > div:last-child").allTextContents();

async function joinChat(page, name, room) {
  await page.click("nav button[data-tab=chat]");
  await page.fill("#chat-name", name);
  await page.fill("#chat-room", room);
  await page.click("#chat-join");
  await page.waitForSelector("#chat-state.open");
  // A ping round trip: after it the broker has run on-connect, so the room is joined.
  await page.evaluate(() => chat.send(JSON.stringify({ action: "ping" })));
  await page.waitForSelector("#chat-log .msg.system >> text=pong");
}

try {
  const alice = await open(proxied);
  await alice.waitForSelector("#echo-state.open");
  await alice.waitForSelector("#echo-log .msg.system >> text=System: Connection established!");
  await alice.fill("#echo-input", "Hello");
  await alice.click("#echo-send");
  await alice.waitForSelector("#echo-log .msg.system >> text=System Echo: Hello");
  await alice.screenshot({ path: `${shots}/echo.png` });

  const bob = await open();
  await joinChat(alice, "Alice", "browser-room");
  await joinChat(bob, "Bob", "browser-room");
  await alice.fill("#chat-input", "hi from Alice");
  await alice.click("#chat-send");
  await bob.waitForSelector("#chat-log .msg.message >> text=Alice: hi from Alice");
  await bob.fill("#chat-input", "hello Alice");
  await bob.click("#chat-send");
  await alice.waitForSelector("#chat-log .msg.message >> text=Bob: hello Alice");
  // Each sees the other's message, never its own echoed back.
  const own = async (page, name) => page.locator(`#chat-log .msg.message >> text=${name}:`).count();
  if ((await own(alice, "Alice")) !== 0 || (await own(bob, "Bob")) !== 0) throw new Error("a sender received its own message");
  await alice.screenshot({ path: `${shots}/chat-alice.png` });
  await bob.screenshot({ path: `${shots}/chat-bob.png` });

  // Alice's connection is cut; while she is away Bob and the publish API speak in the room.
  down = true;
  for (const socket of live) socket.destroy();
  await alice.waitForSelector("#chat-log .msg.error >> text=connection lost (1006)");
  const missed = ["missed 1", "missed 2", "missed 3", "missed 4"];
  for (const text of missed) {
    await bob.fill("#chat-input", text);
    await bob.click("#chat-send");
  }
  // Bob's frames are handled in order: once his ping is answered, his messages are in the history.
  await bob.evaluate(() => chat.send(JSON.stringify({ action: "ping" })));
  await bob.locator("#chat-log .msg.system >> text=pong").nth(1).waitFor();
  await publish("missed 5");
  // Some attempts fail while the proxy is down, then it lets Alice back in.
  await alice.waitForSelector("#chat-state >> text=attempt 2");
  down = false;
  await alice.waitForSelector("#chat-log .msg.recovered >> text=recovered 5 messages of browser-room");
  await alice.waitForSelector("#chat-log .msg.message >> text=API: missed 5");
  await bob.fill("#chat-input", "back live");
  await bob.click("#chat-send");
  await alice.waitForSelector("#chat-log .msg.message >> text=Bob: back live");
  const expected = ["Bob: hello Alice", ...missed.map((m) => `Bob: ${m}`), "API: missed 5", "Bob: back live"];
  const seen = await messages(alice);
  if (JSON.stringify(seen) !== JSON.stringify(expected)) {
    throw new Error(`after the recovery Alice shows ${JSON.stringify(seen)}, not ${JSON.stringify(expected)}`);
  }
  await alice.screenshot({ path: `${shots}/chat-recovered.png` });

  await alice.click("nav button[data-tab=assistant]");
  await alice.waitForSelector("#assistant-log .msg.system >> text=Welcome");
  await alice.fill("#assistant-input", "What pizzas do you have?");
  await alice.click("#assistant-send");
  await alice.waitForSelector("#assistant-log .msg.message >> text=[initial_response]");
  await alice.waitForSelector("#assistant-log .msg.tool >> text=tool get_menu");
  await alice.waitForSelector("#assistant-log .msg.message >> text=[final_response]");
  await alice.screenshot({ path: `${shots}/assistant.png` });
  console.log("demo page: echo, chat, recovery and assistant work");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
  proxy.close();
  for (const socket of live) socket.destroy();
}
