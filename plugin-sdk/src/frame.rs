//! The frame a plugin sends: `{"action": ..., "payload": ...}`.

use serde::Serialize;

/// An outgoing frame in the broker's envelope: an action and its payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame<T> {
    pub action: String,
    pub payload: T,
}

impl<T: Serialize> Frame<T> {
    /// A frame of `action` carrying `payload`.
    pub fn new(action: impl Into<String>, payload: T) -> Self {
        Frame { action: action.into(), payload }
    }
}
