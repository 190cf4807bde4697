//! A connection's outbound queue: what goes in it, and the two bounds on it (frames and bytes).
//!
//! Both bounds are the channel's (`lane`, which holds no memory while empty): a frame's bytes count
//! from when it is queued until the write loop has written it. A frame is serialized once and shared
//! (`Utf8Bytes` is reference-counted), so a broadcast costs one allocation, not one per member.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::wire::close_code::{GOING_AWAY, SLOW_CONSUMER};

mod lane;

use lane::TrySendError;

/// What the write loop of a connection is asked to do.
#[derive(Debug)]
pub enum Outbound {
    /// Write a text frame.
    Frame(Utf8Bytes),
    /// Write these text frames in order: a recovery's replay, one place in the queue however many
    /// frames it holds (and their bytes, until the last is written).
    Frames(std::collections::VecDeque<Utf8Bytes>),
    /// Write a close frame after everything queued before it.
    Close(CloseReason),
    /// Write a ping: the idle sweep asks a quiet client whether it is still there.
    Ping,
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

/// Closing out of band: skips the queue, for when the queue itself is the problem. Kept in the
/// queue's own allocation (`lane::lane_with`), its flags first (`repr(C)`): every message reads
/// them, and beside the queue's state they are on a line the message touches anyway.
#[derive(Debug)]
#[repr(C)]
pub struct Control {
    /// Set with `close`: lets every send check "closing?" without taking the lock.
    closing: AtomicBool,
    /// Set when the server shuts down (`Registry::shut_down`): the connection's read loop closes it
    /// with 1001 after the message it is handling. A flag of its own, rather than one token that
    /// every connection waits on, so no two connections touch the same memory per message.
    shutting_down: AtomicBool,
    /// Whether the client sent anything (a frame, a ping, a pong) since the idle sweep last looked:
    /// a flag per frame, where a time would read the clock per frame.
    heard: AtomicBool,
    close: Mutex<Option<CloseReason>>,
    /// Wakes what waits for a close or a shutdown.
    notify: Notify,
    /// When the idle sweep last found `heard`, on [`clock_ms`] (so at most one sweep late).
    last_seen_ms: AtomicU64,
    /// When the idle sweep last pinged it.
    last_ping_ms: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        let now = clock_ms();
        Control {
            closing: AtomicBool::new(false),
            close: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            notify: Notify::new(),
            heard: AtomicBool::new(false),
            last_seen_ms: AtomicU64::new(now),
            last_ping_ms: AtomicU64::new(now),
        }
    }
}

/// Milliseconds on a clock that starts with the process: cheap to store per connection.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What the idle sweep did with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    Active,
    Pinged,
    Closed,
}

impl Control {
    /// The client sent something: it is alive.
    pub fn seen(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }
    /// Asks the connection to close now; the first reason wins, and only its call returns true.
    pub fn close_now(&self, reason: CloseReason) -> bool {
        let mut slot = self.close.lock();
        if slot.is_some() {
            return false;
        }
        *slot = Some(reason);
        self.closing.store(true, Ordering::Release);
        // Wakes every `closed()` future already created, polled or not.
        self.notify.notify_waiters();
        true
    }

    /// The reason, once `close_now` was called.
    pub fn reason(&self) -> Option<CloseReason> {
        if !self.is_closing() {
            return None;
        }
        self.close.lock().clone()
    }

    /// Closes a client that does not take its frames (4008), counted in `closes` and logged once.
    pub fn close_slow_consumer(&self, why: &str, closes: &Counter) {
        if self.close_now(CloseReason::new(SLOW_CONSUMER, format!("slow consumer: {why}"))) {
            tracing::warn!(why, "closed a slow consumer");
            closes.inc();
        }
    }

    /// Whether `close_now` was called.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Resolves once `close_now` has been called.
    pub async fn closed(&self) -> CloseReason {
        self.until(|| self.reason()).await
    }

    /// Resolves with what `seen` finds once it finds something, rechecked on every wake-up of
    /// `notify` (a close or a shutdown).
    async fn until<T>(&self, seen: impl Fn() -> Option<T>) -> T {
        loop {
            // Created before the check, so a wake-up between the two is not missed.
            let notified = self.notify.notified();
            if let Some(found) = seen() {
                return found;
            }
            notified.await;
        }
    }

    /// Asks the connection to close because the server is shutting down.
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether `shut_down` was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Resolves once `close_now` or `shut_down` has been called: what a read loop waits for beside
    /// the socket, in one future (one waiter polled per wake-up, not two).
    pub async fn signalled(&self) -> Signal {
        self.until(|| {
            if self.is_closing() {
                Some(Signal::Closed)
            } else if self.is_shutting_down() {
                Some(Signal::ShutDown)
            } else {
                None
            }
        })
        .await
    }
}

/// What [`Control::signalled`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Closed,
    ShutDown,
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("the connection is closed")]
    Closed,
}

/// How to reach one connection's queue from anywhere in the broker.
#[derive(Debug, Clone)]
pub struct Handle {
    /// The queue, and the connection's [`Control`] beside its state.
    outbound: lane::Sender<Outbound, Control>,
    max_bytes: usize,
    /// Frames to this connection carry `message_id`, `timestamp` and `sender`.
    pub metadata: bool,
    slow_closes: Counter,
}

/// The receiving end, owned by the connection's write loop.
pub type Queue = lane::Receiver<Outbound, Control>;

/// A connection's [`Control`] held on its own: it does not keep the queue open.
pub type ControlHeld = lane::With<Outbound, Control>;

/// The bounds of one connection's queue.
#[derive(Debug, Clone)]
pub struct Bounds {
    pub max_frames: usize,
    pub max_bytes: usize,
    /// Counts the clients closed because they hit a bound.
    pub slow_closes: Counter,
}

/// A queue within `bounds`.
pub fn queue(bounds: &Bounds, metadata: bool) -> (Handle, Queue) {
    let (outbound, queue) = lane::lane_with(bounds.max_frames, bounds.max_bytes, Control::default());
    let handle = Handle { outbound, max_bytes: bounds.max_bytes, metadata, slow_closes: bounds.slow_closes.clone() };
    (handle, queue)
}

impl Handle {
    /// Closing out of band, and the flags every message reads.
    pub fn control(&self) -> &Control {
        self.outbound.with()
    }

    /// The same, held on its own.
    pub fn control_held(&self) -> ControlHeld {
        self.outbound.with_held()
    }

    /// The bytes a frame holds of the byte bound: its length, capped so one huge frame still fits
    /// an empty queue.
    fn cost(&self, frame: &Utf8Bytes) -> usize {
        frame.len().clamp(1, self.max_bytes)
    }

    /// Queues a frame without waiting. A full queue means the client is not keeping up: it is closed
    /// as a slow consumer rather than buffered without bound or silently skipped.
    pub fn try_send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        if self.control().is_closing() {
            return Err(SendError::Closed);
        }
        let cost = self.cost(&frame);
        self.queued(self.outbound.try_send(Outbound::Frame(frame), cost))
    }

    /// What `try_send` and `try_send_all` return for what the queue said.
    fn queued(&self, queued: Result<(), TrySendError<Outbound>>) -> Result<(), SendError> {
        match queued {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(TrySendError::TooManyBytes(_)) => Err(self.slow_consumer("outbound bytes")),
            Err(TrySendError::Full(_)) => Err(self.slow_consumer("outbound frames")),
        }
    }

    /// Queues frames as one item without waiting: a replay of thousands of frames takes one place
    /// of the frame bound and its bytes of the byte bound, so recovering a long absence is bounded
    /// by bytes, not by the count of frames a live burst is measured by.
    pub fn try_send_all(&self, frames: Vec<Utf8Bytes>) -> Result<(), SendError> {
        if frames.is_empty() {
            return Ok(());
        }
        if self.control().is_closing() {
            return Err(SendError::Closed);
        }
        let bytes: usize = frames.iter().map(|frame| frame.len().max(1)).sum();
        self.queued(self.outbound.try_send(Outbound::Frames(frames.into()), bytes.min(self.max_bytes)))
    }

    /// Queues a frame, waiting for room: for the connection's own replies, so a client that does
    /// not read them stops being read instead of being buffered for. Gives up when the connection
    /// is closed meanwhile: a reader blocked here must still see the close (an idle or
    /// slow-consumer close of a client that stopped reading).
    ///
    /// Called from the connection's own task, whose write loop is polled right after its read loop:
    /// queueing does not wake that task again (`lane::Sender::try_send_within`).
    pub async fn send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        if self.control().is_closing() {
            return Err(SendError::Closed);
        }
        let cost = self.cost(&frame);
        let mut item = Some(Outbound::Frame(frame));
        let queued = std::future::poll_fn(|cx| match item.take() {
            Some(item) => std::task::Poll::Ready(self.outbound.try_send_within(item, cost, cx.waker())),
            None => std::task::Poll::Pending,
        })
        .await;
        match queued {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(TrySendError::Full(item) | TrySendError::TooManyBytes(item)) => tokio::select! {
                biased;
                _ = self.control().closed() => Err(SendError::Closed),
                sent = self.outbound.send(item, cost) => sent.map_err(|_| SendError::Closed),
            },
        }
    }

    /// Queues a close frame after what is queued; closes at once when the queue is full.
    pub fn close(&self, reason: CloseReason) -> Result<(), SendError> {
        if self.control().is_closing() {
            return Err(SendError::Closed);
        }
        // A close frame takes a place in the queue, and none of its bytes.
        match self.outbound.try_send(Outbound::Close(reason), 0) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
            Err(TrySendError::Full(Outbound::Close(reason)) | TrySendError::TooManyBytes(Outbound::Close(reason))) => {
                self.control().close_now(reason);
                Ok(())
            }
            Err(TrySendError::Full(_) | TrySendError::TooManyBytes(_)) => Err(SendError::Closed),
        }
    }

    /// Like [`Handle::close`], waiting for room instead of skipping the queue. Stops waiting when the connection closes meanwhile (a queue that never drains is closed by
    /// the write deadline).
    pub async fn close_after_queue(&self, reason: CloseReason) {
        let queued = tokio::select! {
            biased;
            _ = self.control().closed() => return,
            queued = self.outbound.send(Outbound::Close(reason), 0) => queued,
        };
        if let Err(lane::Closed(Outbound::Close(reason))) = queued {
            self.control().close_now(reason);
        }
    }

    /// Pings the client after `ping_after` of silence (once per `ping_after`), and closes it with
    /// 1001 after `close_after`: a peer that stopped answering is gone.
    pub fn sweep_idle(&self, now_ms: u64, ping_after: u64, close_after: u64) -> Idle {
        let control = self.control();
        if control.heard.swap(false, Ordering::Relaxed) {
            control.last_seen_ms.store(now_ms, Ordering::Relaxed);
        }
        let quiet = now_ms.saturating_sub(control.last_seen_ms.load(Ordering::Relaxed));
        if quiet >= close_after {
            let reason = CloseReason::new(GOING_AWAY, format!("idle: nothing received for {quiet} ms"));
            return if control.close_now(reason) { Idle::Closed } else { Idle::Active };
        }
        let since_ping = now_ms.saturating_sub(control.last_ping_ms.load(Ordering::Relaxed));
        if quiet < ping_after || since_ping < ping_after {
            return Idle::Active;
        }
        control.last_ping_ms.store(now_ms, Ordering::Relaxed);
        // A full queue is a client not reading: the frames ahead of the ping will say so.
        let _ = self.outbound.try_send(Outbound::Ping, 0);
        Idle::Pinged
    }

    fn slow_consumer(&self, bound: &str) -> SendError {
        self.control().close_slow_consumer(&format!("{bound} queue full"), &self.slow_closes);
        SendError::Closed
    }
}

/// One frame on its way to one or many connections: serialized once, stamped with metadata at most
/// once (for the connections whose route asks for it).
pub struct Delivery {
    plain: Utf8Bytes,
    stamped: OnceLock<Utf8Bytes>,
    sender: String,
}

impl Delivery {
    /// A frame (a JSON object, already checked) sent on behalf of `sender`.
    pub fn new(frame: String, sender: String) -> Delivery {
        Delivery { plain: Utf8Bytes::from(frame), stamped: OnceLock::new(), sender }
    }

    /// The frame as the plugin sent it.
    pub fn frame(&self) -> &str {
        self.plain.as_str()
    }

    /// Who sent it, for the metadata stamp.
    pub fn sender(&self) -> &str {
        &self.sender
    }

    /// The bytes for a connection: stamped if its route wants metadata.
    pub fn for_handle(&self, handle: &Handle) -> Utf8Bytes {
        if !handle.metadata {
            return self.plain.clone();
        }
        self.stamped
            .get_or_init(|| Utf8Bytes::from(crate::wire::protocol::stamp(self.plain.as_str(), &self.sender)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_sweep_counts_silence_from_the_last_sweep_that_heard_the_client() {
        let bounds = Bounds { max_frames: 8, max_bytes: 1024, slow_closes: Counter::default() };
        let (handle, mut queue) = queue(&bounds, false);
        let start = clock_ms();
        handle.control().seen();
        // Heard since the last look: active, however long ago the connection opened.
        assert_eq!(handle.sweep_idle(start + 10_000, 1_000, 5_000), Idle::Active);
        assert_eq!(handle.sweep_idle(start + 11_000, 1_000, 5_000), Idle::Pinged);
        assert!(matches!(queue.try_recv(), Ok(Outbound::Ping)));
        handle.control().seen();
        assert_eq!(handle.sweep_idle(start + 12_000, 1_000, 5_000), Idle::Active);
        assert_eq!(handle.sweep_idle(start + 16_999, 1_000, 5_000), Idle::Pinged);
        assert_eq!(handle.sweep_idle(start + 17_000, 1_000, 5_000), Idle::Closed);
        assert_eq!(handle.control().reason().map(|r| r.code), Some(GOING_AWAY));
    }
}
