//! Group history: the recent frames of each group whose namespace keeps history, numbered by
//! offset (1, 2, 3, ...) within a stream whose epoch changes whenever its history is lost, so a
//! client that reconnects can get what it missed, or learn that it cannot.
//!
//! A stream is appended to and fanned out from under its own lock, and a recovering member is
//! replayed to and added under the same lock: no frame falls between the replay and the live
//! stream, and none is delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use serde::{Deserialize, Serialize};

use crate::hub::metrics::HistoryMetrics;
use crate::hub::outbound::Delivery;
use crate::hub::registry::GroupKey;

/// How much history a namespace keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Frames kept per group, the newest.
    pub size: usize,
    /// How long a frame is kept.
    pub ttl: Duration,
    /// How long a group's epoch and last offset are kept after its last frame, so a client back
    /// after a quiet spell learns it missed nothing.
    pub meta_ttl: Duration,
}

/// A client's place in a group's stream: the last offset it received, in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Position {
    pub group: String,
    pub epoch: String,
    pub offset: u64,
}

/// One group's stream.
pub struct Stream {
    epoch: Arc<str>,
    /// The offset of the last frame appended; 0 before the first.
    last: u64,
    /// The frames still kept, oldest first, each with its offset and when it was appended.
    entries: VecDeque<(u64, Instant, Arc<Delivery>)>,
    /// Idempotency keys of publishes still within the TTL, with the offset each got.
    published: VecDeque<(String, u64, Instant)>,
    policy: Policy,
    touched: Instant,
    budget: Arc<Budget>,
}

/// The bytes of history this node keeps, over all streams, under `state.history_bytes`.
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
    metrics: HistoryMetrics,
}

impl Budget {
    pub fn new(limit: usize, metrics: HistoryMetrics) -> Budget {
        Budget { used: AtomicUsize::new(0), limit, metrics }
    }

    fn take(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.bytes.set(used as i64);
    }

    fn give(&self, bytes: usize) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        self.metrics.bytes.set(used as i64);
    }

    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }
}

/// How a recovery ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Complete,
    /// The client's epoch is not the stream's: the history it knew was lost.
    EpochChanged,
    /// Frames it missed are no longer kept (past `size`, `ttl_ms` or `state.history_bytes`), or its
    /// offset is past the last.
    TooOld,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::EpochChanged => "epoch_changed",
            Outcome::TooOld => "too_old",
        }
    }
}

/// What a recovery found, told to the client before the frames it missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recovery {
    pub group: String,
    /// Every frame after the client's offset follows; `false`: some are gone (another epoch, an
    /// offset older than the history kept), so the client must reload its state.
    pub recovered: bool,
    /// The stream's epoch and its last offset: the client's position once the frames that follow
    /// are read.
    pub epoch: String,
    pub offset: u64,
    /// How many frames follow.
    pub replayed: usize,
}

impl Recovery {
    /// Nothing recovered, and no stream to give a position in (a group without history, or one
    /// Redis could not be asked about).
    pub fn lost(group: String) -> Recovery {
        Recovery { group, recovered: false, epoch: String::new(), offset: 0, replayed: 0 }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.budget.give(self.entries.iter().map(|(_, _, d)| d.frame().len()).sum());
    }
}

impl Stream {
    fn new(policy: Policy, budget: Arc<Budget>) -> Stream {
        Stream {
            epoch: new_epoch(),
            last: 0,
            entries: VecDeque::new(),
            published: VecDeque::new(),
            policy,
            touched: Instant::now(),
            budget,
        }
    }

    /// The stream's epoch and last offset.
    pub fn position(&self) -> (&str, u64) {
        (&self.epoch, self.last)
    }

    /// The offset a publish with idempotency key `key` got, if one did within the TTL.
    pub fn published(&mut self, key: &str) -> Option<u64> {
        self.expire(Instant::now());
        self.published.iter().find(|(k, _, _)| k == key).map(|(_, offset, _)| *offset)
    }

    /// Numbers `delivery` and keeps it; returns it as members of the group receive it: with the
    /// group's name, its offset and the epoch as top-level keys. With `key`, a publish within the
    /// TTL that names it again gets this offset (see [`Stream::published`]).
    pub fn append(&mut self, group: &str, delivery: &Delivery, key: Option<&str>) -> Arc<Delivery> {
        let now = Instant::now();
        self.expire(now);
        self.last += 1;
        let frame = format!("{}{}", position_head(group, &self.epoch, self.last), position_tail(delivery.frame()));
        let positioned = Arc::new(Delivery::new(frame, delivery.sender().to_owned()));
        self.budget.take(positioned.frame().len());
        self.entries.push_back((self.last, now, positioned.clone()));
        if let Some(key) = key {
            self.published.push_back((key.to_owned(), self.last, now));
            if self.published.len() > self.policy.size {
                self.published.pop_front();
            }
        }
        while self.entries.len() > self.policy.size {
            self.pop();
        }
        // Over the node's total: this stream gives back its oldest first, down to not keeping
        // the new frame at all (it is still delivered; a client that missed it is told so).
        while self.budget.over() && !self.entries.is_empty() {
            self.pop();
            self.budget.metrics.evicted.inc();
        }
        self.budget.metrics.appends.inc();
        self.touched = now;
        positioned
    }

    fn pop(&mut self) {
        if let Some((_, _, delivery)) = self.entries.pop_front() {
            self.budget.give(delivery.frame().len());
        }
    }

    /// The frames after `from` if the stream still holds all of them, and what to tell the client.
    pub fn recover(&mut self, from: &Position) -> (Recovery, Vec<Arc<Delivery>>) {
        self.expire(Instant::now());
        // The offset right before the oldest frame kept: a client there or later misses nothing.
        let floor = self.entries.front().map_or(self.last, |(offset, _, _)| offset - 1);
        let outcome = if *from.epoch != *self.epoch {
            Outcome::EpochChanged
        } else if from.offset < floor || from.offset > self.last {
            Outcome::TooOld
        } else {
            Outcome::Complete
        };
        let recovered = outcome == Outcome::Complete;
        let frames: Vec<Arc<Delivery>> = if recovered {
            self.entries.iter().filter(|(offset, _, _)| *offset > from.offset).map(|(_, _, d)| d.clone()).collect()
        } else {
            Vec::new()
        };
        self.budget.metrics.recovered(outcome.label());
        self.budget.metrics.replayed.inc_by(frames.len() as u64);
        let recovery = Recovery {
            group: from.group.clone(),
            recovered,
            epoch: self.epoch.to_string(),
            offset: self.last,
            replayed: frames.len(),
        };
        (recovery, frames)
    }

    fn expire(&mut self, now: Instant) {
        while self.entries.front().is_some_and(|(_, at, _)| now.duration_since(*at) > self.policy.ttl) {
            self.pop();
        }
        while self.published.front().is_some_and(|(_, _, at)| now.duration_since(*at) > self.policy.ttl) {
            self.published.pop_front();
        }
    }
}

/// The streams of every group with history on this node, and which namespaces keep history.
pub struct Histories {
    policies: ArcSwap<HashMap<Arc<str>, Policy>>,
    streams: DashMap<GroupKey, Stream>,
    budget: Arc<Budget>,
}

impl Default for Histories {
    fn default() -> Self {
        Histories::new(usize::MAX, HistoryMetrics::default())
    }
}

impl Histories {
    /// No streams yet, keeping at most `limit` bytes of frames over all of them.
    pub fn new(limit: usize, metrics: HistoryMetrics) -> Histories {
        Histories {
            policies: ArcSwap::default(),
            streams: DashMap::new(),
            budget: Arc::new(Budget::new(limit, metrics)),
        }
    }

    /// The counters recoveries outside a memory stream report to (the Redis backend's).
    pub fn metrics(&self) -> &HistoryMetrics {
        &self.budget.metrics
    }

    /// Sets which namespaces keep history, and how much; a namespace no longer listed loses its
    /// streams.
    pub fn set_policies(&self, policies: HashMap<Arc<str>, Policy>) {
        self.streams.retain(|key, stream| match policies.get(&key.namespace) {
            Some(policy) => {
                stream.policy = *policy;
                true
            }
            None => false,
        });
        self.policies.store(Arc::new(policies));
    }

    /// Whether any namespace keeps history: when none does, groups cost nothing more.
    pub fn enabled(&self) -> bool {
        !self.policies.load().is_empty()
    }

    /// The stream of `key`, locked (created when its namespace keeps history and it has none yet);
    /// `None` when its namespace keeps no history.
    pub fn stream(&self, key: &GroupKey) -> Option<RefMut<'_, GroupKey, Stream>> {
        if !self.enabled() {
            return None;
        }
        let policy = *self.policies.load().get(&key.namespace)?;
        Some(self.streams.entry(key.clone()).or_insert_with(|| Stream::new(policy, self.budget.clone())))
    }

    /// The history policy of `key`'s namespace, if it keeps history.
    pub fn policy(&self, key: &GroupKey) -> Option<Policy> {
        self.policies.load().get(&key.namespace).copied()
    }

    /// Drops expired frames, and the streams that have had no frame for their `meta_ttl`: a group
    /// that comes back later starts a new epoch.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.streams.retain(|_, stream| {
            stream.expire(now);
            now.duration_since(stream.touched) <= stream.policy.meta_ttl
        });
    }
}

/// The most frames one read of a group's history returns.
pub const MAX_READ: usize = 1000;

/// Frames of a group's history as plugins read them (the WIT `history` interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset of the group's last frame; 0 before the first.
    pub offset: u64,
    /// Offsets and frames as members received them, oldest first.
    pub entries: Vec<(u64, String)>,
}

impl Stream {
    /// The kept frames after `after` (none: the newest `limit`), oldest first, at most `limit`
    /// (and [`MAX_READ`]).
    pub fn page(&mut self, after: Option<u64>, limit: usize) -> Page {
        self.expire(Instant::now());
        let limit = limit.min(MAX_READ);
        let start = match after {
            Some(after) => self.entries.partition_point(|(offset, _, _)| *offset <= after),
            None => self.entries.len().saturating_sub(limit),
        };
        let entries = self
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .map(|(offset, _, delivery)| (*offset, delivery.frame().to_owned()))
            .collect();
        Page { epoch: self.epoch.to_string(), offset: self.last, entries }
    }

    /// The position whose recovery replays the last `count` frames kept (all of them when fewer
    /// are): right before the oldest of them, never before the oldest kept, which would make the
    /// recovery fail. What a plugin's `rewind` recovers from.
    pub fn rewind(&mut self, group: &str, count: u32) -> Position {
        self.expire(Instant::now());
        let kept = self.entries.len().min(usize::try_from(count).unwrap_or(usize::MAX));
        let offset = self.entries.get(self.entries.len() - kept).map_or(self.last, |(offset, _, _)| offset - 1);
        Position { group: group.to_owned(), epoch: self.epoch.to_string(), offset }
    }
}

impl Histories {
    /// A page of `key`'s history (see [`Stream::page`]); `None` when its namespace keeps none.
    pub fn read(&self, key: &GroupKey, after: Option<u64>, limit: usize) -> Option<Page> {
        self.stream(key).map(|mut stream| stream.page(after, limit))
    }
}

/// A fresh epoch: 64 random bits in hex, so a stream that lost its history is never mistaken for
/// the one before.
pub fn new_epoch() -> Arc<str> {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: the clock still tells this stream from one of an earlier process.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes = (nanos.as_nanos() as u64).to_be_bytes();
    }
    Arc::from(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The start of a frame of a group with history: `{"group":...,"offset":...,"epoch":"..."`, to be
/// followed by [`position_tail`] of the frame. The Redis backend writes the same bytes.
pub fn position_head(group: &str, epoch: &str, offset: u64) -> String {
    let group = serde_json::Value::from(group);
    format!(r#"{{"group":{group},"offset":{offset},"epoch":"{epoch}""#)
}

/// The rest of `frame` (a checked JSON object) after the position keys: `,` and its members, or
/// `}`. Position keys a plugin set are left out: the broker's numbering is the one clients
/// recover by.
pub fn position_tail(frame: &str) -> String {
    const KEYS: [&str; 3] = ["group", "offset", "epoch"];
    // Most frames name none of the keys anywhere: they are spliced without being parsed.
    let body = if KEYS.iter().any(|key| frame.contains(&format!("\"{key}\""))) {
        let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(frame) else {
            return "}".to_owned();
        };
        KEYS.iter().for_each(|key| drop(object.remove(*key)));
        serde_json::to_string(&object).unwrap_or_else(|_| "{}".to_owned())
    } else {
        frame.trim().to_owned()
    };
    match body.strip_prefix('{').map(str::trim_start) {
        Some(rest) if rest.starts_with('}') => "}".to_owned(),
        Some(rest) => format!(",{rest}"),
        None => "}".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(size: usize) -> Policy {
        Policy { size, ttl: Duration::from_secs(60), meta_ttl: Duration::from_secs(600) }
    }

    fn budget() -> Arc<Budget> {
        Arc::new(Budget::new(usize::MAX, HistoryMetrics::default()))
    }

    fn frame(text: &str) -> Delivery {
        Delivery::new(format!(r#"{{"action":"m","payload":{{"text":"{text}"}}}}"#), "s".into())
    }

    fn offsets(frames: &[Arc<Delivery>]) -> Vec<u64> {
        frames
            .iter()
            .map(|d| serde_json::from_str::<serde_json::Value>(d.frame()).unwrap()["offset"].as_u64().unwrap())
            .collect()
    }

    impl Stream {
        fn append_test(&mut self, group: &str, delivery: &Delivery) -> Arc<Delivery> {
            self.append(group, delivery, None)
        }
    }

    #[test]
    fn history_stays_within_its_size_and_the_node_s_total_and_says_what_it_lost() {
        let budget = Arc::new(Budget::new(1000, HistoryMetrics::default()));
        let mut big = Stream::new(policy(100), budget.clone());
        for i in 0..50 {
            big.append_test("big", &frame(&format!("{i:0>100}")));
        }
        assert!(budget.used.load(Ordering::Relaxed) <= 1000, "the total holds");
        assert!(big.entries.len() < 10, "{} kept", big.entries.len());
        let epoch = big.epoch.to_string();
        let (lost, _) = big.recover(&Position { group: "big".into(), epoch: epoch.clone(), offset: 10 });
        assert!(!lost.recovered, "evicted frames are reported lost");
        drop(big);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0, "a dropped stream gives its bytes back");
        let mut small = Stream::new(policy(2), budget.clone());
        for i in 0..10 {
            small.append_test("small", &frame(&i.to_string()));
        }
        assert_eq!(small.entries.len(), 2, "size holds per group");
    }

    #[test]
    fn an_idempotency_key_answers_the_first_offset_within_the_ttl() {
        let mut stream = Stream::new(policy(10), budget());
        assert_eq!(stream.published("k"), None);
        stream.append("room", &frame("a"), Some("k"));
        stream.append("room", &frame("b"), None);
        assert_eq!(stream.published("k"), Some(1));
        assert_eq!(stream.published("other"), None);
    }

    #[test]
    fn frames_are_numbered_and_positioned() {
        let mut stream = Stream::new(policy(10), budget());
        let first = stream.append_test("room", &frame("a"));
        let value: serde_json::Value = serde_json::from_str(first.frame()).unwrap();
        assert_eq!(value["group"], "room");
        assert_eq!(value["offset"], 1);
        assert_eq!(value["epoch"], &*stream.epoch);
        assert_eq!(value["payload"]["text"], "a");
        assert_eq!(offsets(&[stream.append_test("room", &frame("b"))]), vec![2]);
    }

    #[test]
    fn recovery_replays_what_follows_or_says_it_cannot() {
        let mut stream = Stream::new(policy(3), budget());
        for text in ["a", "b", "c", "d", "e"] {
            stream.append_test("room", &frame(text));
        }
        let at = |epoch: &str, offset| Position { group: "room".into(), epoch: epoch.into(), offset };
        let epoch = stream.epoch.to_string();
        let (recovery, frames) = stream.recover(&at(&epoch, 3));
        assert!(recovery.recovered);
        assert_eq!((recovery.offset, recovery.replayed), (5, 2));
        assert_eq!(offsets(&frames), vec![4, 5]);
        assert!(stream.recover(&at(&epoch, 2)).0.recovered, "2 is right before the oldest kept");
        assert!(!stream.recover(&at(&epoch, 1)).0.recovered, "frame 2 is gone");
        assert!(!stream.recover(&at("another", 5)).0.recovered);
        assert!(!stream.recover(&at(&epoch, 6)).0.recovered, "an offset the stream never reached");
        let (nothing_missed, frames) = stream.recover(&at(&epoch, 5));
        assert!(nothing_missed.recovered && frames.is_empty());
    }

    #[test]
    fn expired_frames_are_not_recovered() {
        let mut stream =
            Stream::new(Policy { size: 10, ttl: Duration::ZERO, meta_ttl: Duration::from_secs(60) }, budget());
        stream.append_test("room", &frame("a"));
        std::thread::sleep(Duration::from_millis(2));
        let epoch = stream.epoch.to_string();
        let (recovery, frames) = stream.recover(&Position { group: "room".into(), epoch, offset: 0 });
        assert!(!recovery.recovered, "frame 1 expired before the client read it");
        assert_eq!((recovery.offset, recovery.replayed), (1, 0));
        assert!(frames.is_empty());
    }

    #[test]
    fn the_position_goes_first_and_replaces_any_the_frame_had() {
        let head = position_head("r\"1", "e", 7);
        assert_eq!(head, r#"{"group":"r\"1","offset":7,"epoch":"e""#);
        assert_eq!(format!("{head}{}", position_tail("{}")), r#"{"group":"r\"1","offset":7,"epoch":"e"}"#);
        let tail = position_tail(r#"{"action":"a","offset":99,"payload":{"offset":1}}"#);
        assert_eq!(tail, r#","action":"a","payload":{"offset":1}}"#);
        let whole: serde_json::Value = serde_json::from_str(&format!("{head}{tail}")).unwrap();
        assert_eq!(whole["offset"], 7);
    }

    #[test]
    fn a_namespace_without_a_policy_has_no_streams() {
        let histories = Histories::default();
        let key = GroupKey::new(&Arc::from("chat"), "room");
        assert!(histories.stream(&key).is_none());
        histories.set_policies(HashMap::from([(Arc::from("chat"), policy(4))]));
        assert!(histories.stream(&key).is_some());
        assert!(histories.stream(&GroupKey::new(&Arc::from("echo"), "room")).is_none());
    }
}
