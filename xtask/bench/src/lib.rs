//! Shared by the load generator and the baseline: the WebSocket settings both use, so that the
//! broker and the baseline are measured with the same client and comparable buffers. Also shared
//! by the benchmarks and the black-box tests: the generations of the `versioned` plugin, and a
//! redis-server to run a cluster against. `results` types what the load generator prints, for it and
//! `cargo xtask bench`.

pub mod results;
pub mod stamped;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Small buffers, as the broker uses: benchmarks with 100,000 connections need them.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096)
}

/// Raises this process's open-files limit as far as it can (the hard limit too, when root).
pub fn raise_fd_limit() -> u64 {
    let wanted = 1 << 20;
    let _ = rlimit::setrlimit(rlimit::Resource::NOFILE, wanted, wanted);
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// The CPU time process `pid` has used so far (`/proc/PID/stat`'s utime and stime).
pub fn cpu_time(pid: u32) -> anyhow::Result<results::CpuTime> {
    use anyhow::Context;
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    stat_cpu_time(&stat).with_context(|| format!("{path}: {stat:?}"))
}

/// utime and stime of a `/proc/PID/stat` line, in clock ticks of 1/100 s. They are fields 14 and
/// 15; counted after the `(comm)`, which may hold spaces and parentheses, 12 and 13 (1-based).
fn stat_cpu_time(stat: &str) -> anyhow::Result<results::CpuTime> {
    use anyhow::Context;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let seconds = |i: usize| -> anyhow::Result<f64> {
        let field = fields.get(i).with_context(|| format!("no field {}", i + 3))?;
        let ticks: f64 = field.parse().with_context(|| format!("field {} is {field:?}, not a number", i + 3))?;
        Ok(ticks / 100.0)
    };
    Ok(results::CpuTime { user: seconds(11)?, system: seconds(12)? })
}

/// The marker the `versioned` test plugin carries in its replies.
pub const MARKER: &[u8] = b"GENERATION-000";

/// A copy of the `versioned` test plugin whose marker reads `GENERATION-<generation>`: a new
/// version of a plugin without a compiler, for reload tests and benchmarks. `None` when the
/// marker is not in `component`.
pub fn versioned(component: &[u8], generation: u32) -> Option<Vec<u8>> {
    let to = format!("GENERATION-{generation:03}").into_bytes();
    let (mut out, mut replaced) = (Vec::with_capacity(component.len()), 0);
    let mut i = 0;
    while i < component.len() {
        if component[i..].starts_with(MARKER) {
            out.extend_from_slice(&to);
            i += MARKER.len();
            replaced += 1;
        } else {
            out.push(component[i]);
            i += 1;
        }
    }
    (replaced > 0).then_some(out)
}

/// A redis-server of its own on a free loopback port, without persistence, killed when dropped:
/// for the cluster benchmark and the cluster tests.
pub struct Redis {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Starts redis-server (from PATH) with its files in `dir`, and waits until it answers PING.
    pub fn start(dir: &std::path::Path) -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Redis::spawn(port, dir)?;
        Ok(Redis { child, port, dir: dir.to_owned() })
    }

    fn spawn(port: u16, dir: &std::path::Path) -> anyhow::Result<std::process::Child> {
        use anyhow::Context;
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start redis-server (Debian: apt-get install redis-server; `cargo xtask test` does)")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !pings(port) {
            anyhow::ensure!(std::time::Instant::now() < deadline, "redis-server did not answer on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(child)
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh, empty server on the same port, as after a crash without persistence.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.child = Redis::spawn(self.port, &self.dir)?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn pings(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    tcp.write_all(b"PING\r\n").is_ok() && tcp.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_reads_utime_and_stime_past_a_command_with_spaces_and_parentheses() -> anyhow::Result<()> {
        let stat = "4242 (my (odd) srv) S 1 4242 4242 0 -1 4194560 2571 0 0 0 731 268 0 0 20 0 3 0 12345 0 0";
        assert_eq!(stat_cpu_time(stat)?, results::CpuTime { user: 7.31, system: 2.68 });
        assert!(stat_cpu_time("4242 (srv) S 1 4242").is_err());
        Ok(())
    }
}
