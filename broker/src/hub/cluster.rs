//! Several nodes as one service, through Redis (`[cluster] backend = "redis"`).
//!
//! - **Broadcasts.** Members on this node get the frame at once; other nodes get it through the
//!   group's channel, which a node subscribes to only while it has members of the group. One
//!   publisher task sends everything in the order it was queued (pipelined), and Redis delivers a
//!   channel in order, so one sender's frames keep their order everywhere. A node skips what it
//!   published itself (its members already have it): every member gets a frame once.
//! - **Connection ids.** A node takes a number from Redis at start and puts it in the top bits of
//!   its connection ids, so ids are unique across nodes and name the node a connection is on;
//!   `send` to a connection on another node goes through that node's inbox channel.
//! - **Presence.** Each node keeps its members of a group in its own set, lists in the group's index
//!   that it has one, and refreshes its alive key every heartbeat. Sets of nodes whose alive key
//!   expired are not listed, and are cleaned up by whoever reads them.
//! - **Outages.** While Redis does not answer, local delivery goes on; frames for other nodes are
//!   dropped and counted (`broker_cluster_dropped_total`) once Redis has not taken them within
//!   `CALL_TIMEOUT` (a Redis back within it still gets them), key-value calls fail with `unavailable`,
//!   and `members` lists this node's members. When Redis answers again the node writes its presence
//!   anew and subscribes again.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config;
use crate::hub::history::{self, Outcome, Policy, Position, Recovery};
use crate::hub::metrics::Metrics;
use crate::hub::outbound::Delivery;
use crate::hub::registry::{ConnectionId, GroupKey, Registry};

/// Connection ids carry their node's number above this bit.
const NODE_SHIFT: u32 = 44;
/// Node numbers wrap below this (20 bits): a number is reused only after a million starts.
const NODE_NUMBERS: u64 = (1 << (64 - NODE_SHIFT)) - 1;
/// Frames waiting for the publisher beyond which new ones are dropped (and counted) rather than
/// queued: a Redis slower than the traffic must not grow the broker's memory without bound.
const MAX_BACKLOG: usize = 1 << 16;
/// Longest a plugin or API call waits on Redis before it is told the store is unavailable.
const CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// The node a connection id belongs to (0 on a single node).
pub fn node_of(id: ConnectionId) -> u64 {
    id >> NODE_SHIFT
}

/// Why Redis could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {} ms", CALL_TIMEOUT.as_millis())]
    Timeout,
}

/// Appends a frame to a group's history and publishes it, in one step: no frame is published
/// without its offset, none recorded without being published. KEYS: the stream, the group's
/// `epoch`/`top` hash. ARGV: channel, message header, the group's name as JSON, the frame after its
/// position keys, size, ttl_ms, meta_ttl_ms, an epoch for a group without one, the sender (for
/// metadata stamps on a replay). An optional KEYS[3] is an idempotency key: a publish naming it
/// again within the TTL is not appended nor published, and gets the first one's offset.
/// Returns `{offset, epoch, duplicate}`.
const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[8]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
end
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then return {tonumber(first), epoch, 1} end
end
local offset = redis.call('HINCRBY', KEYS[2], 'top', 1)
local frame = '{"group":' .. ARGV[3] .. ',"offset":' .. offset .. ',"epoch":"' .. epoch .. '"' .. ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[5], '*', 'o', offset, 'f', frame, 's', ARGV[9])
redis.call('XTRIM', KEYS[1], 'MINID', now - tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
if KEYS[3] then redis.call('SET', KEYS[3], offset, 'PX', ARGV[6]) end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. frame)
return {offset, epoch, 0}"#;

/// Reads what a client missed and queues it, as one message on its node's inbox, behind every
/// frame of the group published so far and before any published later. KEYS: the stream, the
/// hash. ARGV: inbox, message header, the client's epoch and offset, ttl_ms, meta_ttl_ms, an epoch
/// for a group without one. The message: `outcome\nepoch\ntop\n` (1: complete, 0: frames are gone,
/// 2: another epoch), then each frame as
/// `<bytes>:<sender><bytes>:<frame>`.
const RECOVER: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
end
local top = tonumber(redis.call('HGET', KEYS[2], 'top'))
local from = tonumber(ARGV[4])
local out = {}
local recovered = 0
if epoch ~= ARGV[3] then
  recovered = 2
elseif from <= top then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local expect = from + 1
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], now - tonumber(ARGV[5]), '+')) do
    local offset = tonumber(entry[2][2])
    if offset >= expect then
      if offset ~= expect then break end
      local frame, sender = entry[2][4], entry[2][6]
      table.insert(out, string.len(sender) .. ':' .. sender .. string.len(frame) .. ':' .. frame)
      expect = expect + 1
    end
  end
  if expect == top + 1 then recovered = 1 else out = {} end
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. recovered .. '\n' .. epoch .. '\n' .. top .. '\n' .. table.concat(out))
return recovered"#;

/// Reads a group's history for a plugin: its epoch (given one, as [`RECOVER`] does, when it has
/// none), its last offset, and the frames kept after an offset, or the newest. KEYS: the stream,
/// the hash. ARGV: the offset to read after (empty: the newest), the most frames, ttl_ms,
/// meta_ttl_ms, an epoch for a group without one. Returns `epoch, top, offset, frame, offset,
/// frame, ...`, oldest first.
const READ: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'top', 0)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
local out = {epoch, redis.call('HGET', KEYS[2], 'top')}
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest = math.max(0, now - tonumber(ARGV[3]))
if limit > 0 and ARGV[1] == '' then
  local entries = redis.call('XREVRANGE', KEYS[1], '+', oldest, 'COUNT', limit)
  for i = #entries, 1, -1 do
    table.insert(out, entries[i][2][2])
    table.insert(out, entries[i][2][4])
  end
elseif limit > 0 then
  local after = tonumber(ARGV[1])
  for _, entry in ipairs(redis.call('XRANGE', KEYS[1], oldest, '+')) do
    if tonumber(entry[2][2]) > after then
      table.insert(out, entry[2][2])
      table.insert(out, entry[2][4])
      if #out >= 2 + 2 * limit then break end
    end
  end
end
return out"#;

/// The first line of a replay on a node's inbox, where other messages start with a node number.
const REPLAY: &str = "replay";

/// What the publisher task sends, in queue order.
enum Op {
    Publish {
        channel: String,
        message: Vec<u8>,
    },
    /// A broadcast into a group with history ([`APPEND`]).
    Append(redis::Cmd),
    Joined {
        key: GroupKey,
        id: ConnectionId,
        first: bool,
        done: Option<oneshot::Sender<()>>,
    },
    Left {
        key: GroupKey,
        id: ConnectionId,
        last: bool,
    },
    /// Write this node's presence and subscriptions anew (after Redis lost them or missed some).
    Reannounce,
    /// The node is shutting down: stop listing it at once rather than after its TTL.
    Depart {
        done: oneshot::Sender<()>,
    },
}

/// This node's link to the cluster: held by the registry and the key-value store.
pub struct Link {
    /// This node's number, in the top bits of its connection ids.
    pub node: u64,
    /// This node's name, for logs and the alive key.
    pub name: String,
    prefix: String,
    redis: ConnectionManager,
    ops: mpsc::UnboundedSender<Op>,
    /// Redis answered the last operation; while false, frames for other nodes are dropped at once.
    up: AtomicBool,
    /// Presence or subscriptions may be missing in Redis: an operation on them failed.
    dirty: AtomicBool,
    /// Shutting down: the heartbeat stops.
    departed: AtomicBool,
    /// Frames queued for the publisher and not yet taken.
    backlog: AtomicUsize,
    metrics: Arc<Metrics>,
    heartbeat: Duration,
    node_ttl: Duration,
}

/// The tasks that serve a link, started once the registry exists.
pub struct Tasks {
    link: Arc<Link>,
    ops: mpsc::UnboundedReceiver<Op>,
    pushes: mpsc::UnboundedReceiver<PushInfo>,
}

impl Link {
    /// Connects to Redis, takes a node number and announces the node; fails when Redis does not
    /// answer, so a misconfigured node does not start alone.
    pub async fn connect(config: &config::Cluster, metrics: Arc<Metrics>) -> Result<(Arc<Link>, Tasks), ClusterError> {
        let url = config.redis_url();
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
        // Subscriptions share the command connection, which RESP3 allows.
        let redis_settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(redis_settings))?;
        let (push_tx, pushes) = mpsc::unbounded_channel();
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_automatic_resubscription()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let mut redis =
            tokio::time::timeout(CALL_TIMEOUT * 5, client.get_connection_manager_with_config(manager_config))
                .await
                .map_err(|_| ClusterError::Timeout)??;
        let prefix = config.key_prefix.clone();
        let seq: u64 = redis.incr(format!("{prefix}:node-seq"), 1).await?;
        let node = (seq - 1) % NODE_NUMBERS + 1;
        let (ops_tx, ops) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            node,
            name: config.node_id(),
            prefix,
            redis,
            ops: ops_tx,
            up: AtomicBool::new(true),
            dirty: AtomicBool::new(false),
            departed: AtomicBool::new(false),
            backlog: AtomicUsize::new(0),
            metrics,
            heartbeat: Duration::from_millis(config.heartbeat_ms),
            node_ttl: Duration::from_millis(config.node_ttl_ms),
        });
        link.beat().await?;
        let mut subscriber = link.redis.clone();
        subscriber.subscribe(link.inbox(node)).await?;
        link.metrics.cluster.redis_up.set(1);
        tracing::info!(node = link.node, name = %link.name, "joined the cluster through Redis");
        Ok((link.clone(), Tasks { link, ops, pushes }))
    }

    /// The first connection id of this node.
    pub fn first_id(&self) -> ConnectionId {
        self.node << NODE_SHIFT
    }

    fn group_channel(&self, key: &GroupKey) -> String {
        format!("{}:g:{}:{}", self.prefix, key.namespace, key.name)
    }

    fn inbox(&self, node: u64) -> String {
        format!("{}:to:{node}", self.prefix)
    }

    fn alive_key(&self, node: u64) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// This node's members of a group.
    fn members_key(&self, key: &GroupKey, node: u64) -> String {
        format!("{}:m:{}:{}:{node}", self.prefix, key.namespace, key.name)
    }

    /// The nodes with members of a group.
    fn index_key(&self, key: &GroupKey) -> String {
        format!("{}:gn:{}:{}", self.prefix, key.namespace, key.name)
    }

    /// The groups this node has a members set for, to clean up after an outage.
    fn own_groups_key(&self) -> String {
        format!("{}:ng:{}", self.prefix, self.node)
    }

    /// A group's history: the stream of its frames, and the hash of its epoch and last offset.
    fn history_keys(&self, key: &GroupKey) -> (String, String) {
        (
            format!("{}:h:{}:{}", self.prefix, key.namespace, key.name),
            format!("{}:hm:{}:{}", self.prefix, key.namespace, key.name),
        )
    }

    fn kv_key(&self, namespace: &str, key: &str) -> String {
        format!("{}:kv:{namespace}:{key}", self.prefix)
    }

    /// Refreshes the alive key; true when Redis still had it (nothing was lost).
    async fn beat(&self) -> Result<bool, ClusterError> {
        let mut redis = self.redis.clone();
        let previous: Option<String> = within(
            redis::cmd("SET")
                .arg(self.alive_key(self.node))
                .arg(&self.name)
                .arg("PX")
                .arg(ttl_ms(self.node_ttl))
                .arg("GET")
                .query_async(&mut redis),
        )
        .await?;
        Ok(previous.is_some())
    }

    fn queue(&self, op: Op) {
        // The receiver lives as long as the process: a send fails only at shutdown.
        let _ = self.ops.send(op);
    }

    /// Sends a broadcast to the other nodes (this node's members already have it).
    pub fn publish_group(&self, key: &GroupKey, delivery: &Delivery, exclude: Option<ConnectionId>) {
        self.publish(self.group_channel(key), encode(self.node, exclude.unwrap_or(0), delivery));
    }

    /// Sends a broadcast into a group with history to Redis, which numbers it and publishes it to
    /// every node with members, this one included (origin 0: no node skips it).
    pub fn publish_history(&self, key: &GroupKey, policy: Policy, delivery: &Delivery, exclude: Option<ConnectionId>) {
        if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            self.metrics.cluster.dropped("backlog", 1);
            return;
        }
        self.queue(Op::Append(self.append_command(key, policy, delivery, exclude, None)));
    }

    /// The [`APPEND`] script for a broadcast of `delivery` into `key` (excluding `exclude` on
    /// delivery), with an idempotency key when given.
    fn append_command(
        &self,
        key: &GroupKey,
        policy: Policy,
        delivery: &Delivery,
        exclude: Option<ConnectionId>,
        idempotency: Option<&str>,
    ) -> redis::Cmd {
        let (stream, meta) = self.history_keys(key);
        let mut script = redis::cmd("EVAL");
        script.arg(APPEND).arg(if idempotency.is_some() { 3 } else { 2 }).arg(stream).arg(meta);
        if let Some(idempotency) = idempotency {
            script.arg(format!("{}:idem:{}:{}:{idempotency}", self.prefix, key.namespace, key.name));
        }
        script
            .arg(self.group_channel(key))
            .arg(format!("0\n{}\n{}\n", exclude.unwrap_or(0), delivery.sender()))
            .arg(serde_json::Value::from(key.name.as_str()).to_string())
            .arg(history::position_tail(delivery.frame()))
            .arg(policy.size)
            .arg(ttl_ms(policy.ttl))
            .arg(ttl_ms(policy.meta_ttl))
            .arg(history::new_epoch().as_ref())
            .arg(delivery.sender());
        script
    }

    /// Appends and publishes a frame from the publish API at once, waiting for its offset; with
    /// `idempotency`, a retry within the TTL gets the first publish's offset and is not published
    /// again. Returns the offset, the epoch and whether it was such a retry.
    pub async fn append_now(
        &self,
        key: &GroupKey,
        policy: Policy,
        delivery: &Delivery,
        idempotency: Option<&str>,
    ) -> Result<(u64, String, bool), ClusterError> {
        let script = self.append_command(key, policy, delivery, None, idempotency);
        let (offset, epoch, duplicate): (u64, String, u64) =
            within(script.query_async(&mut self.redis.clone())).await?;
        Ok((offset, epoch, duplicate == 1))
    }

    /// Asks Redis for what connection `id` missed in a group since `from`; the answer comes as a
    /// replay on this node's inbox (see [`Registry::replayed`]). The node must be subscribed to
    /// the group already.
    pub async fn recover(
        &self,
        key: &GroupKey,
        id: ConnectionId,
        from: &Position,
        policy: Policy,
    ) -> Result<(), ClusterError> {
        let (stream, meta) = self.history_keys(key);
        let mut script = redis::cmd("EVAL");
        script
            .arg(RECOVER)
            .arg(2)
            .arg(stream)
            .arg(meta)
            .arg(self.inbox(self.node))
            .arg(format!("{REPLAY}\n{id}\n{key}\n"))
            .arg(&from.epoch)
            .arg(from.offset)
            .arg(ttl_ms(policy.ttl))
            .arg(ttl_ms(policy.meta_ttl))
            .arg(history::new_epoch().as_ref());
        let _: u64 = within(script.query_async(&mut self.redis.clone())).await?;
        Ok(())
    }

    /// A page of a group's history, read from Redis in one step (see [`READ`]).
    pub async fn read_history(
        &self,
        key: &GroupKey,
        policy: Policy,
        after: Option<u64>,
        limit: usize,
    ) -> Result<history::Page, ClusterError> {
        let (stream, meta) = self.history_keys(key);
        let mut script = redis::cmd("EVAL");
        script
            .arg(READ)
            .arg(2)
            .arg(stream)
            .arg(meta)
            .arg(after.map_or(String::new(), |after| after.to_string()))
            .arg(limit)
            .arg(ttl_ms(policy.ttl))
            .arg(ttl_ms(policy.meta_ttl))
            .arg(history::new_epoch().as_ref());
        let answer: Vec<String> = within(script.query_async(&mut self.redis.clone())).await?;
        let mut answer = answer.into_iter();
        let not_ours =
            || redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "a history read that does not parse"));
        let epoch = answer.next().ok_or_else(not_ours)?;
        let offset = answer.next().and_then(|top| top.parse().ok()).ok_or_else(not_ours)?;
        let mut entries = Vec::new();
        while let (Some(offset), Some(frame)) = (answer.next(), answer.next()) {
            entries.push((offset.parse().map_err(|_| not_ours())?, frame));
        }
        Ok(history::Page { epoch, offset, entries })
    }

    /// Sends a frame to a connection of another node.
    pub fn publish_direct(&self, id: ConnectionId, delivery: &Delivery) {
        self.publish(self.inbox(node_of(id)), encode(self.node, id, delivery));
    }

    fn publish(&self, channel: String, message: Vec<u8>) {
        if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            self.metrics.cluster.dropped("backlog", 1);
            return;
        }
        self.queue(Op::Publish { channel, message });
    }

    /// Records a join in Redis (and subscribes for the first local member); returns once done, or
    /// after the call timeout when Redis does not answer (the join stands locally either way).
    pub async fn joined(&self, key: GroupKey, id: ConnectionId, first: bool) {
        let (done, wait) = oneshot::channel();
        self.queue(Op::Joined { key, id, first, done: Some(done) });
        let _ = tokio::time::timeout(CALL_TIMEOUT, wait).await;
    }

    /// Takes this node out of the cluster after its connections closed: the leaves queued before
    /// are written, then its alive key is removed. Waits at most the call timeout.
    pub async fn depart(&self) {
        self.departed.store(true, Ordering::Relaxed);
        let (done, wait) = oneshot::channel();
        self.queue(Op::Depart { done });
        let _ = tokio::time::timeout(CALL_TIMEOUT, wait).await;
    }

    /// Records a leave (and unsubscribes when the last local member left).
    pub fn left(&self, key: GroupKey, id: ConnectionId, last: bool) {
        self.queue(Op::Left { key, id, last });
    }

    /// The members of a group on the other live nodes (this node's are the registry's).
    pub async fn remote_members(&self, key: &GroupKey) -> Result<Vec<ConnectionId>, ClusterError> {
        let mut remote = Vec::new();
        let mut redis = self.redis.clone();
        let nodes: Vec<u64> = within(redis.smembers(self.index_key(key))).await?;
        let others: Vec<u64> = nodes.into_iter().filter(|n| *n != self.node).collect();
        if !others.is_empty() {
            let alive_keys: Vec<String> = others.iter().map(|n| self.alive_key(*n)).collect();
            let alive: Vec<Option<String>> = within(redis.mget(&alive_keys)).await?;
            let (live, dead): (Vec<(u64, Option<String>)>, Vec<_>) =
                others.into_iter().zip(alive).partition(|(_, alive)| alive.is_some());
            if !live.is_empty() {
                let mut read = redis::pipe();
                for (node, _) in &live {
                    read.smembers(self.members_key(key, *node));
                }
                let sets: Vec<Vec<ConnectionId>> = within(read.query_async(&mut redis)).await?;
                remote.extend(sets.into_iter().flatten());
            }
            if !dead.is_empty() {
                // Whoever reads first cleans up after a dead node; failing here changes nothing read.
                let mut clean = redis::pipe();
                for (node, _) in &dead {
                    clean.del(self.members_key(key, *node)).ignore().srem(self.index_key(key), *node).ignore();
                }
                let _: Result<(), _> = within(clean.query_async(&mut redis)).await;
            }
        }
        Ok(remote)
    }

    pub async fn kv_get(&self, namespace: &str, key: &str) -> Result<Option<String>, ClusterError> {
        within(self.redis.clone().get(self.kv_key(namespace, key))).await
    }

    pub async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), ClusterError> {
        let mut set = redis::cmd("SET");
        set.arg(self.kv_key(namespace, key)).arg(value);
        if let Some(ttl) = ttl {
            set.arg("PX").arg(ttl_ms(ttl));
        }
        within(set.query_async(&mut self.redis.clone())).await
    }

    pub async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, ClusterError> {
        let removed: u64 = within(self.redis.clone().del(self.kv_key(namespace, key))).await?;
        Ok(removed > 0)
    }

    /// Compare-and-swap as one Lua script, so it is atomic across nodes.
    pub async fn kv_compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<&str>,
        new: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<bool, ClusterError> {
        const SCRIPT: &str = r#"
            local current = redis.call('GET', KEYS[1])
            if ARGV[1] == '1' then
                if current ~= ARGV[2] then return 0 end
            elseif current then
                return 0
            end
            if ARGV[3] == '1' then
                if ARGV[5] ~= '0' then
                    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
                else
                    redis.call('SET', KEYS[1], ARGV[4])
                end
            else
                redis.call('DEL', KEYS[1])
            end
            return 1"#;
        let flag = |present: bool| if present { "1" } else { "0" };
        let mut script = redis::cmd("EVAL");
        script
            .arg(SCRIPT)
            .arg(1)
            .arg(self.kv_key(namespace, key))
            .arg(flag(expected.is_some()))
            .arg(expected.unwrap_or(""))
            .arg(flag(new.is_some()))
            .arg(new.as_deref().unwrap_or(""))
            .arg(ttl.map_or(0, ttl_ms));
        let swapped: u64 = within(script.query_async(&mut self.redis.clone())).await?;
        Ok(swapped == 1)
    }

    /// Whether Redis answered the last operation.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.cluster.redis_up.set(i64::from(up));
            if up {
                tracing::info!(node = self.node, "Redis answers again");
            } else {
                tracing::warn!(
                    node = self.node,
                    "Redis does not answer: frames for other nodes are dropped until it does"
                );
            }
        }
    }
}

impl Tasks {
    /// Starts the publisher, the subscriber and the heartbeat; each ends when the registry is gone.
    pub fn spawn(self, registry: &Arc<Registry>) {
        let Tasks { link, ops, pushes } = self;
        tokio::spawn(publish(link.clone(), Arc::downgrade(registry), ops));
        tokio::spawn(receive(link.clone(), Arc::downgrade(registry), pushes));
        tokio::spawn(heartbeat(link));
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    // Redis refuses PX 0; the shortest TTL it takes is 1 ms.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

async fn within<T>(call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, ClusterError> {
    Ok(tokio::time::timeout(CALL_TIMEOUT, call).await.map_err(|_| ClusterError::Timeout)??)
}

/// `origin\ntarget\nsender\nframe`: the publishing node, the excluded (broadcast) or addressed
/// (direct) connection or 0, the sender for metadata stamps, and the frame as serialized once.
fn encode(origin: u64, target: ConnectionId, delivery: &Delivery) -> Vec<u8> {
    let (frame, sender) = (delivery.frame(), delivery.sender());
    let mut message = Vec::with_capacity(frame.len() + sender.len() + 48);
    message.extend_from_slice(format!("{origin}\n{target}\n{sender}\n").as_bytes());
    message.extend_from_slice(frame.as_bytes());
    message
}

fn decode(message: &[u8]) -> Option<(u64, ConnectionId, Delivery)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.splitn(4, '\n');
    let origin = parts.next()?.parse().ok()?;
    let target = parts.next()?.parse().ok()?;
    let sender = parts.next()?.to_owned();
    let frame = parts.next()?.to_owned();
    Some((origin, target, Delivery::new(frame, sender)))
}

/// A replay's `id\nnamespace:group\nrecovered\nepoch\ntop\n` and frames as
/// `<bytes>:<sender><bytes>:<frame>`.
#[allow(clippy::type_complexity)]
fn decode_replay(message: &[u8]) -> Option<(GroupKey, ConnectionId, Recovery, Vec<Arc<Delivery>>, Outcome)> {
    let text = std::str::from_utf8(message).ok()?;
    let mut parts = text.splitn(6, '\n');
    let id = parts.next()?.parse().ok()?;
    let key = GroupKey::parse(parts.next()?)?;
    let outcome = match parts.next()? {
        "1" => Outcome::Complete,
        "2" => Outcome::EpochChanged,
        _ => Outcome::TooOld,
    };
    let recovered = outcome == Outcome::Complete;
    let epoch = parts.next()?.to_owned();
    let offset = parts.next()?.parse().ok()?;
    let mut rest = parts.next()?;
    let mut frames = Vec::new();
    // Each piece is `<bytes>:<text>`: a sender, then its frame.
    let mut piece = || -> Option<String> {
        let (len, after) = rest.split_once(':')?;
        let len: usize = len.parse().ok()?;
        let text = after.get(..len)?.to_owned();
        rest = after.get(len..)?;
        Some(text)
    };
    while let Some(sender) = piece() {
        frames.push(Arc::new(Delivery::new(piece()?, sender)));
    }
    let recovery = Recovery { group: key.name.clone(), recovered, epoch, offset, replayed: frames.len() };
    Some((key, id, recovery, frames, outcome))
}

/// Sends the queued operations in order, each batch as one pipeline.
async fn publish(link: Arc<Link>, registry: Weak<Registry>, mut ops: mpsc::UnboundedReceiver<Op>) {
    let mut batch = Vec::new();
    while ops.recv_many(&mut batch, 4096).await > 0 {
        let Some(registry) = registry.upgrade() else { return };
        let mut pipe = redis::pipe();
        let (mut published, mut presence, mut done) = (0u64, 0u64, Vec::new());
        // The last word on each channel in this batch: subscribe (true) or unsubscribe.
        let mut channels: Vec<(String, bool)> = Vec::new();
        for op in batch.drain(..) {
            match op {
                Op::Publish { channel, message } => {
                    link.backlog.fetch_sub(1, Ordering::Relaxed);
                    pipe.publish(channel, message).ignore();
                    published += 1;
                }
                Op::Append(script) => {
                    link.backlog.fetch_sub(1, Ordering::Relaxed);
                    pipe.add_command(script).ignore();
                    published += 1;
                }
                Op::Joined { key, id, first, done: ack } => {
                    pipe.sadd(link.members_key(&key, link.node), id).ignore();
                    if first {
                        pipe.sadd(link.index_key(&key), link.node).ignore();
                        pipe.sadd(link.own_groups_key(), key.to_string()).ignore();
                        channels.push((link.group_channel(&key), true));
                    }
                    presence += 1;
                    done.extend(ack);
                }
                Op::Left { key, id, last } => {
                    if last {
                        pipe.del(link.members_key(&key, link.node)).ignore();
                        pipe.srem(link.index_key(&key), link.node).ignore();
                        pipe.srem(link.own_groups_key(), key.to_string()).ignore();
                        channels.push((link.group_channel(&key), false));
                    } else {
                        pipe.srem(link.members_key(&key, link.node), id).ignore();
                    }
                    presence += 1;
                }
                Op::Reannounce => {
                    reannounce(&link, &registry, &mut pipe, &mut channels).await;
                    presence += 1;
                }
                Op::Depart { done: ack } => {
                    pipe.del(link.alive_key(link.node)).ignore().del(link.own_groups_key()).ignore();
                    done.push(ack);
                }
            }
        }
        drop(registry);
        let mut ok = link.up.load(Ordering::Relaxed);
        if ok {
            // Subscribing before the pipeline runs means a member that joined hears every frame
            // published after its join returned.
            let mut redis = link.redis.clone();
            let last: std::collections::HashMap<String, bool> = channels.into_iter().collect();
            let (subscribe, unsubscribe): (Vec<_>, Vec<_>) = last.into_iter().partition(|(_, on)| *on);
            let names = |channels: Vec<(String, bool)>| channels.into_iter().map(|(c, _)| c).collect::<Vec<_>>();
            let (subscribe, unsubscribe) = (names(subscribe), names(unsubscribe));
            if !subscribe.is_empty() {
                ok &= within(redis.subscribe(&subscribe)).await.is_ok();
            }
            ok &= within(pipe.query_async::<()>(&mut redis)).await.is_ok();
            if ok && !unsubscribe.is_empty() {
                ok &= within(redis.unsubscribe(&unsubscribe)).await.is_ok();
            }
        }
        if ok {
            link.metrics.cluster.published.inc_by(published);
        } else {
            link.set_up(false);
            link.dirty.store(true, Ordering::Relaxed);
            link.metrics.cluster.dropped("publish", published);
            link.metrics.cluster.dropped("presence", presence);
        }
        for ack in done {
            let _ = ack.send(());
        }
    }
}

/// Queues this node's whole presence into `pipe`: its sets rewritten from the registry, the sets of
/// groups it has left removed, every group's channel subscribed again.
async fn reannounce(link: &Link, registry: &Registry, pipe: &mut redis::Pipeline, channels: &mut Vec<(String, bool)>) {
    let groups = registry.local_groups();
    let current: HashSet<String> = groups.iter().map(|(key, _)| key.to_string()).collect();
    let recorded: Vec<String> = within(link.redis.clone().smembers(link.own_groups_key())).await.unwrap_or_default();
    for stale in recorded.iter().filter(|g| !current.contains(*g)) {
        if let Some(key) = GroupKey::parse(stale) {
            pipe.del(link.members_key(&key, link.node)).ignore();
            pipe.srem(link.index_key(&key), link.node).ignore();
        }
    }
    pipe.del(link.own_groups_key()).ignore();
    for (key, members) in &groups {
        let set = link.members_key(key, link.node);
        pipe.del(&set).ignore().sadd(&set, members).ignore();
        pipe.sadd(link.index_key(key), link.node).ignore();
        pipe.sadd(link.own_groups_key(), key.to_string()).ignore();
        channels.push((link.group_channel(key), true));
    }
    channels.push((link.inbox(link.node), true));
}

/// Delivers what other nodes published to this node's members.
async fn receive(link: Arc<Link>, registry: Weak<Registry>, mut pushes: mpsc::UnboundedReceiver<PushInfo>) {
    let inbox = link.inbox(link.node);
    let groups = format!("{}:g:", link.prefix);
    while let Some(push) = pushes.recv().await {
        let Some(registry) = registry.upgrade() else { return };
        if push.kind != PushKind::Message {
            continue;
        }
        let [Value::BulkString(channel), Value::BulkString(message)] = push.data.as_slice() else { continue };
        if let Some(replay) = message.strip_prefix(format!("{REPLAY}\n").as_bytes()) {
            match decode_replay(replay) {
                Some((key, id, recovery, frames, outcome)) => {
                    registry.replayed(&key, id, recovery, frames, Some(outcome));
                }
                None => tracing::warn!("a replay from Redis that does not parse"),
            }
            continue;
        }
        let (Ok(channel), Some((origin, target, delivery))) = (std::str::from_utf8(channel), decode(message)) else {
            tracing::warn!("a cluster message that is not ours; is another program using the key prefix?");
            continue;
        };
        if origin == link.node {
            continue;
        }
        link.metrics.cluster.received.inc();
        if channel == inbox {
            let _ = registry.send_local(target, &delivery);
        } else if let Some(key) = channel.strip_prefix(&groups).and_then(GroupKey::parse) {
            registry.broadcast_local(&key, &delivery, (target != 0).then_some(target));
        }
    }
}

/// Keeps this node listed, and notices when Redis lost what it was told.
async fn heartbeat(link: Arc<Link>) {
    let mut every = tokio::time::interval(link.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if Arc::strong_count(&link) == 1 || link.departed.load(Ordering::Relaxed) {
            return;
        }
        match link.beat().await {
            Ok(kept) => {
                link.set_up(true);
                // A Redis that restarted, or that expired this node during a long pause, forgot
                // its presence; a failed operation may have left it behind.
                if !kept | link.dirty.swap(false, Ordering::Relaxed) {
                    tracing::info!(node = link.node, "writing this node's presence to Redis again");
                    link.queue(Op::Reannounce);
                }
            }
            Err(error) => {
                tracing::debug!(node = link.node, %error, "heartbeat failed");
                link.set_up(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_origin_target_sender_and_frame() {
        let delivery = Delivery::new(r#"{"action":"a","payload":"x\ny"}"#.into(), "42".into());
        let (origin, target, decoded) = decode(&encode(3, 7 << NODE_SHIFT | 9, &delivery)).unwrap();
        assert_eq!((origin, node_of(target)), (3, 7));
        assert_eq!((decoded.frame(), decoded.sender()), (delivery.frame(), "42"));
        assert!(decode(b"not ours").is_none());
    }
}
