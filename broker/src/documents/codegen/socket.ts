/** A frame any route may get: the broker's answer to a frame it could not handle. */
export type ErrorFrame = { action: "error"; payload: BrokerProblems; ref?: string };

export type FrameHandler<In> = (frame: In) => void;

/** Where a client is in a group's stream: the last frame it read of that group. */
export interface Position {
  group: string;
  epoch: string;
  offset: number;
}

/**
 * The broker's word on a group this socket named a position of when it reconnected (the payload of
 * its `recovered` frame): `recovered: true` and the `replayed` frames it missed follow, in order;
 * `recovered: false` means frames are gone (another epoch, too old, past their TTL): reload the
 * state; the socket carries on from `epoch` and `offset`.
 */
export interface Recovered {
  group: string;
  recovered: boolean;
  epoch: string;
  offset: number;
  replayed: number;
}

/** A reconnection about to be tried: the close code that ended the last connection, the attempt (1, 2, ...) and its delay. */
export interface Reconnecting {
  code: number;
  attempt: number;
  delayMs: number;
}

/** How a `BrokerSocket` reconnects after a close it did not ask for. */
export interface ReconnectOptions {
  /** `false`: never reconnect (default `true`). */
  reconnect?: boolean;
  /** The first delay; each failed attempt doubles it, up to `maxDelayMs` (defaults 250 and 10 000). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  /** Attempts in a row before giving up, when `closed` resolves (default: no limit). */
  maxAttempts?: number;
  /** How long a connection attempt may take before it counts as failed (default 10 000). */
  connectTimeoutMs?: number;
}

/**
 * Whether a close code is worth reconnecting after: the connection was lost (1006, 1005), the
 * broker went away or restarts (1001, 1012), failed (1011) or is overloaded (1013, 1014), or closed
 * this client as a slow consumer (4008, whose missed frames recovery brings back). Not after 1000
 * (a close the broker or its plugin meant), 1002/1003/1007/1009 (frames this client should not
 * have sent), 1008 (a policy such as the rate limit) or any other 4xxx (a plugin refusing the
 * connection in on-connect): trying again would get the same answer.
 */
export function shouldReconnect(code: number): boolean {
  return [RETRY_CODES].includes(code);
}

/** A frame as parsed, before it is known to be one of the route's. */
type Loose = { action?: unknown; payload?: unknown; ref?: unknown; group?: unknown; epoch?: unknown; offset?: unknown };

function isPosition(frame: Loose | Recovered): boolean {
  return typeof frame.group === "string" && typeof frame.epoch === "string" && typeof frame.offset === "number";
}

/**
 * A WebSocket speaking one route's frames: `Out` are the client's, `In` the broker's.
 *
 * It reconnects after an unexpected close (see `shouldReconnect`) with exponential backoff and
 * jitter, naming on the handshake (`?recover=`) the last position it read of each group with
 * history, so the broker replays what it missed; `onRecovered` tells the outcome. Frames sent while
 * it is reconnecting are sent once it is connected again.
 */
export class BrokerSocket<Out extends { action: string; ref?: string }, In extends object> {
  /** Resolves once connected; rejects if the first connection fails. */
  readonly opened: Promise<void>;
  /** Resolves with the close code when the socket is closed for good: by `close`, by a code not worth reconnecting after, or after `maxAttempts`. */
  readonly closed: Promise<number>;
  private current: WebSocket;
  private handlers: FrameHandler<In>[] = [];
  private recoveredHandlers: ((outcome: Recovered) => void)[] = [];
  private reconnectingHandlers: ((next: Reconnecting) => void)[] = [];
  private pending = new Map<string, (frame: In) => void>();
  private nextRef = 0;
  private readonly positions = new Map<string, Position>();
  private outbox: string[] = [];
  private attempt = 0;
  private everOpened = false;
  private openedAt: number | undefined;
  private stopped = false;
  private retry: ReturnType<typeof setTimeout> | undefined;
  private deadline: ReturnType<typeof setTimeout> | undefined;
  private settleOpened!: (error?: Error) => void;
  private settleClosed!: (code: number) => void;
  private readonly options: Required<ReconnectOptions>;

  constructor(
    readonly url: string,
    options: ReconnectOptions = {},
  ) {
    this.options = {
      reconnect: true,
      initialDelayMs: 250,
      maxDelayMs: 10_000,
      maxAttempts: Infinity,
      connectTimeoutMs: 10_000,
      ...options,
    };
    this.opened = new Promise((resolve, reject) => {
      this.settleOpened = (error) => (error ? reject(error) : resolve());
    });
    this.closed = new Promise((resolve) => {
      this.settleClosed = resolve;
    });
    this.current = this.dial();
  }

  /** The connection in use; a reconnection replaces it. */
  get socket(): WebSocket {
    return this.current;
  }

  /** The last position read of each group with history, which the next reconnection names. */
  lastPositions(): Position[] {
    return [...this.positions.values()];
  }

  /** Calls `handler` with every frame that is not the answer to a `request` (nor a `recovered`). */
  onFrame(handler: FrameHandler<In>): void {
    this.handlers.push(handler);
  }

  /** Calls `handler` with the outcome of each group's recovery after a reconnection. */
  onRecovered(handler: (outcome: Recovered) => void): void {
    this.recoveredHandlers.push(handler);
  }

  /** Calls `handler` before each reconnection attempt. */
  onReconnecting(handler: (next: Reconnecting) => void): void {
    this.reconnectingHandlers.push(handler);
  }

  send(frame: Out): void {
    const text = JSON.stringify(frame);
    // Between connections a frame waits for the next; after `close` it is dropped, as a closed
    // WebSocket drops it.
    if (this.current.readyState === WebSocket.OPEN) this.current.send(text);
    else if (!this.stopped) this.outbox.push(text);
  }

  /** Sends `frame` with a `ref` and resolves with the broker's answer (its reply, or an error frame). */
  request(frame: Out, timeoutMs = 10_000): Promise<In | ErrorFrame> {
    const ref = frame.ref ?? `r${++this.nextRef}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new Error(`no answer to ${frame.action} (ref ${ref}) within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(ref, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      this.send({ ...frame, ref });
    });
  }

  /** Closes the socket for good: no reconnection follows. */
  close(code = 1000, reason = ""): void {
    this.stopped = true;
    this.outbox = [];
    if (this.retry !== undefined) {
      clearTimeout(this.retry);
      this.retry = undefined;
      this.settleClosed(code);
    } else if (this.current.readyState !== WebSocket.OPEN) {
      // Still connecting (some runtimes never report the end of a connection given up on), or gone.
      clearTimeout(this.deadline);
      if (this.current.readyState === WebSocket.CONNECTING) this.current.close();
      this.settleClosed(code);
    } else {
      this.current.close(code, reason);
    }
  }

  private dial(): WebSocket {
    const positions = this.lastPositions();
    const url =
      positions.length === 0
        ? this.url
        : `${this.url}${this.url.includes("?") ? "&" : "?"}recover=${encodeURIComponent(JSON.stringify(positions.slice(-256)))}`;
    const socket = new WebSocket(url);
    // Each connection ends once, whichever says so first: some runtimes (Node 20's) fire `error`
    // but no `close` for a refused handshake, or nothing at all for a connection cut before the
    // answer, which the handshake deadline ends.
    let ended = false;
    let open = false;
    const end = (code: number) => {
      if (ended) return;
      ended = true;
      clearTimeout(this.deadline);
      this.lost(code);
    };
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      socket.close();
      end(1006);
    }, this.options.connectTimeoutMs);
    socket.addEventListener("open", () => {
      clearTimeout(this.deadline);
      open = true;
      this.openedAt = Date.now();
      if (!this.everOpened) {
        this.everOpened = true;
        this.settleOpened();
      }
      for (const text of this.outbox.splice(0)) socket.send(text);
    });
    socket.addEventListener("message", (event) => this.receive(String(event.data)));
    socket.addEventListener("error", () => {
      if (!open) end(1006);
    });
    socket.addEventListener("close", (event) => end(event.code));
    return socket;
  }

  private receive(data: string): void {
    this.attempt = 0;
    const frame = JSON.parse(data) as Loose;
    if (frame.action === "recovered" && typeof frame.payload === "object" && frame.payload !== null) {
      const outcome = frame.payload as Recovered;
      // Frames that were kept follow and move the position; lost ones will never come.
      if (!outcome.recovered && isPosition(outcome)) this.remember(outcome);
      for (const handler of this.recoveredHandlers) handler(outcome);
      return;
    }
    if (isPosition(frame)) this.remember(frame);
    const waiting = typeof frame.ref === "string" ? this.pending.get(frame.ref) : undefined;
    if (waiting && typeof frame.ref === "string") {
      this.pending.delete(frame.ref);
      waiting(frame as In);
      return;
    }
    for (const handler of this.handlers) handler(frame as In);
  }

  private remember(at: Loose | Recovered): void {
    const group = at.group as string;
    this.positions.set(group, { group, epoch: at.epoch as string, offset: at.offset as number });
  }

  private lost(code: number): void {
    // A connection that lasted resets the backoff, as does any frame read (`receive`); one the
    // broker closes right after accepting it does not, so a failing plugin is not hammered.
    if (this.openedAt !== undefined && Date.now() - this.openedAt >= this.options.maxDelayMs) this.attempt = 0;
    this.openedAt = undefined;
    if (!this.everOpened && !this.stopped) {
      // The first connection failed: nothing to recover, and the app hears of it through `opened`.
      this.stopped = true;
      this.settleOpened(new Error(`cannot connect to ${this.url} (close code ${code})`));
    }
    const { reconnect, initialDelayMs, maxDelayMs, maxAttempts } = this.options;
    if (this.stopped || !reconnect || !shouldReconnect(code) || this.attempt >= maxAttempts) {
      this.stopped = true;
      this.settleClosed(code);
      return;
    }
    this.attempt += 1;
    // Exponential backoff with jitter: half the step fixed, half random, so clients a broker
    // restart dropped together do not come back together.
    const step = Math.min(maxDelayMs, initialDelayMs * 2 ** (this.attempt - 1));
    const delayMs = Math.round(step / 2 + (Math.random() * step) / 2);
    for (const handler of this.reconnectingHandlers) handler({ code, attempt: this.attempt, delayMs });
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.current = this.dial();
    }, delayMs);
  }
}
