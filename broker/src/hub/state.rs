//! Plugin state kept by the host: the key-value store of each namespace (sessions live with their
//! connection in `registry`). State outlives instances and reloads, which is what lets plugins be
//! stateless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::hub::cluster::{ClusterError, Link};

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("the connection is closed")]
    Closed,
    #[error("{message}")]
    TooLarge { limit: &'static str, message: String },
    /// The cluster backend did not answer.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
}

/// The limits of `[state]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub value_bytes: usize,
    pub keys_per_namespace: usize,
}

#[derive(Debug)]
struct Stored {
    value: String,
    expires: Option<Instant>,
}

impl Stored {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

type Namespace = Mutex<HashMap<String, Stored>>;

/// The key-value store. On one node it is in memory: one map per namespace, each behind its own
/// lock, so a compare-and-swap is atomic by construction and namespaces never contend. In a
/// cluster it is in Redis (compare-and-swap as a script, TTLs as Redis expiries), where
/// `state.kv_keys_per_namespace` does not apply: Redis's `maxmemory` bounds it.
pub struct Kv {
    namespaces: DashMap<Arc<str>, Arc<Namespace>>,
    limits: Limits,
    cluster: Option<Arc<Link>>,
}

fn unavailable(error: ClusterError) -> StateError {
    StateError::Unavailable(error.to_string())
}

impl Kv {
    pub fn new(limits: Limits, cluster: Option<Arc<Link>>) -> Kv {
        Kv { namespaces: DashMap::new(), limits, cluster }
    }

    pub async fn get(&self, namespace: &Arc<str>, key: &str) -> Result<Option<String>, StateError> {
        match &self.cluster {
            Some(link) => link.kv_get(namespace, key).await.map_err(unavailable),
            None => Ok(self.get_local(namespace, key)),
        }
    }

    pub async fn set(
        &self,
        namespace: &Arc<str>,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.check_value(&value)?;
        match &self.cluster {
            Some(link) => link.kv_set(namespace, key, value, ttl).await.map_err(unavailable),
            None => self.with(namespace, |map, now| self.put(map, now, key, value, ttl)),
        }
    }

    pub async fn delete(&self, namespace: &Arc<str>, key: &str) -> Result<bool, StateError> {
        match &self.cluster {
            Some(link) => link.kv_delete(namespace, key).await.map_err(unavailable),
            None => Ok(self.with(namespace, |map, now| map.remove(key).is_some_and(|s| s.live(now)))),
        }
    }

    /// Sets (or with `new = None` deletes) `key` only while its live value equals `expected`.
    pub async fn compare_and_swap(
        &self,
        namespace: &Arc<str>,
        key: &str,
        expected: Option<&str>,
        new: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        if let Some(value) = &new {
            self.check_value(value)?;
        }
        match &self.cluster {
            Some(link) => link.kv_compare_and_swap(namespace, key, expected, new, ttl).await.map_err(unavailable),
            None => self.compare_and_swap_local(namespace, key, expected, new, ttl),
        }
    }

    fn namespace(&self, namespace: &Arc<str>) -> Arc<Namespace> {
        self.namespaces.entry(namespace.clone()).or_default().clone()
    }

    fn with<T>(&self, namespace: &Arc<str>, f: impl FnOnce(&mut HashMap<String, Stored>, Instant) -> T) -> T {
        let namespace = self.namespace(namespace);
        let mut map = namespace.lock();
        f(&mut map, Instant::now())
    }

    fn get_local(&self, namespace: &Arc<str>, key: &str) -> Option<String> {
        self.with(namespace, |map, now| map.get(key).filter(|s| s.live(now)).map(|s| s.value.clone()))
    }

    fn compare_and_swap_local(
        &self,
        namespace: &Arc<str>,
        key: &str,
        expected: Option<&str>,
        new: Option<String>,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.with(namespace, |map, now| {
            let current = map.get(key).filter(|s| s.live(now)).map(|s| s.value.as_str());
            if current != expected {
                return Ok(false);
            }
            match new {
                Some(value) => self.put(map, now, key, value, ttl)?,
                None => {
                    map.remove(key);
                }
            }
            Ok(true)
        })
    }

    fn check_value(&self, value: &str) -> Result<(), StateError> {
        if value.len() > self.limits.value_bytes {
            return Err(StateError::TooLarge {
                limit: "state.kv_value_bytes",
                message: format!(
                    "a value of {} bytes is over state.kv_value_bytes ({})",
                    value.len(),
                    self.limits.value_bytes
                ),
            });
        }
        Ok(())
    }

    fn put(
        &self,
        map: &mut HashMap<String, Stored>,
        now: Instant,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        if !map.contains_key(key) && map.len() >= self.limits.keys_per_namespace {
            map.retain(|_, stored| stored.live(now));
            if map.len() >= self.limits.keys_per_namespace {
                return Err(StateError::TooLarge {
                    limit: "state.kv_keys_per_namespace",
                    message: format!(
                        "the namespace holds state.kv_keys_per_namespace ({}) keys",
                        self.limits.keys_per_namespace
                    ),
                });
            }
        }
        map.insert(key.to_owned(), Stored { value, expires: ttl.map(|ttl| now + ttl) });
        Ok(())
    }

    /// Drops expired values; run periodically so keys nobody reads again do not stay forever.
    pub fn sweep(&self) {
        let now = Instant::now();
        let namespaces: Vec<Arc<Namespace>> = self.namespaces.iter().map(|entry| entry.value().clone()).collect();
        for namespace in namespaces {
            namespace.lock().retain(|_, stored| stored.live(now));
        }
    }

    /// Live keys over all namespaces.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let namespaces: Vec<Arc<Namespace>> = self.namespaces.iter().map(|entry| entry.value().clone()).collect();
        namespaces.iter().map(|ns| ns.lock().values().filter(|s| s.live(now)).count()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's session values, with their size kept for the limit.
#[derive(Debug, Default)]
pub struct Session {
    values: HashMap<String, String>,
    bytes: usize,
}

impl Session {
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    pub fn set(&mut self, key: &str, value: String, limit: usize) -> Result<(), StateError> {
        let old = self.values.get(key).map_or(0, |v| key.len() + v.len());
        let bytes = self.bytes - old + key.len() + value.len();
        if bytes > limit {
            return Err(StateError::TooLarge {
                limit: "state.session_bytes",
                message: format!("the session would hold {bytes} bytes, over state.session_bytes ({limit})"),
            });
        }
        self.values.insert(key.to_owned(), value);
        self.bytes = bytes;
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some(value) = self.values.remove(key) {
            self.bytes -= key.len() + value.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> Kv {
        Kv::new(Limits { value_bytes: 16, keys_per_namespace: 2 }, None)
    }

    #[tokio::test]
    async fn namespaces_are_separate_and_cas_is_conditional() {
        let kv = kv();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let cas = |key: &'static str, expected: Option<&'static str>, new: &str| {
            kv.compare_and_swap(&a, key, expected, Some(new.to_owned()), None)
        };
        kv.set(&a, "k", "1".into(), None).await.unwrap();
        assert_eq!(kv.get(&b, "k").await, Ok(None));
        assert!(!cas("k", Some("2"), "3").await.unwrap());
        assert!(cas("k", Some("1"), "3").await.unwrap());
        assert!(cas("new", None, "x").await.unwrap());
        assert!(!cas("new", None, "y").await.unwrap());
        assert_eq!(kv.get(&a, "k").await, Ok(Some("3".into())));
        assert_eq!(kv.delete(&a, "k").await, Ok(true));
        assert_eq!(kv.delete(&a, "k").await, Ok(false));
    }

    #[tokio::test]
    async fn ttl_expires_and_limits_hold() {
        let kv = kv();
        let ns: Arc<str> = Arc::from("ns");
        kv.set(&ns, "gone", "v".into(), Some(Duration::ZERO)).await.unwrap();
        assert_eq!(kv.get(&ns, "gone").await, Ok(None));
        assert!(kv.set(&ns, "big", "x".repeat(17), None).await.is_err());
        kv.set(&ns, "1", "v".into(), None).await.unwrap();
        kv.set(&ns, "2", "v".into(), None).await.unwrap();
        // The expired key made room; a third live key does not fit.
        assert!(kv.set(&ns, "3", "v".into(), None).await.is_err());
        kv.sweep();
        assert_eq!(kv.len(), 2);
    }

    #[test]
    fn sessions_count_their_bytes() {
        let mut session = Session::default();
        session.set("k", "12345".into(), 10).unwrap();
        session.set("k", "123456789".into(), 10).unwrap();
        assert!(session.set("other", "x".into(), 10).is_err());
        session.delete("k");
        session.set("other", "x".into(), 10).unwrap();
        assert_eq!(session.get("other").as_deref(), Some("x"));
    }
}
