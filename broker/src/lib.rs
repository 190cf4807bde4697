//! A realtime WebSocket message broker whose handlers are sandboxed WebAssembly components.
//!
//! See ARCHITECTURE.md for the codemap and the way of one frame through these modules.

pub mod api;
pub mod asyncapi;
pub mod auth;
pub mod cli;
pub mod close_code;
pub mod cluster;
pub mod codegen;
pub mod config;
pub mod connection;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod plugin;
pub mod protocol;
pub mod registry;
pub mod reload;
pub mod router;
pub mod schema;
pub mod server;
pub mod state;
pub mod tls;
pub mod unique_keys;
