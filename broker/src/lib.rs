//! A realtime WebSocket message broker whose handlers are sandboxed WebAssembly components.
//!
//! The crate is seven layers, bottom to top; a module imports only from its own layer and the
//! layers below it (`cargo xtask lint` checks this). See ARCHITECTURE.md for the codemap and the way
//! of one frame through them.

pub mod config;
pub mod documents;
pub mod edge;
pub mod hub;
pub mod ops;
pub mod plugin;
pub mod wire;
