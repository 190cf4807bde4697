//! What `loadgen` prints, one JSON line per scenario: written by `loadgen` and read by `cargo xtask
//! bench` through these types alone, so a renamed or missing key fails the read instead of writing a
//! zero into BENCHMARKS.md. Unknown keys fail too: the two sides change together.

use serde::{Deserialize, Serialize};

/// `loadgen echo`: closed-loop request/reply over `connections` connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Echo {
    pub connections: u64,
    /// Replies in the measured time (after the warm-up).
    pub replies: u64,
    pub per_second: f64,
    /// Round trips from the request's write to the reply's arrival at the client's socket (the
    /// kernel's receive timestamp): what the server and the network take.
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// The same round trips until the load generator's task read the reply: the above plus the
    /// time the reply waited for the load generator to be scheduled.
    pub read_p50_us: u64,
    pub read_p99_us: u64,
    /// CPU the server used in the measured time, when its pid was given.
    pub server_cpu: Option<CpuTime>,
    /// CPU the load generator used in the measured time (user + system, s).
    pub loadgen_cpu_seconds: f64,
}

/// CPU time of a process, in seconds, split as the kernel accounts it: running its own code, and
/// in system calls (on loopback, the peer's receive path runs in the sender's `send`). Kept apart
/// because they say different things: the user part is the server's code; the system part, on the
/// machine of BENCHMARKS.md, followed the rate of round trips alike for the broker and the baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTime {
    pub user: f64,
    pub system: f64,
}

impl CpuTime {
    pub fn total(self) -> f64 {
        self.user + self.system
    }

    /// Each part divided by `n`.
    pub fn per(self, n: f64) -> CpuTime {
        CpuTime { user: self.user / n, system: self.system / n }
    }
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime { user: self.user - earlier.user, system: self.system - earlier.system }
    }
}

/// `loadgen fanout`: one sender, a room of `members`, every member receiving every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fanout {
    pub members: u64,
    pub messages: u64,
    pub deliveries: u64,
    /// Deliveries expected (`members * messages`) but never received.
    pub lost: u64,
    /// Deliveries per second.
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `loadgen paced`: `fanout` with the sender held to `rate` messages a second (0: as fast as the
/// window of messages in flight allows), counting the frames that carry a history offset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paced {
    pub members: u64,
    pub messages: u64,
    /// Messages a second the sender was held to; 0: unpaced.
    pub rate: u64,
    pub deliveries: u64,
    /// Deliveries expected (`members * messages`) but never received.
    pub lost: u64,
    /// Deliveries carrying an `"offset"`: all of them with the room's history on, none without.
    pub numbered: u64,
    /// Deliveries per second.
    pub per_second: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// `loadgen recover`: a member leaves a room, `missed` messages go to it, the member comes back
/// with its last position and is replayed what it missed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recovery {
    pub missed: u64,
    /// The `recovered` frame's `recovered` and `replayed`.
    pub recovered: bool,
    pub replayed: u64,
    /// Every replayed frame carried the offset after the one before it, from the member's own.
    pub in_order: bool,
    /// From the start of the recovering connection: its handshake done, the `recovered` frame
    /// read, the last replayed frame read.
    pub handshake_ms: f64,
    pub told_ms: f64,
    pub last_ms: f64,
}

/// `loadgen hold`'s first line: the connections are open, the server may be measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub ready: u64,
    pub connect_seconds: f64,
}

/// `loadgen hold`'s last line, once stdin closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Held {
    pub held: u64,
}

/// `loadgen reload`: closed-loop echo while the plugin file is replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reload {
    pub connections: u64,
    pub swaps: u64,
    pub replies: u64,
    /// Replies that did not carry their request's number.
    pub lost: u64,
    pub worst_reply_ms: f64,
    /// The first two swaps, which compile their version.
    pub cold_swap_ms: Vec<f64>,
    /// The later swaps, whose versions come from the compile cache (0 when there are none).
    pub warm_swap_ms_median: f64,
    pub warm_swap_ms_max: f64,
}

/// `loadgen attack`: clients repeating a hostile action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attack {
    pub action: String,
    pub attacks: u64,
    /// Connections the broker closed for the attack (each replaced by a new one).
    pub closed: u64,
}

/// `cargo bench -p broker --bench dispatch -- --json`: the dispatch path, stage by stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dispatch {
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub stage: String,
    pub wall_ns: f64,
    pub cpu_ns: f64,
}

/// Reads the result `loadgen` (or the dispatch benchmark) printed last in `stdout` (earlier lines, such as `hold`'s `Ready`, are
/// read on their own).
pub fn last_line<T: serde::de::DeserializeOwned>(stdout: &str) -> anyhow::Result<T> {
    use anyhow::Context;
    let line = stdout.lines().last().context("loadgen printed nothing")?;
    serde_json::from_str(line).with_context(|| {
        format!("loadgen's result {line:?} is not a {} (xtask/bench/src/results.rs)", std::any::type_name::<T>())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_reads_back_as_written() -> anyhow::Result<()> {
        let echo = Echo {
            connections: 10,
            replies: 3000,
            per_second: 1000.5,
            p50_us: 90,
            p99_us: 200,
            p999_us: 900,
            read_p50_us: 95,
            read_p99_us: 400,
            server_cpu: Some(CpuTime { user: 0.5, system: 0.75 }),
            loadgen_cpu_seconds: 2.5,
        };
        let printed = serde_json::to_string(&echo)?;
        assert_eq!(last_line::<Echo>(&format!("warming up\n{printed}\n"))?, echo);
        let reload = Reload {
            connections: 100,
            swaps: 20,
            replies: 5,
            lost: 0,
            worst_reply_ms: 1.5,
            cold_swap_ms: vec![300.0, 280.0],
            warm_swap_ms_median: 4.0,
            warm_swap_ms_max: 9.0,
        };
        assert_eq!(last_line::<Reload>(&serde_json::to_string(&reload)?)?, reload);
        let paced = Paced {
            members: 1000,
            messages: 500,
            rate: 250,
            deliveries: 500_000,
            lost: 0,
            numbered: 500_000,
            per_second: 240_000.5,
            p50_us: 900,
            p99_us: 4000,
        };
        assert_eq!(last_line::<Paced>(&serde_json::to_string(&paced)?)?, paced);
        let recovery = Recovery {
            missed: 10_000,
            recovered: true,
            replayed: 10_000,
            in_order: true,
            handshake_ms: 0.4,
            told_ms: 12.5,
            last_ms: 80.25,
        };
        assert_eq!(last_line::<Recovery>(&serde_json::to_string(&recovery)?)?, recovery);
        Ok(())
    }

    #[test]
    fn a_renamed_or_missing_key_fails_the_read() {
        let renamed = r#"{"connections":1,"replies":1,"rate":1.0,"p50_us":1,"p99_us":1,"p999_us":1}"#;
        let error = last_line::<Echo>(renamed).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(error.contains("bench::results::Echo"), "{error}");
        assert!(last_line::<Attack>(r#"{"action":"spin","attacks":3}"#).is_err());
        assert!(last_line::<Held>("").is_err());
        let without_order = r#"{"missed":1,"recovered":true,"replayed":1,"handshake_ms":1,"told_ms":1,"last_ms":1}"#;
        assert!(last_line::<Recovery>(without_order).is_err());
        let extra = r#"{"members":1,"messages":1,"rate":0,"deliveries":1,"lost":0,"numbered":0,"per_second":1,"p50_us":1,"p99_us":1,"epoch":"x"}"#;
        assert!(last_line::<Paced>(extra).is_err());
    }
}
