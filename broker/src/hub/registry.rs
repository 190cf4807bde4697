//! Live connections by id, the groups they are in, and delivery to both.
//!
//! Lock order: a connection's entry, then a group. A connection's entry exists from `register` to
//! `remove`, and `join` only adds a membership while holding it, so a join racing a close either
//! lands before `remove` (which then cleans it up) or fails: no membership outlives its connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;

use crate::hub::cluster::{self, Link};
use crate::hub::history::{Histories, MAX_READ, Outcome, Page, Policy, Position, Recovery};
pub use crate::hub::outbound::{CloseReason, Delivery, Handle, SendError};
use crate::hub::state::{Session, StateError};

/// A connection's id, unique for the life of the process.
pub type ConnectionId = u64;

/// The longest group name, in bytes.
pub const MAX_GROUP_NAME: usize = 256;

/// How long a join in a cluster waits for its recovery's replay before it tells the client frames
/// are lost and lets it in.
const REPLAY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest epoch a client may name (the broker's are 16 hex digits).
const MAX_EPOCH: usize = 64;

/// A group's full name: the namespace (a plugin's, unless broker.toml shares one) and the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub namespace: Arc<str>,
    pub name: String,
}

impl GroupKey {
    pub fn new(namespace: &Arc<str>, name: &str) -> GroupKey {
        GroupKey { namespace: namespace.clone(), name: name.to_owned() }
    }

    /// Parses the HTTP API's `namespace:name`.
    pub fn parse(qualified: &str) -> Option<GroupKey> {
        let (namespace, name) = qualified.split_once(':')?;
        (!namespace.is_empty() && valid_name(name))
            .then(|| GroupKey { namespace: Arc::from(namespace), name: name.into() })
    }
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.namespace, self.name)
    }
}

/// Whether `name` can name a group.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_GROUP_NAME
}

/// Why a connection could not join a group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("the connection is closed")]
    Closed,
    #[error("a group name is 1 to {MAX_GROUP_NAME} bytes")]
    InvalidName,
    #[error("a connection may be in at most {0} groups")]
    TooManyGroups(usize),
}

struct Entry {
    handle: Handle,
    /// The route pattern it connected through, so a route removed by a reload can close it.
    route: Arc<str>,
    groups: HashSet<GroupKey>,
    session: Session,
    /// The token claims handed to plugins, as a JSON object text; `None` when anonymous.
    claims: Option<Box<str>>,
    /// Where the client was in groups it has not been joined to yet, by group name: the join
    /// replays what it missed.
    recover: HashMap<String, Position>,
    /// Groups whose next join replays their last frames, by group name: a plugin's `rewind`.
    rewind: HashMap<String, u32>,
}

/// What a publish from the HTTP API did.
#[derive(Debug)]
pub struct Published {
    /// Members of this node it was queued for.
    pub delivered: usize,
    /// The epoch and offset it got, when the group keeps history.
    pub position: Option<(String, u64)>,
    /// A retry of an earlier publish with the same idempotency key: not broadcast again.
    pub duplicate: bool,
}

/// Why a publish from the HTTP API was not made.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("an idempotency key needs history on the group's namespace (`[plugins.<name>.history]`)")]
    NoHistory,
    #[error("the cluster's Redis: {0}")]
    Cluster(#[from] cluster::ClusterError),
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_groups_per_connection: usize,
    pub session_bytes: usize,
}

/// All live connections and groups of this process; with a cluster link, the groups of every node.
pub struct Registry {
    next_id: AtomicU64,
    connections: DashMap<ConnectionId, Entry>,
    groups: DashMap<GroupKey, HashMap<ConnectionId, Handle>>,
    limits: Limits,
    cluster: Option<Arc<Link>>,
    history: Histories,
    /// Members recovering from Redis, held out of live delivery until their replay arrives.
    held: DashMap<GroupKey, HashSet<ConnectionId>>,
    /// Set by `shut_down`: a connection registered after it is shut down at once.
    shutting_down: AtomicBool,
}

impl Registry {
    pub fn new(limits: Limits, cluster: Option<Arc<Link>>) -> Registry {
        let first = cluster.as_ref().map_or(0, |link| link.first_id());
        Registry {
            next_id: AtomicU64::new(first),
            connections: DashMap::new(),
            groups: DashMap::new(),
            limits,
            cluster,
            history: Histories::default(),
            held: DashMap::new(),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Keeps at most `limit` bytes of group history on this node (`state.history_bytes`), counted
    /// in `metrics`.
    pub fn with_history(mut self, limit: usize, metrics: crate::hub::metrics::HistoryMetrics) -> Registry {
        self.history = Histories::new(limit, metrics);
        self
    }

    /// Sets which namespaces keep group history (see [`Histories::set_policies`]).
    pub fn set_history(&self, policies: HashMap<Arc<str>, Policy>) {
        self.history.set_policies(policies);
    }

    /// Drops expired history.
    pub fn sweep_history(&self) {
        self.history.sweep();
    }

    /// The link to the other nodes, in a cluster.
    pub fn cluster(&self) -> Option<&Link> {
        self.cluster.as_deref()
    }

    /// Whether `id` is a connection of another node.
    fn elsewhere(&self, id: ConnectionId) -> Option<&Link> {
        self.cluster.as_deref().filter(|link| cluster::node_of(id) != link.node)
    }

    /// Adds a connection of `route`, with the positions it recovers from, and returns its new id.
    pub fn register(
        &self,
        handle: Handle,
        route: Arc<str>,
        claims: Option<Box<str>>,
        recover: Vec<Position>,
    ) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let recover = recover.into_iter().map(|position| (position.group.clone(), position)).collect();
        let entry = Entry {
            handle,
            route,
            groups: HashSet::new(),
            session: Session::default(),
            claims,
            recover,
            rewind: HashMap::new(),
        };
        let control = entry.handle.control_held();
        self.connections.insert(id, entry);
        // After the insert: either `shut_down` finds this entry, or this load sees its flag.
        if self.shutting_down.load(Ordering::SeqCst) {
            control.shut_down();
        }
        id
    }

    /// The server is shutting down: every connection, and every one registered from now on, closes
    /// with 1001 once its read loop is done with the message it is handling.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for entry in self.connections.iter() {
            entry.handle.control().shut_down();
        }
    }

    /// Positions to recover from when the connection is joined to their groups; returns why each
    /// refused one was. A group it is already in is not recovered (its frames since the join were
    /// delivered live), and a connection keeps at most as many positions as it may have groups.
    pub fn recover(&self, id: ConnectionId, positions: Vec<Position>) -> Vec<String> {
        let Some(mut entry) = self.connections.get_mut(&id) else { return Vec::new() };
        let mut refused = Vec::new();
        for position in positions {
            let group = crate::wire::protocol::quote(&position.group).into_owned();
            if !valid_name(&position.group) || position.epoch.len() > MAX_EPOCH {
                refused.push(format!(
                    "{group}: a group name is 1 to {MAX_GROUP_NAME} bytes, an epoch at most {MAX_EPOCH}"
                ));
            } else if entry.groups.iter().any(|key| key.name == position.group) {
                refused.push(format!(
                    "already in {group}: recover a group before the plugin joins it (on the handshake, `?recover=`)"
                ));
            } else if entry.recover.len() >= self.limits.max_groups_per_connection
                && !entry.recover.contains_key(&position.group)
            {
                refused.push(format!("{group}: at most {} positions at a time", self.limits.max_groups_per_connection));
            } else {
                entry.recover.insert(position.group.clone(), position);
            }
        }
        refused
    }

    /// The token claims of a connection, as broker.toml hands them to plugins.
    pub fn claims(&self, id: ConnectionId) -> Option<String> {
        self.connections.get(&id).and_then(|entry| entry.claims.as_deref().map(str::to_owned))
    }

    /// Closes every connection whose route is in `routes`; returns how many.
    pub fn close_routes(&self, routes: &HashSet<String>, reason: &CloseReason) -> usize {
        let doomed: Vec<Handle> = self
            .connections
            .iter()
            .filter(|entry| routes.contains(&*entry.route))
            .map(|entry| entry.handle.clone())
            .collect();
        for handle in &doomed {
            let _ = handle.close(reason.clone());
        }
        doomed.len()
    }

    pub fn session_get(&self, id: ConnectionId, key: &str) -> Option<String> {
        self.connections.get(&id).and_then(|entry| entry.session.get(key))
    }

    pub fn session_set(&self, id: ConnectionId, key: &str, value: String) -> Result<(), StateError> {
        let mut entry = self.connections.get_mut(&id).ok_or(StateError::Closed)?;
        entry.session.set(key, value, self.limits.session_bytes)
    }

    pub fn session_delete(&self, id: ConnectionId, key: &str) {
        if let Some(mut entry) = self.connections.get_mut(&id) {
            entry.session.delete(key);
        }
    }

    /// Removes a connection and all its memberships; groups left empty are dropped.
    pub fn remove(&self, id: ConnectionId) {
        // Its memberships go while its entry is still held (entry, then group: the lock order), so
        // no join slips in, and once the connection is no longer counted its groups are gone too.
        self.connections.remove_if(&id, |_, entry| {
            for key in &entry.groups {
                self.remove_member(key.clone(), id);
            }
            true
        });
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// Pings the quiet connections and closes the silent ones (see [`Handle::sweep_idle`]);
    /// returns how many were closed.
    pub fn sweep_idle(&self, ping_after_ms: u64, close_after_ms: u64) -> usize {
        let now = crate::hub::outbound::clock_ms();
        self.connections
            .iter()
            .filter(|entry| {
                entry.handle.sweep_idle(now, ping_after_ms, close_after_ms) == crate::hub::outbound::Idle::Closed
            })
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Groups with at least one member.
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Memberships, over all groups.
    pub fn membership_count(&self) -> usize {
        self.groups.iter().map(|group| group.len()).sum()
    }

    fn handle(&self, id: ConnectionId) -> Result<Handle, SendError> {
        self.connections.get(&id).map(|entry| entry.handle.clone()).ok_or(SendError::Closed)
    }

    /// Queues a frame for one connection without waiting (see [`Handle::try_send`]). A connection
    /// of another node is sent to through its node, which drops the frame if it has closed.
    pub fn send(&self, id: ConnectionId, delivery: &Delivery) -> Result<(), SendError> {
        if let Some(link) = self.elsewhere(id) {
            link.publish_direct(id, delivery);
            return Ok(());
        }
        self.send_local(id, delivery)
    }

    /// Queues a frame for a connection of this node.
    pub fn send_local(&self, id: ConnectionId, delivery: &Delivery) -> Result<(), SendError> {
        let handle = self.handle(id)?;
        handle.try_send(delivery.for_handle(&handle))
    }

    /// Closes a connection after the frames already queued.
    pub fn close(&self, id: ConnectionId, reason: CloseReason) -> Result<(), SendError> {
        self.handle(id)?.close(reason)
    }

    /// Adds a connection to a group. In a cluster it returns once the other nodes can reach the
    /// connection through the group (or Redis did not answer in time; the membership stands).
    pub async fn join(&self, id: ConnectionId, key: GroupKey) -> Result<(), JoinError> {
        if let Some(link) = &self.cluster {
            self.rewind_position(link, id, &key).await;
        }
        let (first, recovering) = self.join_local(id, &key)?;
        let Some(link) = &self.cluster else { return Ok(()) };
        if let Some(first) = first {
            link.joined(key.clone(), id, first).await;
        }
        // Subscribed: frames published from now on reach this node. The recovery reads the
        // stream and queues the replay behind them, in one step in Redis; until the replay
        // arrives (see `replayed`), the member is held out of live delivery.
        let Some((from, policy)) = recovering else { return Ok(()) };
        let group = from.group.clone();
        // The join returns once the replay is delivered, so the plugin's next frames follow it. A
        // replay that never comes (Redis reconnected between the script and its delivery) must not
        // hold the member out of the group for good: past the wait, it is told it lost frames.
        let failure = match link.recover(&key, id, &from, policy).await {
            Err(error) => Some(error.to_string()),
            Ok(()) => {
                let delivered = tokio::time::timeout(REPLAY_WAIT, async {
                    while self.held.get(&key).is_some_and(|held| held.contains(&id)) {
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    }
                });
                delivered.await.is_err().then(|| format!("no replay within {} ms", REPLAY_WAIT.as_millis()))
            }
        };
        if let Some(error) = failure {
            tracing::warn!(group = %key, %error, "cannot recover from Redis; the client is told so");
            self.replayed(&key, id, Recovery::lost(group), Vec::new(), None);
        }
        Ok(())
    }

    /// The join on this node: `Some(first)` when the membership is new (`first` when the group
    /// is), and in a cluster, the position to recover from in Redis.
    #[allow(clippy::type_complexity)]
    fn join_local(
        &self,
        id: ConnectionId,
        key: &GroupKey,
    ) -> Result<(Option<bool>, Option<(Position, Policy)>), JoinError> {
        if !valid_name(&key.name) {
            return Err(JoinError::InvalidName);
        }
        let mut entry = self.connections.get_mut(&id).ok_or(JoinError::Closed)?;
        if entry.groups.contains(key) {
            return Ok((None, None));
        }
        if entry.groups.len() >= self.limits.max_groups_per_connection {
            return Err(JoinError::TooManyGroups(self.limits.max_groups_per_connection));
        }
        let handle = entry.handle.clone();
        let from = entry.recover.remove(&key.name);
        let rewind = entry.rewind.remove(&key.name);
        let mut recovering = None;
        // In memory: held until the member is added, so no frame is appended between the replay
        // and the join.
        let mut stream = if self.cluster.is_none() { self.history.stream(key) } else { None };
        // A plugin's rewind recovers from right before the last frames kept, found under the lock
        // the replay is read under.
        let from = match (from, rewind, stream.as_mut()) {
            (None, Some(count), Some(stream)) => Some(stream.rewind(&key.name, count)),
            (from, _, _) => from,
        };
        match (from, self.cluster.is_some(), self.history.policy(key)) {
            (None, _, _) => {}
            (Some(from), true, Some(policy)) => {
                self.held.entry(key.clone()).or_default().insert(id);
                recovering = Some((from, policy));
            }
            (Some(from), _, _) => {
                let (recovery, frames) = match stream.as_mut() {
                    Some(stream) => stream.recover(&from),
                    None => {
                        self.history.metrics().recovered("no_history");
                        (Recovery::lost(from.group), Vec::new())
                    }
                };
                deliver_replay(&handle, &recovery, frames);
            }
        }
        let mut members = self.groups.entry(key.clone()).or_default();
        let first = members.is_empty();
        members.insert(id, handle);
        drop(members);
        drop(stream);
        entry.groups.insert(key.clone());
        Ok((Some(first), recovering))
    }

    /// Makes the connection's next join to `key` first replay the group's last `count` frames, as
    /// a recovery does (a plugin's `rewind`). Nothing when the client named its own position in
    /// the group, is in it already, or its namespace keeps no history; a connection keeps at most
    /// as many rewinds as it may have groups.
    pub fn rewind(&self, id: ConnectionId, key: &GroupKey, count: u32) {
        if count == 0 || self.history.policy(key).is_none() {
            return;
        }
        let Some(mut entry) = self.connections.get_mut(&id) else { return };
        let full = entry.rewind.len() >= self.limits.max_groups_per_connection;
        if entry.recover.contains_key(&key.name)
            || entry.groups.contains(key)
            || (full && !entry.rewind.contains_key(&key.name))
        {
            return;
        }
        entry.rewind.insert(key.name.clone(), count);
    }

    /// In a cluster, turns a pending rewind of `key` into the position to recover from, read
    /// from Redis. Frames appended between this read and the recovery are replayed too, so none
    /// is missed; Redis not answering leaves the join without a replay.
    async fn rewind_position(&self, link: &Link, id: ConnectionId, key: &GroupKey) {
        let pending = self.connections.get_mut(&id).and_then(|mut entry| entry.rewind.remove(&key.name));
        let (Some(count), Some(policy)) = (pending, self.history.policy(key)) else { return };
        let limit = usize::try_from(count).unwrap_or(usize::MAX);
        match link.read_history(key, policy, None, limit).await {
            Ok(page) => {
                let offset = page.entries.first().map_or(page.offset, |(offset, _)| offset - 1);
                if let Some(mut entry) = self.connections.get_mut(&id)
                    && !entry.groups.contains(key)
                {
                    let position = Position { group: key.name.clone(), epoch: page.epoch, offset };
                    entry.recover.entry(key.name.clone()).or_insert(position);
                }
            }
            Err(error) => tracing::warn!(group = %key, %error, "cannot rewind from Redis; joining without a replay"),
        }
    }

    /// The frames of `key`'s history after `after` (none: the newest `limit`), oldest first, at
    /// most `limit` and [`MAX_READ`]; `None` when its namespace keeps no history.
    pub async fn read_history(
        &self,
        key: &GroupKey,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Option<Page>, cluster::ClusterError> {
        let limit = limit.min(MAX_READ);
        match (&self.cluster, self.history.policy(key)) {
            (_, None) => Ok(None),
            (Some(link), Some(policy)) => link.read_history(key, policy, after, limit).await.map(Some),
            (None, Some(_)) => Ok(self.history.read(key, after, limit)),
        }
    }

    /// Delivers a recovery read from Redis to a member held out of live delivery, then lets it
    /// in. Called from the cluster's receiving task, in the order of the group's frames, so what
    /// came before the replay is in it and what comes after is live.
    /// `outcome` is `None` when Redis could not be asked.
    pub fn replayed(
        &self,
        key: &GroupKey,
        id: ConnectionId,
        recovery: Recovery,
        frames: Vec<Arc<Delivery>>,
        outcome: Option<Outcome>,
    ) {
        // A replay for a member no longer held (it left, or was already told its recovery
        // failed) is dropped: delivering it would repeat frames it got live.
        if !self.held.get(key).is_some_and(|held| held.contains(&id)) {
            return;
        }
        let metrics = self.history.metrics();
        metrics.recovered(outcome.map_or("failed", Outcome::label));
        metrics.replayed.inc_by(frames.len() as u64);
        if let Ok(handle) = self.handle(id) {
            deliver_replay(&handle, &recovery, frames);
        }
        self.held.remove_if_mut(key, |_, held| held.remove(&id) && held.is_empty());
    }

    pub fn leave(&self, id: ConnectionId, key: &GroupKey) {
        let Some(mut entry) = self.connections.get_mut(&id) else { return };
        if entry.groups.remove(key) {
            self.remove_member(key.clone(), id);
        }
    }

    fn remove_member(&self, key: GroupKey, id: ConnectionId) {
        if !self.held.is_empty() {
            self.held.remove_if_mut(&key, |_, held| held.remove(&id) && held.is_empty());
        }
        // Removing the group when it empties, under the same shard lock, so an empty group is never seen.
        let emptied = self
            .groups
            .remove_if_mut(&key, |_, members| {
                members.remove(&id);
                members.is_empty()
            })
            .is_some();
        if let Some(link) = &self.cluster {
            link.left(key, id, emptied);
        }
    }

    /// Queues `delivery` for every member of a group but `exclude`, on every node; returns how
    /// many members of this node it reached.
    pub fn broadcast(&self, key: &GroupKey, delivery: &Delivery, exclude: Option<ConnectionId>) -> usize {
        if let (Some(link), Some(policy)) = (&self.cluster, self.history.policy(key)) {
            // Numbered in Redis, and delivered from there to every node, this one included: each
            // node gets a group's frames in offset order.
            link.publish_history(key, policy, delivery, exclude);
            return self.groups.get(key).map_or(0, |members| members.keys().filter(|id| Some(**id) != exclude).count());
        }
        if let Some(mut stream) = self.history.stream(key) {
            // Numbered and fanned out under the stream's lock: members get a group's frames in
            // offset order, and a recovering join sees each frame either in its replay or live.
            let positioned = stream.append(&key.name, delivery, None);
            return self.broadcast_local(key, &positioned, exclude);
        }
        if let Some(link) = &self.cluster {
            link.publish_group(key, delivery, exclude);
        }
        self.broadcast_local(key, delivery, exclude)
    }

    /// A publish from the HTTP API: broadcast like any other, numbered when the group keeps
    /// history, and with `idempotency`, not broadcast again when a publish within the history's
    /// TTL named the same key (its offset is answered).
    pub async fn publish(
        &self,
        key: &GroupKey,
        delivery: &Delivery,
        idempotency: Option<&str>,
    ) -> Result<Published, PublishError> {
        let policy = self.history.policy(key);
        if idempotency.is_some() && policy.is_none() {
            return Err(PublishError::NoHistory);
        }
        if let (Some(link), Some(policy)) = (&self.cluster, policy) {
            let (offset, epoch, duplicate) = link.append_now(key, policy, delivery, idempotency).await?;
            let delivered = if duplicate { 0 } else { self.groups.get(key).map_or(0, |members| members.len()) };
            return Ok(Published { delivered, position: Some((epoch, offset)), duplicate });
        }
        let Some(mut stream) = self.history.stream(key) else {
            return Ok(Published { delivered: self.broadcast(key, delivery, None), position: None, duplicate: false });
        };
        if let Some(offset) = idempotency.and_then(|k| stream.published(k)) {
            let epoch = stream.position().0.to_owned();
            return Ok(Published { delivered: 0, position: Some((epoch, offset)), duplicate: true });
        }
        let positioned = stream.append(&key.name, delivery, idempotency);
        let (epoch, offset) = stream.position();
        let position = Some((epoch.to_owned(), offset));
        Ok(Published { delivered: self.broadcast_local(key, &positioned, None), position, duplicate: false })
    }

    /// Queues `delivery` for this node's members of a group but `exclude`.
    ///
    /// Queueing never waits (slow members are closed, see [`Handle::try_send`]), so holding the
    /// group's read lock here delays joins to this group by microseconds, and sockets not at all.
    pub fn broadcast_local(&self, key: &GroupKey, delivery: &Delivery, exclude: Option<ConnectionId>) -> usize {
        let Some(members) = self.groups.get(key) else { return 0 };
        // Members recovering in a cluster get their frames from the replay until it arrives.
        let held = if self.held.is_empty() { None } else { self.held.get(key) };
        let mut reached = 0;
        for (id, handle) in members.iter() {
            if held.as_ref().is_some_and(|held| held.contains(id)) {
                continue;
            }
            if Some(*id) != exclude && handle.try_send(delivery.for_handle(handle)).is_ok() {
                reached += 1;
            }
        }
        reached
    }

    /// A group's members, on every live node; this node's alone while Redis does not answer.
    pub async fn members(&self, key: &GroupKey) -> Vec<ConnectionId> {
        let mut members = self.local_members(key);
        let Some(link) = &self.cluster else { return members };
        match link.remote_members(key).await {
            Ok(remote) => {
                members.extend(remote);
                members.sort_unstable();
            }
            Err(error) => tracing::debug!(group = %key, %error, "listing this node's members only"),
        }
        members
    }

    fn local_members(&self, key: &GroupKey) -> Vec<ConnectionId> {
        let mut members: Vec<ConnectionId> =
            self.groups.get(key).map(|members| members.keys().copied().collect()).unwrap_or_default();
        members.sort_unstable();
        members
    }

    /// Every group with members on this node, with them: what a node tells the cluster anew.
    pub fn local_groups(&self) -> Vec<(GroupKey, Vec<ConnectionId>)> {
        self.groups.iter().map(|group| (group.key().clone(), group.keys().copied().collect())).collect()
    }
}

/// Tells a recovering member what its recovery found, then gives it the frames it missed. A queue
/// The replay is one item of its queue: only its bytes count against `outbound_queue_bytes`, past
/// which the client is closed as a slow consumer, as a burst would.
fn deliver_replay(handle: &Handle, recovery: &Recovery, frames: Vec<Arc<Delivery>>) {
    let told = serde_json::json!({"action": "recovered", "payload": recovery}).to_string();
    if handle.try_send(told.into()).is_ok() {
        let _ = handle.try_send_all(frames.iter().map(|frame| frame.for_handle(handle)).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::outbound;

    fn connect(registry: &Registry) -> (ConnectionId, outbound::Queue) {
        let bounds = outbound::Bounds { max_frames: 8, max_bytes: 1 << 20, slow_closes: Default::default() };
        let (handle, queue) = outbound::queue(&bounds, false);
        (registry.register(handle, Arc::from("/ws"), None, Vec::new()), queue)
    }

    fn registry(max_groups_per_connection: usize) -> Registry {
        Registry::new(Limits { max_groups_per_connection, session_bytes: 64 }, None)
    }

    fn key(name: &str) -> GroupKey {
        GroupKey::new(&Arc::from("chat"), name)
    }

    #[tokio::test]
    async fn closing_leaves_every_group_and_empty_groups_vanish() {
        let registry = registry(10);
        let (a, _qa) = connect(&registry);
        let (b, _qb) = connect(&registry);
        registry.join(a, key("room1")).await.unwrap();
        registry.join(a, key("room2")).await.unwrap();
        registry.join(b, key("room1")).await.unwrap();
        assert_eq!(registry.members(&key("room1")).await, vec![a, b]);
        registry.remove(a);
        assert_eq!(registry.members(&key("room1")).await, vec![b]);
        assert_eq!(registry.group_count(), 1);
        registry.leave(b, &key("room1"));
        assert_eq!((registry.group_count(), registry.membership_count()), (0, 0));
        assert_eq!(registry.join(a, key("room1")).await, Err(JoinError::Closed));
    }

    #[test]
    fn a_shutdown_reaches_every_connection_and_those_that_register_after_it() {
        let registry = registry(10);
        let bounds = outbound::Bounds { max_frames: 8, max_bytes: 1 << 20, slow_closes: Default::default() };
        let (before, _qb) = outbound::queue(&bounds, false);
        registry.register(before.clone(), Arc::from("/ws"), None, Vec::new());
        assert!(!before.control().is_shutting_down());
        registry.shut_down();
        assert!(before.control().is_shutting_down());
        let (after, _qa) = outbound::queue(&bounds, false);
        registry.register(after.clone(), Arc::from("/ws"), None, Vec::new());
        assert!(after.control().is_shutting_down(), "registered mid-shutdown");
        assert!(!after.control().is_closing(), "its read loop closes it, after the message it is handling");
    }

    #[tokio::test]
    async fn broadcast_skips_the_excluded_and_counts_the_reached() {
        let registry = registry(10);
        let (a, mut qa) = connect(&registry);
        let (b, mut qb) = connect(&registry);
        registry.join(a, key("r")).await.unwrap();
        registry.join(b, key("r")).await.unwrap();
        let delivery = Delivery::new(r#"{"action":"x"}"#.into(), a.to_string());
        assert_eq!(registry.broadcast(&key("r"), &delivery, Some(a)), 1);
        assert!(qa.try_recv().is_err());
        assert!(matches!(qb.try_recv(), Ok(outbound::Outbound::Frame(..))));
    }

    #[tokio::test]
    async fn limits_on_names_and_groups_per_connection() {
        let registry = registry(2);
        let (a, _q) = connect(&registry);
        assert_eq!(registry.join(a, key("")).await, Err(JoinError::InvalidName));
        registry.join(a, key("1")).await.unwrap();
        registry.join(a, key("2")).await.unwrap();
        registry.join(a, key("2")).await.unwrap();
        assert_eq!(registry.join(a, key("3")).await, Err(JoinError::TooManyGroups(2)));
        assert_eq!(GroupKey::parse("chat:room1"), Some(key("room1")));
        assert_eq!(GroupKey::parse("room1"), None);
    }
}
