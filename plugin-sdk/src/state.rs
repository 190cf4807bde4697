//! State kept by the host: it outlives instances, reloads and crashes, which is why a plugin can
//! keep nothing in its own memory.
//!
//! As in Spin's and Extism's SDKs, and in this SDK's Python and JavaScript versions, the plain
//! names (`get`, `set`, ...) take and give the stored text as it is, and the `_json` functions
//! encode and decode JSON over them: a value written in one language reads back the same in the
//! others.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::broker::plugin::{kv as host_kv, types};
use crate::error::{Error, Result};

/// The message of a failed state operation: the same words in every SDK.
pub(crate) fn state_error(error: types::StateError) -> Error {
    match error {
        types::StateError::Closed => Error::msg("the connection is closed"),
        types::StateError::TooLarge(why) | types::StateError::Unavailable(why) => Error::msg(why),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, text: Option<String>) -> Result<Option<T>> {
    text.map(|text| serde_json::from_str(&text).map_err(|e| Error::msg(format!("state {key:?} does not decode: {e}"))))
        .transpose()
}

fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// The plugin's key-value store (shared by the plugins of its namespace, whatever their language).
pub mod kv {
    use super::*;

    /// A value as stored: the text `set` was given.
    pub fn get(key: &str) -> Result<Option<String>> {
        host_kv::get(key).map_err(state_error)
    }

    /// Stores `value` as it is, expiring after `ttl` if given.
    pub fn set(key: &str, value: &str, ttl: Option<Duration>) -> Result<()> {
        host_kv::set(key, value, ttl_ms(ttl)).map_err(state_error)
    }

    /// A value decoded from JSON (written by [`set_json`], or by any plugin as JSON text).
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        decode(key, get(key)?)
    }

    /// Stores a value as JSON text, expiring after `ttl` if given.
    pub fn set_json<T: Serialize>(key: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
        set(key, &serde_json::to_string(value)?, ttl)
    }

    /// Deletes a key; true when it existed.
    pub fn delete(key: &str) -> Result<bool> {
        host_kv::delete(key).map_err(state_error)
    }

    /// Sets `key` to `new` (`None` deletes it) only if its text is `expected` (`None`: absent);
    /// true when it did.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        host_kv::compare_and_swap(key, expected, new, ttl_ms(ttl)).map_err(state_error)
    }
}
