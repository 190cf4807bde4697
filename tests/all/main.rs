//! Black-box tests: each starts a real broker process and talks to it over real sockets.

// Test code: an unwrap that fails is a failed test, with the value in its message. The harness and
// helpers are not `#[test]` functions, so clippy.toml's allow-*-in-tests does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod assistant;
mod asyncapi;
mod auth;
mod badinput;
mod chanx;
mod cluster;
mod deadlines;
mod echo;
mod errors;
mod handshake;
mod harness;
mod history;
mod hostile;
mod http;
mod lifecycle;
mod limits;
mod ops;
mod parity;
mod parked;
mod plugins;
mod reload;
mod rooms;
mod tls;
mod tutorials;
mod typed;
