//! Live connections by id, and the one way to put a frame in a connection's outbound queue.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A connection's id, unique for the life of the process.
pub type ConnectionId = u64;

/// Close code for a client that does not read its frames fast enough.
pub const SLOW_CONSUMER: u16 = 4008;

/// What the write loop of a connection is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write a text frame. `Utf8Bytes` is reference-counted, so one frame can go to many queues.
    Frame(Utf8Bytes),
    /// Write a close frame after everything queued before it.
    Close(CloseReason),
}

/// A WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        CloseReason { code, reason: reason.into() }
    }
}

/// Closing out of band: skips the queue, for when the queue itself is the problem.
#[derive(Debug, Default)]
pub struct Control {
    close: Mutex<Option<CloseReason>>,
    notify: Notify,
}

impl Control {
    /// Asks the connection to close now; the first reason wins.
    pub fn close_now(&self, reason: CloseReason) {
        let mut slot = self.close.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
            // Wakes every `closed()` future already created, polled or not.
            self.notify.notify_waiters();
        }
    }

    /// The reason, once `close_now` was called.
    pub fn reason(&self) -> Option<CloseReason> {
        self.close.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Resolves once `close_now` has been called.
    pub async fn closed(&self) -> CloseReason {
        loop {
            let notified = self.notify.notified();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }
}

/// How to reach one connection from anywhere in the broker.
#[derive(Debug, Clone)]
pub struct Handle {
    pub outbound: mpsc::Sender<Outbound>,
    pub control: Arc<Control>,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
}

/// All live connections of this process.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    connections: DashMap<ConnectionId, Handle>,
}

impl Registry {
    /// Adds a connection and returns its new id.
    pub fn register(&self, handle: Handle) -> ConnectionId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.connections.insert(id, handle);
        id
    }

    pub fn remove(&self, id: ConnectionId) {
        self.connections.remove(&id);
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Queues a frame without waiting. A full queue means the client is not keeping up: it is closed
    /// as a slow consumer rather than buffered without bound or silently skipped.
    pub fn send(&self, id: ConnectionId, frame: Utf8Bytes) -> Result<(), SendError> {
        let handle = self.connections.get(&id).map(|h| h.clone()).ok_or(SendError::Closed)?;
        queue(&handle, Outbound::Frame(frame))
    }

    /// Closes a connection after the frames already queued.
    pub fn close(&self, id: ConnectionId, reason: CloseReason) -> Result<(), SendError> {
        let handle = self.connections.get(&id).map(|h| h.clone()).ok_or(SendError::Closed)?;
        queue(&handle, Outbound::Close(reason))
    }
}

fn queue(handle: &Handle, item: Outbound) -> Result<(), SendError> {
    if handle.control.reason().is_some() {
        return Err(SendError::Closed);
    }
    match handle.outbound.try_send(item) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(SendError::Closed),
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!(capacity = handle.outbound.max_capacity(), "closing slow consumer: outbound queue full");
            handle.control.close_now(CloseReason::new(SLOW_CONSUMER, "slow consumer: outbound queue full"));
            Err(SendError::Closed)
        }
    }
}
