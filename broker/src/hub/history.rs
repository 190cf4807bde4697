//! Group history: the recent frames of each group whose namespace keeps history, numbered by
//! offset (1, 2, 3, ...) within a stream whose epoch changes whenever its history is lost, so a
//! client that reconnects can get what it missed, or learn that it cannot.
//!
//! A stream is appended to and fanned out from under its own lock, and a recovering member is
//! replayed to and added under the same lock: no frame falls between the replay and the live
//! stream, and none is delivered twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use dashmap::mapref::one::RefMut;
use serde::{Deserialize, Serialize};

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
    policy: Policy,
    touched: Instant,
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

impl Stream {
    fn new(policy: Policy) -> Stream {
        Stream { epoch: new_epoch(), last: 0, entries: VecDeque::new(), policy, touched: Instant::now() }
    }

    /// Numbers `delivery` and keeps it; returns it as members of the group receive it: with the
    /// group's name, its offset and the epoch as top-level keys.
    pub fn append(&mut self, group: &str, delivery: &Delivery) -> Arc<Delivery> {
        let now = Instant::now();
        self.expire(now);
        self.last += 1;
        let frame = format!("{}{}", position_head(group, &self.epoch, self.last), position_tail(delivery.frame()));
        let positioned = Arc::new(Delivery::new(frame, delivery.sender().to_owned()));
        self.entries.push_back((self.last, now, positioned.clone()));
        while self.entries.len() > self.policy.size {
            self.entries.pop_front();
        }
        self.touched = now;
        positioned
    }

    /// The frames after `from` if the stream still holds all of them, and what to tell the client.
    pub fn recover(&mut self, from: &Position) -> (Recovery, Vec<Arc<Delivery>>) {
        self.expire(Instant::now());
        // The offset right before the oldest frame kept: a client there or later misses nothing.
        let floor = self.entries.front().map_or(self.last, |(offset, _, _)| offset - 1);
        let recovered = *from.epoch == *self.epoch && from.offset >= floor && from.offset <= self.last;
        let frames: Vec<Arc<Delivery>> = if recovered {
            self.entries.iter().filter(|(offset, _, _)| *offset > from.offset).map(|(_, _, d)| d.clone()).collect()
        } else {
            Vec::new()
        };
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
            self.entries.pop_front();
        }
    }
}

/// The streams of every group with history on this node, and which namespaces keep history.
#[derive(Default)]
pub struct Histories {
    policies: ArcSwap<HashMap<Arc<str>, Policy>>,
    streams: DashMap<GroupKey, Stream>,
}

impl Histories {
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
        Some(self.streams.entry(key.clone()).or_insert_with(|| Stream::new(policy)))
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
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(frame) else {
        return "}".to_owned();
    };
    let body = if KEYS.iter().any(|key| object.contains_key(*key)) {
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

    fn frame(text: &str) -> Delivery {
        Delivery::new(format!(r#"{{"action":"m","payload":{{"text":"{text}"}}}}"#), "s".into())
    }

    fn offsets(frames: &[Arc<Delivery>]) -> Vec<u64> {
        frames
            .iter()
            .map(|d| serde_json::from_str::<serde_json::Value>(d.frame()).unwrap()["offset"].as_u64().unwrap())
            .collect()
    }

    #[test]
    fn frames_are_numbered_and_positioned() {
        let mut stream = Stream::new(policy(10));
        let first = stream.append("room", &frame("a"));
        let value: serde_json::Value = serde_json::from_str(first.frame()).unwrap();
        assert_eq!(value["group"], "room");
        assert_eq!(value["offset"], 1);
        assert_eq!(value["epoch"], &*stream.epoch);
        assert_eq!(value["payload"]["text"], "a");
        assert_eq!(offsets(&[stream.append("room", &frame("b"))]), vec![2]);
    }

    #[test]
    fn recovery_replays_what_follows_or_says_it_cannot() {
        let mut stream = Stream::new(policy(3));
        for text in ["a", "b", "c", "d", "e"] {
            stream.append("room", &frame(text));
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
        let mut stream = Stream::new(Policy { size: 10, ttl: Duration::ZERO, meta_ttl: Duration::from_secs(60) });
        stream.append("room", &frame("a"));
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
