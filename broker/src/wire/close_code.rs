//! Every close code the broker sends, in one place: the README's close-code table is this list.
//! RFC 6455 §7.4.1 for the 1000s; 4008 is ours (the 4000s are for applications).

/// The server goes away: shutdown, an idle connection, a route removed by a reload.
pub const GOING_AWAY: u16 = 1001;
/// A frame that breaks the WebSocket protocol.
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text frame that is not UTF-8.
pub const INVALID_PAYLOAD: u16 = 1007;
/// A client that broke a policy (kept sending over its rate limit).
pub const POLICY_VIOLATION: u16 = 1008;
/// A message over the route's message limit.
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The plugin failed: while accepting the connection, or on too many of its messages.
pub const INTERNAL_ERROR: u16 = 1011;
/// A client that does not read its frames fast enough (a full outbound queue, a stalled write).
pub const SLOW_CONSUMER: u16 = 4008;
