//! What bounds the orders one client can leave in the shop's key-value store, which every client
//! of the namespace shares: a quota per client and a lifetime per order.

use std::time::Duration;

use plugin_sdk::{Context, Error, Result, kv};
use serde::Deserialize;

/// The session key counting the orders an anonymous connection has placed.
const PLACED: &str = "orders_placed";

/// `[plugins.assistant.settings.orders]` in broker.toml.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Orders one client may place: an anonymous connection in its lifetime, an authenticated user
    /// (the token's `sub`) over all its connections until `ttl_s` after its last order.
    pub max_per_client: u32,
    /// Seconds an order is kept; then it is gone from the store (and from `order_status`).
    pub ttl_s: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { max_per_client: 10, ttl_s: 24 * 60 * 60 }
    }
}

impl Rules {
    /// Refuses settings that would keep orders forever.
    pub fn check(&self) -> Result<()> {
        if self.ttl_s == 0 {
            return Err(Error::msg("plugin settings: orders.ttl_s must be at least 1 (seconds an order is kept)"));
        }
        Ok(())
    }

    /// How long an order, and an authenticated user's count, is kept.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_s)
    }

    /// Takes one order from the client's quota. `Ok(Err(why))` is a refusal for the client.
    pub fn take(&self, ctx: &Context) -> Result<std::result::Result<(), String>> {
        let max = self.max_per_client;
        let taken = match ctx.user() {
            None => {
                let placed: u32 = ctx.session_get_json(PLACED)?.unwrap_or(0);
                if placed >= max {
                    false
                } else {
                    ctx.session_set_json(PLACED, &(placed + 1))?;
                    true
                }
            }
            Some(user) => add(&user_key(user), 1, Some(max), self.ttl())?,
        };
        Ok(if taken {
            Ok(())
        } else if let Some(user) = ctx.user() {
            Err(format!(
                "order refused: {user:?} may place at most {max} orders until {}s after its last one \
                 (settings.orders.max_per_client)",
                self.ttl_s
            ))
        } else {
            Err(format!(
                "order refused: one connection may place at most {max} orders (settings.orders.max_per_client)"
            ))
        })
    }

    /// Gives back what `take` took, for an order that could not be stored.
    pub fn give_back(&self, ctx: &Context) -> Result<()> {
        match ctx.user() {
            None => {
                let placed: u32 = ctx.session_get_json(PLACED)?.unwrap_or(0);
                ctx.session_set_json(PLACED, &placed.saturating_sub(1))
            }
            Some(user) => add(&user_key(user), -1, None, self.ttl()).map(drop),
        }
    }
}

fn user_key(user: &str) -> String {
    format!("orders-of:{user}")
}

/// Adds `delta` to the count under `key` unless it would pass `max`; safe against the user's
/// other connections doing the same at once. False when it would pass `max`.
fn add(key: &str, delta: i64, max: Option<u32>, ttl: Duration) -> Result<bool> {
    loop {
        let current = kv::get(key)?;
        let count = current.as_deref().and_then(|n| n.parse::<i64>().ok()).unwrap_or(0);
        let next = count.saturating_add(delta).max(0);
        if max.is_some_and(|max| next > i64::from(max)) {
            return Ok(false);
        }
        if kv::compare_and_swap(key, current.as_deref(), Some(&next.to_string()), Some(ttl))? {
            return Ok(true);
        }
    }
}
