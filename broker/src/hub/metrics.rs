//! Prometheus metrics, served at `/metrics`. No global registry: the server owns one `Metrics`,
//! and whoever counts holds a clone of the counter it needs (clones share one value), resolved once
//! per connection or plugin so the per-frame path does no label lookup.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::registry::Registry as PromRegistry;

use crossbeam_utils::CachePadded;
use thread_local::ThreadLocal;

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
    /// The counters of each route with connections open (weak: they hold the metrics).
    routes: parking_lot::Mutex<HashMap<String, Weak<RouteMetrics>>>,
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
            routes: Default::default(),
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

/// The counters of one connection: its route's, which it shares with the route's other
/// connections. It counts as open until dropped.
pub struct ConnectionMetrics {
    route: Arc<RouteMetrics>,
}

impl ConnectionMetrics {
    /// The broker's metrics, for what is not per connection.
    pub fn shared(&self) -> &Metrics {
        &self.route.metrics
    }

    /// The counters of the frames, for the write loop.
    pub fn route(&self) -> &Arc<RouteMetrics> {
        &self.route
    }

    /// Counts a client frame of `action` (`None`: the frame had no valid action).
    pub fn frame_in(&self, action: Option<&str>, bytes: usize) {
        self.route.frame_in(action, bytes);
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.route.open.dec();
    }
}

/// The frame counters of one route, shared by its connections and resolved once per connection,
/// so the per-frame path does no label lookup.
///
/// Not one set per connection: each connection's own counters were two or three more lines of its
/// own memory written on every frame, cold in the caches when a thousand connections take turns.
/// A route's are written by every connection of it, so they stay warm. A series' value is kept
/// per thread (`per_thread`), and each thread finds a series of an action in a cache of its own,
/// written by no other thread.
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    route: String,
    open: Gauge,
    bytes_in: PerThreadCounter,
    bytes_out: PerThreadCounter,
    /// Padded: the parts of two threads may be adjacent, and each part is written on every frame.
    actions: ThreadLocal<CachePadded<RefCell<Actions>>>,
}

/// A thread's counters of a route's series by action, found by a short scan.
#[derive(Default)]
struct Actions {
    frames_in: Vec<(Box<str>, PerThreadCounter)>,
    frames_out: Vec<(Box<str>, PerThreadCounter)>,
}

/// The most actions a thread keeps per route and direction. Client frames have the plugin's
/// actions only; a plugin may send any, and past this many the others are looked up in the family
/// (a process-wide lock) frame by frame rather than kept.
const CACHED_ACTIONS: usize = MAX_OUT_ACTIONS;

impl RouteMetrics {
    /// Counts a client frame of `action` (`None`: the frame had no valid action).
    pub fn frame_in(&self, action: Option<&str>, bytes: usize) {
        self.bytes_in.inc_by(bytes as u64);
        let action = action.unwrap_or("(invalid)");
        self.count(|actions| &mut actions.frames_in, &self.metrics.frames_in, action, || true);
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
        self.count(|actions| &mut actions.frames_out, &self.metrics.frames_out, action, admit);
    }

    /// Counts one frame of `action` on this thread's counter of it. Only an action the thread has
    /// not seen yet on this route goes to the shared family (and `admit`, which takes a
    /// process-wide lock).
    fn count(
        &self,
        direction: impl FnOnce(&mut Actions) -> &mut Vec<(Box<str>, PerThreadCounter)>,
        family: &Family<Labels, PerThreadCounter>,
        action: &str,
        admit: impl FnOnce() -> bool,
    ) {
        let mut actions = self.actions.get_or_default().borrow_mut();
        let known = direction(&mut actions);
        if let Some((_, counter)) = known.iter().find(|(a, _)| **a == *action) {
            counter.inc();
            return;
        }
        let label = if admit() { action } else { "(other)" };
        let counter = family.get_or_create(&vec![("route", self.route.clone()), ("action", label.into())]).clone();
        counter.inc();
        if known.len() < CACHED_ACTIONS {
            known.push((action.into(), counter));
        }
    }
}

impl Metrics {
    /// The counters of a new connection on `route`; it counts as open until dropped.
    pub fn connection(self: &Arc<Self>, route: &str) -> ConnectionMetrics {
        let mut routes = self.routes.lock();
        let shared = routes.get(route).and_then(Weak::upgrade).unwrap_or_else(|| {
            let by_route = |family: &Family<Labels, PerThreadCounter>| {
                family.get_or_create(&vec![("route", route.to_owned())]).clone()
            };
            let shared = Arc::new(RouteMetrics {
                metrics: self.clone(),
                route: route.to_owned(),
                open: self.connections_by_route.get_or_create(&vec![("route", route.to_owned())]).clone(),
                bytes_in: by_route(&self.bytes_in),
                bytes_out: by_route(&self.bytes_out),
                actions: ThreadLocal::new(),
            });
            routes.insert(route.to_owned(), Arc::downgrade(&shared));
            shared
        });
        drop(routes);
        shared.open.inc();
        ConnectionMetrics { route: shared }
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

    fn rendered(metrics: &Metrics) -> String {
        let limits = crate::hub::registry::Limits { max_groups_per_connection: 1, session_bytes: 1 };
        metrics.render(&Registry::new(limits, None))
    }

    #[test]
    fn frames_in_are_counted_by_route_and_action_over_connections_and_threads() {
        let metrics = Arc::new(Metrics::default());
        let (a1, a2, b) = (metrics.connection("/a"), metrics.connection("/a"), metrics.connection("/b"));
        assert!(Arc::ptr_eq(a1.route(), a2.route()), "one set of counters per route");
        for action in [Some("x"), Some("y"), Some("x"), None] {
            a1.frame_in(action, 1);
            a2.frame_in(action, 1);
        }
        // Another thread counts in its own parts and its own cache of the actions.
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for action in [Some("x"), Some("z")] {
                    a2.frame_in(action, 1);
                }
                b.frame_in(Some("x"), 1);
            });
        });
        a1.frame_in(Some("z"), 1);
        let text = rendered(&metrics);
        for (route, action, count) in
            [("/a", "x", 5), ("/a", "y", 2), ("/a", "z", 2), ("/a", "(invalid)", 2), ("/b", "x", 1)]
        {
            let series = format!(r#"broker_frames_in_total{{route="{route}",action="{action}"}} {count}"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
        assert!(text.contains(r#"broker_bytes_in_total{route="/a"} 11"#), "{text}");
        assert!(text.contains(r#"broker_route_connections{route="/a"} 2"#), "{text}");
        drop((a1, a2));
        // The route's counters outlive its connections: a new one counts on from where they were.
        let a3 = metrics.connection("/a");
        a3.frame_in(Some("x"), 1);
        let text = rendered(&metrics);
        assert!(text.contains(r#"broker_route_connections{route="/a"} 1"#), "{text}");
        assert!(text.contains(r#"broker_frames_in_total{route="/a",action="x"} 6"#), "{text}");
    }

    #[test]
    fn frames_out_are_counted_by_action_up_to_the_series_bound() {
        let metrics = Arc::new(Metrics::default());
        let (a, b) = (metrics.connection("/a"), metrics.connection("/b"));
        for _ in 0..3 {
            a.route().frame_out(r#"{"action":"hello","payload":1}"#);
        }
        b.route().frame_out(r#"{"type":"no action"}"#);
        // Twice: the second time, past the thread's cache of actions, is counted as the first.
        for _ in 0..2 {
            for i in 0..MAX_OUT_ACTIONS + 10 {
                b.route().frame_out(&format!(r#"{{"action":"a{i}"}}"#));
            }
        }
        let text = rendered(&metrics);
        assert!(text.contains(r#"broker_frames_out_total{route="/a",action="hello"} 3"#), "{text}");
        assert!(text.contains(r#"broker_frames_out_total{route="/b",action="(none)"} 1"#), "{text}");
        assert!(text.contains(r#"broker_frames_out_total{route="/b",action="a0"} 2"#), "{text}");
        // 256 series: hello, (none) and 254 of b's actions; its other 12 share one series.
        assert!(text.contains(r#"broker_frames_out_total{route="/b",action="(other)"} 24"#), "{text}");
    }
}
