//! The wire format, the bottom layer: what a frame is, how it is checked, and how a close is said.
//! It knows nothing of configuration, plugins or sockets.

pub mod close_code;
pub mod percent;
pub mod problem;
pub mod protocol;
pub mod unique_keys;
