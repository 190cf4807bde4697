//! The edge: what stands between a client and the hub. The route table, the handshake's identity
//! and limits, TLS, the live service built from a configuration, and the connection task that
//! reads, dispatches to plugins and writes.

pub mod auth;
pub mod connection;
pub mod handshake;
pub mod limits;
pub mod live;
pub mod router;
pub mod tls;
