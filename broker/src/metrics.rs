//! Prometheus metrics, served at `/metrics`. No global registry: the server owns one `Metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

use crate::registry::Registry;

/// The broker's metrics. Counters are cheap clones sharing one value, handed to whoever counts.
pub struct Metrics {
    registry: PromRegistry,
    connections: Gauge,
    groups: Gauge,
    group_members: Gauge,
    /// Clients closed because their outbound queue was full (`server.outbound_queue*`).
    pub slow_consumer_closes: Counter,
    /// Frames delivered through `POST /api/publish`.
    pub api_published: Counter,
    /// Reloads by kind (`plugin`, `config`) and result (`ok`, `failed`).
    reloads: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = PromRegistry::with_prefix("broker");
        let metrics = Metrics {
            connections: Gauge::default(),
            groups: Gauge::default(),
            group_members: Gauge::default(),
            slow_consumer_closes: Counter::default(),
            api_published: Counter::default(),
            reloads: Family::default(),
            registry: PromRegistry::default(),
        };
        registry.register("connections", "Open WebSocket connections", metrics.connections.clone());
        registry.register("groups", "Groups with at least one member", metrics.groups.clone());
        registry.register("group_members", "Memberships over all groups", metrics.group_members.clone());
        registry.register(
            "slow_consumer_closes",
            "Clients closed because their outbound queue was full",
            metrics.slow_consumer_closes.clone(),
        );
        registry.register("api_published", "Frames delivered through the publish API", metrics.api_published.clone());
        registry.register("reloads", "Plugin and configuration reloads, by result", metrics.reloads.clone());
        Metrics { registry, ..metrics }
    }
}

impl Metrics {
    /// Counts a reload of `kind` (`plugin` or `config`).
    pub fn reloaded(&self, kind: &'static str, ok: bool) {
        self.reloads.get_or_create(&vec![("kind", kind), ("result", if ok { "ok" } else { "failed" })]).inc();
    }

    /// The Prometheus text exposition, with gauges read from the live registry.
    pub fn render(&self, live: &Registry) -> String {
        self.connections.set(live.len() as i64);
        self.groups.set(live.group_count() as i64);
        self.group_members.set(live.membership_count() as i64);
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}
