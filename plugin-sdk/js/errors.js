// The SDK's errors, apart so that `http.js` and `index.js` share them without importing each other.

/** A handler failure: the client gets a `plugin_error` frame with this message. */
export class PluginError extends Error {}

/** Thrown in `onConnect` to refuse a client with a WebSocket close code and reason. */
export class Reject extends Error {
  constructor(code, reason) {
    super(reason);
    this.code = code;
    this.reason = reason;
  }
}
