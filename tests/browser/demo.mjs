// The demo page in a real browser: echo, a two-person chat, and an assistant conversation.
// Usage: node demo.mjs http://127.0.0.1:PORT/ SCREENSHOT_DIR. Exits non-zero on any failure.
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const timeout = 20000;

async function open() {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (e) => { console.error("page error:", e); process.exitCode = 1; });
  await page.goto(url);
  return page;
}

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
  const alice = await open();
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

  await alice.click("nav button[data-tab=assistant]");
  await alice.waitForSelector("#assistant-log .msg.system >> text=Welcome");
  await alice.fill("#assistant-input", "What pizzas do you have?");
  await alice.click("#assistant-send");
  await alice.waitForSelector("#assistant-log .msg.message >> text=[initial_response]");
  await alice.waitForSelector("#assistant-log .msg.tool >> text=tool get_menu");
  await alice.waitForSelector("#assistant-log .msg.message >> text=[final_response]");
  await alice.screenshot({ path: `${shots}/assistant.png` });
  console.log("demo page: echo, chat and assistant work");
} catch (error) {
  console.error(error);
  process.exitCode = 1;
} finally {
  await browser.close();
}
