//! Prometheus metrics, served at `/metrics`. No global registry: the server owns one `Metrics`,
//! and whoever counts holds a clone of the counter it needs (clones share one value), resolved once
//! per connection or plugin so the per-frame path does no label lookup.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry as PromRegistry;

use crate::hub::registry::Registry;

mod per_thread;

pub use per_thread::{Counter as PerThreadCounter, Histogram};

type Labels = Vec<(&'static str, String)>;

fn call_seconds() -> Histogram {
    // 10 µs to ~40 s: a wasm echo and an LLM round trip on one scale.
    Histogram::new(exponential_buckets(0.000_01, 4.0, 12))
}

/// The broker's metrics.
pub struct Metrics {
    registry: PromRegistry,
    connections: Gauge,
    groups: Gauge,
    group_members: Gauge,
    connections_by_route: Family<Labels, Gauge>,
    // Written on every message: counted per thread (`per_thread`).
    frames_in: Family<Labels, PerThreadCounter>,
    frames_out: Family<Labels, PerThreadCounter>,
    bytes_in: Family<Labels, PerThreadCounter>,
    bytes_out: Family<Labels, PerThreadCounter>,
    plugin_calls: Family<Labels, Histogram, fn() -> Histogram>,
    plugin_errors: Family<Labels, Counter>,
    payloads_refused: Family<Labels, Counter>,
    plugin_instances: Family<Labels, Gauge>,
    instances_retired: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
    /// Clients closed because their outbound queue was full (`server.outbound_queue*`).
    pub slow_consumer_closes: Counter,
    /// Frames delivered through `POST /api/publish`.
    pub api_published: Counter,
    reloads: Family<Labels, Counter>,
    /// The Redis backend (`[cluster] backend = "redis"`).
    pub cluster: ClusterMetrics,
    /// Group history (`[plugins.<name>.history]`).
    pub history: HistoryMetrics,
    /// The (route, action) series of `frames_out` so far.
    out_actions: parking_lot::Mutex<std::collections::HashSet<(String, String)>>,
}

/// The most (route, action) series `frames_out` creates: plugins choose what they send.
const MAX_OUT_ACTIONS: usize = 256;

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("broker");
        let metrics = Metrics {
            registry: PromRegistry::default(),
            connections: Gauge::default(),
            groups: Gauge::default(),
            group_members: Gauge::default(),
            connections_by_route: Family::default(),
            frames_in: Family::default(),
            frames_out: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            plugin_calls: Family::new_with_constructor(call_seconds),
            plugin_errors: Family::default(),
            payloads_refused: Family::default(),
            plugin_instances: Family::default(),
            instances_retired: Family::default(),
            limit_hits: Family::default(),
            slow_consumer_closes: Counter::default(),
            api_published: Counter::default(),
            reloads: Family::default(),
            cluster: ClusterMetrics::default(),
            history: HistoryMetrics::default(),
            out_actions: Default::default(),
        };
        registry.register("connections", "Open WebSocket connections", metrics.connections.clone());
        registry.register(
            "route_connections",
            "Open WebSocket connections by route",
            metrics.connections_by_route.clone(),
        );
        registry.register("frames_in", "Client frames by route and action", metrics.frames_in.clone());
        registry.register("frames_out", "Frames written to clients by route and action", metrics.frames_out.clone());
        registry.register("bytes_in", "Bytes of client frames by route", metrics.bytes_in.clone());
        registry.register("bytes_out", "Bytes written to clients by route", metrics.bytes_out.clone());
        registry.register("plugin_call_seconds", "Plugin call durations by plugin", metrics.plugin_calls.clone());
        registry.register("plugin_errors", "Failed plugin calls by plugin and kind", metrics.plugin_errors.clone());
        registry.register(
            "payloads_refused",
            "Payloads refused by the plugin's published schema before it ran, by plugin",
            metrics.payloads_refused.clone(),
        );
        registry.register("plugin_instances", "Plugin instances by plugin and state", metrics.plugin_instances.clone());
        registry.register(
            "plugin_instances_retired",
            "Plugin instances retired after a call, their memory past half the limit, by plugin",
            metrics.instances_retired.clone(),
        );
        registry.register(
            "limit_hits",
            "Times a limit of broker.toml refused something, by key",
            metrics.limit_hits.clone(),
        );
        registry.register("groups", "Groups with at least one member", metrics.groups.clone());
        registry.register("group_members", "Memberships over all groups", metrics.group_members.clone());
        registry.register(
            "slow_consumer_closes",
            "Clients closed because their outbound queue was full",
            metrics.slow_consumer_closes.clone(),
        );
        registry.register("api_published", "Frames delivered through the publish API", metrics.api_published.clone());
        registry.register("reloads", "Plugin and configuration reloads, by result", metrics.reloads.clone());
        let history = &metrics.history;
        registry.register("history_appends", "Frames numbered into a group's history", history.appends.clone());
        registry.register(
            "history_recoveries",
            "Recoveries by outcome: complete, epoch_changed, too_old, no_history, failed",
            history.recoveries.clone(),
        );
        registry.register("history_replayed", "Frames replayed to recovering clients", history.replayed.clone());
        registry.register(
            "history_bytes",
            "Bytes of frames this node keeps in history (memory backend)",
            history.bytes.clone(),
        );
        registry.register(
            "history_evicted",
            "Frames dropped from history before their time to stay under state.history_bytes",
            history.evicted.clone(),
        );
        let cluster = &metrics.cluster;
        registry.register("cluster_redis_up", "1 while the Redis backend answers", cluster.redis_up.clone());
        registry.register(
            "cluster_published",
            "Frames published to other nodes (group broadcasts and direct sends)",
            cluster.published.clone(),
        );
        registry.register("cluster_received", "Frames received from other nodes", cluster.received.clone());
        registry.register(
            "cluster_dropped",
            "Cluster operations lost: publish and presence while Redis was unreachable, backlog when it was too slow",
            cluster.dropped.clone(),
        );
        Metrics { registry, ..metrics }
    }
}

/// What crosses between nodes through Redis.
#[derive(Default)]
pub struct ClusterMetrics {
    pub redis_up: Gauge,
    pub published: Counter,
    pub received: Counter,
    dropped: Family<Labels, Counter>,
}

/// The metrics of group history, shared with the hub's streams.
#[derive(Clone, Default)]
pub struct HistoryMetrics {
    pub appends: Counter,
    recoveries: Family<Labels, Counter>,
    pub replayed: Counter,
    pub bytes: Gauge,
    pub evicted: Counter,
}

impl HistoryMetrics {
    /// Counts a recovery that ended with `outcome`.
    pub fn recovered(&self, outcome: &'static str) {
        self.recoveries.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
    }
}

impl ClusterMetrics {
    /// Counts `n` operations of `kind` that never reached Redis.
    pub fn dropped(&self, kind: &'static str, n: u64) {
        self.dropped.get_or_create(&vec![("op", kind.to_owned())]).inc_by(n);
    }
}

/// The counters of one connection, resolved once when it opens.
pub struct ConnectionMetrics {
    metrics: Arc<Metrics>,
    route: String,
    pub open: Gauge,
    pub bytes_in: PerThreadCounter,
    pub bytes_out: PerThreadCounter,
    /// `frames_in` and `frames_out` by action, found by a short scan rather than a hashed label
    /// per frame.
    frames_in: ActionCounters,
    frames_out: ActionCounters,
}

/// A connection's counters by action.
#[derive(Default)]
struct ActionCounters {
    /// The first action counted, read without a lock: most connections send, and are sent, one
    /// kind of frame, and a lock taken on every frame is two atomic writes to a line of its own.
    first: std::sync::OnceLock<(Name, PerThreadCounter)>,
    /// The others, found by a short scan.
    rest: parking_lot::Mutex<Vec<(String, PerThreadCounter)>>,
}

/// An action's name kept inside the connection's counters, so that the compare every frame makes
/// reads memory the frame touches anyway. A `Box<str>` of each connection's own was one more line
/// of memory per frame, cold when a thousand connections take turns: `memcmp`'s share of the
/// broker's CPU per message doubled from 100 connections to 1,000.
#[derive(Clone, Copy)]
struct Name {
    len: u8,
    bytes: [u8; Name::ROOM],
}

impl Name {
    /// Longer names are kept in `ActionCounters::rest`.
    const ROOM: usize = 31;

    fn new(name: &str) -> Option<Name> {
        if name.len() > Name::ROOM {
            return None;
        }
        let mut bytes = [0; Name::ROOM];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Name { len: name.len() as u8, bytes })
    }

    fn is(&self, name: &str) -> bool {
        self.bytes[..usize::from(self.len)] == *name.as_bytes()
    }
}

impl ConnectionMetrics {
    /// The broker's metrics, for what is not per connection.
    pub fn shared(&self) -> &Metrics {
        &self.metrics
    }

    /// Counts a client frame of `action` (`None`: the frame had no valid action).
    pub fn frame_in(&self, action: Option<&str>, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
        let action = action.unwrap_or("(invalid)");
        self.count(&self.frames_in, &self.metrics.frames_in, action, || true);
    }

    /// Counts a frame written to the client. Its action is read from the text, where the broker
    /// and the SDK put it first; frames without one (the assistant's) count as `(none)`.
    pub fn frame_out(&self, text: &str) {
        self.bytes_out.inc_by(text.len() as u64);
        let action = text
            .strip_prefix("{\"action\":\"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(action, _)| action)
            .filter(|action| !action.contains('\\'))
            .unwrap_or("(none)");
        // Plugins choose what they send: past a bound, new actions share one series.
        let admit = || self.metrics.admit_out_action(&self.route, action);
        self.count(&self.frames_out, &self.metrics.frames_out, action, admit);
    }

    /// Counts one frame of `action` on the connection's counter of it. Only an action the
    /// connection has not seen yet goes to the shared family (and `admit`, which takes a
    /// process-wide lock): this runs per frame, so a known one is counted in place, not cloned.
    fn count(
        &self,
        cache: &ActionCounters,
        family: &Family<Labels, PerThreadCounter>,
        action: &str,
        admit: impl FnOnce() -> bool,
    ) {
        if let Some((first, counter)) = cache.first.get()
            && first.is(action)
        {
            counter.inc();
            return;
        }
        let mut known = cache.rest.lock();
        if let Some((_, counter)) = known.iter().find(|(a, _)| a == action) {
            counter.inc();
            return;
        }
        let label = if admit() { action } else { "(other)" };
        let counter = family.get_or_create(&vec![("route", self.route.clone()), ("action", label.into())]).clone();
        counter.inc();
        // The family gives every caller the one counter of a series: an action two threads find
        // new at once is kept twice (in `first` and in `rest`) but each frame is counted once.
        let counter = match Name::new(action) {
            Some(name) => match cache.first.set((name, counter)) {
                Ok(()) => return,
                Err((_, counter)) => counter,
            },
            None => counter,
        };
        known.push((action.into(), counter));
    }
}

impl Metrics {
    /// The counters of a new connection on `route`; it counts as open until dropped.
    pub fn connection(self: &Arc<Self>, route: &str) -> ConnectionMetrics {
        let by_route = |family: &Family<Labels, PerThreadCounter>| {
            family.get_or_create(&vec![("route", route.to_owned())]).clone()
        };
        let open = self.connections_by_route.get_or_create(&vec![("route", route.to_owned())]).clone();
        open.inc();
        ConnectionMetrics {
            metrics: self.clone(),
            route: route.to_owned(),
            open,
            bytes_in: by_route(&self.bytes_in),
            bytes_out: by_route(&self.bytes_out),
            frames_in: ActionCounters::default(),
            frames_out: ActionCounters::default(),
        }
    }

    /// Whether `frames_out` may have a series for (route, action): those it has, and new ones
    /// while there are fewer than `MAX_OUT_ACTIONS`.
    fn admit_out_action(&self, route: &str, action: &str) -> bool {
        let mut seen = self.out_actions.lock();
        if seen.contains(&(route.to_owned(), action.to_owned())) {
            return true;
        }
        if seen.len() >= MAX_OUT_ACTIONS {
            return false;
        }
        seen.insert((route.to_owned(), action.to_owned()));
        true
    }

    /// The call-duration histogram of a plugin.
    pub fn plugin_calls(&self, plugin: &str) -> Histogram {
        self.plugin_calls.get_or_create(&vec![("plugin", plugin.to_owned())]).clone()
    }

    /// Counts a failed call of `plugin`: `kind` is `error`, `invalid`, `crashed` or `timeout`.
    pub fn plugin_error(&self, plugin: &str, kind: &'static str) {
        self.plugin_errors.get_or_create(&vec![("plugin", plugin.to_owned()), ("kind", kind.to_owned())]).inc();
    }

    /// Counts a payload refused at the edge by `plugin`'s schema.
    pub fn payload_refused(&self, plugin: &str) {
        self.payloads_refused.get_or_create(&vec![("plugin", plugin.to_owned())]).inc();
    }

    /// Sets a plugin's instance counts (`idle`: pooled, `busy`: in a call).
    pub fn plugin_instances(&self, plugin: &str, idle: usize, busy: usize) {
        for (state, count) in [("idle", idle), ("busy", busy)] {
            self.plugin_instances
                .get_or_create(&vec![("plugin", plugin.to_owned()), ("state", state.to_owned())])
                .set(count as i64);
        }
    }

    /// Counts an instance of `plugin` retired for its memory.
    pub fn instance_retired(&self, plugin: &str) {
        self.instances_retired.get_or_create(&vec![("plugin", plugin.to_owned())]).inc();
    }

    /// Counts a refusal by the limit `key` of broker.toml.
    pub fn limit_hit(&self, key: &str) {
        self.limit_hit_by(key, 1);
    }

    /// Counts `n` refusals by the limit `key`.
    pub fn limit_hit_by(&self, key: &str, n: u64) {
        self.limit_hits.get_or_create(&vec![("limit", key.to_owned())]).inc_by(n);
    }

    /// Counts a reload of `kind` (`plugin` or `config`).
    pub fn reloaded(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&vec![("kind", kind.to_owned()), ("result", result.to_owned())]).inc();
    }

    /// The Prometheus text exposition, with gauges read from the live registry.
    pub fn render(&self, live: &Registry) -> String {
        self.connections.set(live.len() as i64);
        self.groups.set(live.group_count() as i64);
        self.group_members.set(live.membership_count() as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        prometheus_text(&text)
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// OpenMetrics text (what prometheus-client writes) as the classic Prometheus text format, which
/// every scraper and `promtool` read: a counter family is named with its `_total`, and there is no
/// `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_with_total_in_the_classic_format() {
        let text = "# HELP x_frames Frames.\n# TYPE x_frames counter\nx_frames_total 3\n# HELP y Y.\n# TYPE y gauge\ny 1\n# EOF\n";
        assert_eq!(
            prometheus_text(text),
            "# HELP x_frames_total Frames.\n# TYPE x_frames_total counter\nx_frames_total 3\n# HELP y Y.\n# TYPE y gauge\ny 1\n"
        );
    }

    #[test]
    fn frames_in_are_counted_by_action_the_first_as_the_others() {
        let metrics = Arc::new(Metrics::default());
        let a = metrics.connection("/a");
        for action in [Some("x"), Some("y"), Some("x"), None, Some("y"), Some("x")] {
            a.frame_in(action, 1);
        }
        // A first action too long to be kept in place is counted with the others.
        let long = "an_action_with_a_name_longer_than_thirty_one_bytes";
        let b = metrics.connection("/b");
        for action in [long, "x", long, "x31_bytes_long_is_kept_in_place", "x"] {
            b.frame_in(Some(action), 1);
        }
        let registry =
            Registry::new(crate::hub::registry::Limits { max_groups_per_connection: 1, session_bytes: 1 }, None);
        let text = metrics.render(&registry);
        let b_counts = [(long, 2), ("x", 2), ("x31_bytes_long_is_kept_in_place", 1)];
        for (action, count) in b_counts {
            let series = format!(r#"broker_frames_in_total{{route="/b",action="{action}"}} {count}"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
        for (action, count) in [("x", 3), ("y", 2), ("(invalid)", 1)] {
            let series = format!(r#"broker_frames_in_total{{route="/a",action="{action}"}} {count}"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
    }

    #[test]
    fn frames_out_are_counted_by_action_up_to_the_series_bound() {
        let metrics = Arc::new(Metrics::default());
        let (a, b) = (metrics.connection("/a"), metrics.connection("/b"));
        for _ in 0..3 {
            a.frame_out(r#"{"action":"hello","payload":1}"#);
        }
        b.frame_out(r#"{"type":"no action"}"#);
        for i in 0..MAX_OUT_ACTIONS + 10 {
            b.frame_out(&format!(r#"{{"action":"a{i}"}}"#));
        }
        let registry =
            Registry::new(crate::hub::registry::Limits { max_groups_per_connection: 1, session_bytes: 1 }, None);
        let text = metrics.render(&registry);
        assert!(text.contains(r#"broker_frames_out_total{route="/a",action="hello"} 3"#), "{text}");
        assert!(text.contains(r#"broker_frames_out_total{route="/b",action="(none)"} 1"#), "{text}");
        // 256 series: hello, (none) and 254 of b's actions; its other 12 share one series.
        assert!(text.contains(r#"broker_frames_out_total{route="/b",action="(other)"} 12"#), "{text}");
    }
}
