//! The recent frames of the groups of the plugin's namespace, when broker.toml keeps them
//! (`[plugins.<name>.history]`): read them, or have a newcomer get the last ones when it joins.

use crate::bindings::broker::plugin::history as host_history;
use crate::error::Result;

/// One frame of a group's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its offset in the group's stream (1, 2, 3, ...).
    pub offset: u64,
    /// The frame (a JSON object, as text) exactly as members received it, with its `group`,
    /// `offset` and `epoch` keys.
    pub frame: String,
}

/// Frames of a group's history, oldest first, with the stream's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The stream's epoch: it changes when the group's history is lost.
    pub epoch: String,
    /// The offset of the group's last frame (0 before the first).
    pub offset: u64,
    /// The frames read.
    pub entries: Vec<Entry>,
}

/// The frames of `group` after offset `after` (`None`: the newest `limit`), oldest first, at most
/// `limit` (and at most 1000) of those still kept. Fails when the namespace keeps no history.
pub fn read(group: &str, after: Option<u64>, limit: u32) -> Result<Page> {
    let page = host_history::read(group, after, limit).map_err(crate::state::state_error)?;
    let entries = page.entries.into_iter().map(|entry| Entry { offset: entry.offset, frame: entry.frame }).collect();
    Ok(Page { epoch: page.epoch, offset: page.offset, entries })
}

/// Makes `connection`'s next join to `group` first replay the group's last `count` frames (as
/// many as are kept), as a recovery does: the client gets `recovered`, those frames, then the
/// live stream. Nothing when the client named its own position in the group (`?recover=`), or
/// the namespace keeps no history. [`Context::rewind`](crate::Context::rewind) for the caller.
pub fn rewind(connection: u64, group: &str, count: u32) {
    host_history::rewind(connection, group, count);
}
