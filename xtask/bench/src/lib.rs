//! Shared by the load generator and the baseline: the WebSocket settings both use, so that the
//! broker and the baseline are measured with the same client and comparable buffers.

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
