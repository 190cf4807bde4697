//! The realtime hub: live connections and their outbound queues, groups, key-value state and the
//! cluster backend that carries them across nodes, with the metrics they report. Plugins act on
//! the hub through the host interfaces; the hub never calls a plugin.

pub mod cluster;
pub mod history;
pub mod metrics;
pub mod outbound;
pub mod registry;
pub mod state;
