//! Operations, the top layer: the listener and its HTTP endpoints, hot reload, and the command line.

pub mod api;
pub mod cli;
pub mod reload;
pub mod server;
