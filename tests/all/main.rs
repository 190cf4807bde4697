//! Black-box tests: each starts a real broker process and talks to it over real sockets.

mod api;
mod assistant;
mod asyncapi;
mod auth;
mod badinput;
mod cluster;
mod deadlines;
mod echo;
mod errors;
mod handshake;
mod harness;
mod hostile;
mod lifecycle;
mod limits;
mod ops;
mod plugins;
mod reload;
mod rooms;
mod tls;
mod tutorials;
mod typed;
