//! The frame a plugin sends: `{"action": ..., "payload": ...}`.

use serde::Serialize;

use crate::Message;

/// An outgoing frame in the broker's envelope: an action and its payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Frame<T> {
    /// The action name on the wire.
    pub action: String,
    /// The payload, serialized as the frame's `payload`.
    pub payload: T,
}

impl<T: Serialize> Frame<T> {
    /// A frame of `action` carrying `payload`.
    pub fn new(action: impl Into<String>, payload: T) -> Self {
        Frame { action: action.into(), payload }
    }
}

impl<M: Message> Frame<M> {
    /// The frame of a typed message: its action and itself as the payload.
    pub fn of(message: M) -> Self {
        Frame { action: M::ACTION.to_owned(), payload: message }
    }
}
