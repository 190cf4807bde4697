//! What a handler knows about its call and what it can ask of the host.

use std::cell::OnceCell;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::broker::plugin::{call, groups, host, identity, session, types};
use crate::error::{Error, Result};

/// A log level for [`Context::log`].
pub use types::Level;

/// The connection a call is about, and the host's services.
#[derive(Debug, Clone)]
pub struct Context {
    connection: u64,
    /// The route, path, parameters and user: handed over with the connection's own calls, and
    /// asked of the host (`call.current`) by a message's handler only when it reads one of them,
    /// so that an echo does not copy four strings in per message.
    raw: OnceCell<types::Context>,
}

impl Context {
    pub(crate) fn new(raw: types::Context) -> Self {
        Context { connection: raw.connection, raw: OnceCell::from(raw) }
    }

    /// The context of a message's call, fetched when first read.
    pub(crate) fn of_connection(connection: u64) -> Self {
        Context { connection, raw: OnceCell::new() }
    }

    fn raw(&self) -> &types::Context {
        self.raw.get_or_init(call::current)
    }

    /// The connection's id, unique for the broker process's lifetime.
    pub fn connection(&self) -> u64 {
        self.connection
    }

    /// The route pattern the connection matched (`/ws/chat/{room}`).
    pub fn route(&self) -> &str {
        &self.raw().route
    }

    /// The path the client connected to (`/ws/chat/room1`).
    pub fn path(&self) -> &str {
        &self.raw().path
    }

    /// A path parameter of the route (`param("room")`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.raw().params.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The authenticated user, when the route authenticates.
    pub fn user(&self) -> Option<&str> {
        self.raw().user.as_deref()
    }

    /// The claims of this connection's token that broker.toml hands to plugins (`auth.claims`),
    /// decoded; `None` when the connection is anonymous.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        crate::state::decode("claims", identity::claims(self.connection()))
    }

    /// Sends a frame to this connection.
    pub fn send(&self, frame: &impl Serialize) -> Result<()> {
        send_to(self.connection(), frame)
    }

    /// Closes this connection with a WebSocket close code and reason, after what is queued.
    pub fn close(&self, code: u16, reason: &str) {
        host::close(self.connection(), code, reason);
    }

    /// Adds this connection to a group of this plugin. It leaves by itself when it closes.
    pub fn join(&self, group: &str) -> Result<()> {
        groups::join(self.connection(), group).map_err(group_error)
    }

    /// Makes this connection's next [`join`](Context::join) to `group` first replay the group's
    /// last `count` frames, as Ably's rewind does (see [`history::rewind`](crate::history::rewind)).
    pub fn rewind(&self, group: &str, count: u32) {
        crate::history::rewind(self.connection(), group, count);
    }

    /// Removes this connection from a group.
    pub fn leave(&self, group: &str) {
        groups::leave(self.connection(), group);
    }

    /// Sends a frame to every member of a group, this connection included; returns how many.
    pub fn broadcast(&self, group: &str, frame: &impl Serialize) -> Result<u32> {
        broadcast(group, frame, None)
    }

    /// Sends a frame to every member of a group but this connection (Chanx's `exclude_current`).
    pub fn broadcast_to_others(&self, group: &str, frame: &impl Serialize) -> Result<u32> {
        broadcast(group, frame, Some(self.connection()))
    }

    /// A value of this connection's session as stored: the text `session_set` was given.
    pub fn session_get(&self, key: &str) -> Option<String> {
        session::get(self.connection(), key)
    }

    /// Sets a value of this connection's session as it is; it is gone when the connection closes.
    pub fn session_set(&self, key: &str, value: &str) -> Result<()> {
        session::set(self.connection(), key, value).map_err(crate::state::state_error)
    }

    /// A value of this connection's session, decoded from JSON.
    pub fn session_get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        crate::state::decode(key, self.session_get(key))
    }

    /// Sets a value of this connection's session as JSON text.
    pub fn session_set_json<T: Serialize>(&self, key: &str, value: &T) -> Result<()> {
        self.session_set(key, &serde_json::to_string(value)?)
    }

    /// Deletes a value of this connection's session.
    pub fn session_delete(&self, key: &str) {
        session::delete(self.connection(), key);
    }

    /// Writes a line to the broker's log.
    pub fn log(&self, level: Level, message: &str) {
        host::log(level, message);
    }

    /// The plugin's `settings` table from broker.toml, decoded.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&host::settings()).map_err(|e| Error::msg(format!("plugin settings: {e}")))
    }
}

/// Sends a frame to any connection of this broker, or of any node of its cluster.
pub fn send_to(connection: u64, frame: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string(frame)?;
    host::send(connection, &text).map_err(|error| send_error(error, connection))
}

/// Sends a frame to every member of a group but `exclude`; returns how many it reached.
pub fn broadcast(group: &str, frame: &impl Serialize, exclude: Option<u64>) -> Result<u32> {
    let text = serde_json::to_string(frame)?;
    groups::broadcast(group, &text, exclude).map_err(|error| match error {
        types::SendError::Closed => Error::msg("the connection is closed"),
        types::SendError::InvalidFrame(why) => Error::msg(format!("invalid frame: {why}")),
    })
}

/// The members of a group of this plugin: connection ids.
pub fn members(group: &str) -> Vec<u64> {
    groups::members(group)
}

/// The message of a failed send: the same words in every SDK.
fn send_error(error: types::SendError, connection: u64) -> Error {
    match error {
        types::SendError::Closed => Error::msg(format!("connection {connection} is closed")),
        types::SendError::InvalidFrame(why) => Error::msg(format!("invalid frame: {why}")),
    }
}

/// The message of a failed group operation: the same words in every SDK.
fn group_error(error: types::GroupError) -> Error {
    match error {
        types::GroupError::Closed => Error::msg("the connection is closed"),
        types::GroupError::InvalidName => Error::msg("a group name is 1 to 256 bytes"),
        types::GroupError::TooManyGroups(why) => Error::msg(why),
    }
}
