//! The write half of a connection: the write loop draining the outbound queue under its deadlines,
//! and the lingering close that follows our close frame.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::hub::metrics::RouteMetrics;
use crate::hub::outbound::{self, CloseReason, Outbound, Queue};

/// The write loop's deadlines.
pub(super) struct WriteDeadlines {
    /// One write (a frame, a batch, a ping).
    pub(super) write: Duration,
    /// Our close frame, including what was still unwritten ahead of it.
    pub(super) close: Duration,
    pub(super) slow_closes: prometheus_client::metrics::counter::Counter,
}

/// Writes queued frames until a close frame is written or the queue ends. Gives the sink back when
/// our close frame went out, so the connection can linger; `None` when the socket is to be dropped.
///
/// A client that stops reading fills TCP and then stalls the write in progress: every write runs
/// under a deadline and is abandoned when the connection is closed meanwhile, so neither a full
/// socket nor a long queue can keep a closed connection's socket open.
pub(super) async fn write_loop<S>(
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    mut queue: Queue,
    control: outbound::ControlHeld,
    metrics: Arc<RouteMetrics>,
    deadlines: WriteDeadlines,
) -> Option<futures_util::stream::SplitSink<WebSocketStream<S>, Message>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let closed = control.closed();
    tokio::pin!(closed);
    // A replay being written, frame by frame. Its bytes count against the queue's bound until the
    // queue is asked for its next item, after the replay's last frame is written.
    let mut replay: Option<std::collections::VecDeque<Utf8Bytes>> = None;
    let reason = loop {
        let next_of_replay = replay.as_mut().and_then(|frames| frames.pop_front());
        let message = match next_of_replay {
            Some(text) => {
                metrics.frame_out(text.as_str());
                Message::Text(text)
            }
            None => {
                replay = None;
                // A close asked for wins over queued frames. Checked on the flag, not by polling
                // `closed` ahead of the queue: that poll is a measurable cost on every frame, and
                // the queue rarely finds the connection closing.
                if let Some(reason) = control.reason() {
                    break reason;
                }
                let item = tokio::select! {
                    biased;
                    item = queue.recv() => match item {
                        Some(item) => item,
                        // The queue ends when the connection is done with it: after a close
                        // asked for, that close frame goes out.
                        None if let Some(reason) = control.reason() => break reason,
                        None => {
                            let _ = tokio::time::timeout(deadlines.close, sink.close()).await;
                            return None;
                        }
                    },
                    reason = &mut closed => break reason,
                };
                match item {
                    Outbound::Close(reason) => {
                        control.close_now(reason.clone());
                        break reason;
                    }
                    // The frame's bytes count against the bound until the next `recv`, which this
                    // loop reaches only once the frame is written.
                    Outbound::Frame(text) => {
                        metrics.frame_out(text.as_str());
                        Message::Text(text)
                    }
                    Outbound::Frames(frames) => {
                        replay = Some(frames);
                        continue;
                    }
                    Outbound::Ping => Message::Ping(Default::default()),
                }
            }
        };
        // Batch: flush only when nothing else is waiting.
        let replaying = replay.as_ref().is_some_and(|frames| !frames.is_empty());
        let flush = (queue.is_empty() && !replaying) || !matches!(message, Message::Text(_));
        let write = async { if flush { sink.send(message).await } else { sink.feed(message).await } };
        tokio::pin!(write);
        // Most writes complete at once (the socket has room): they need no timer, whose deadline
        // reads the clock. Only a write that waits runs under the deadline, and gives way to a close.
        let written = match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
            Poll::Ready(written) => Ok(written),
            Poll::Pending => tokio::select! {
                biased;
                // What was left unwritten stays in tungstenite's buffer, ahead of the close frame.
                reason = &mut closed => break reason,
                written = tokio::time::timeout(deadlines.write, &mut write) => written,
            },
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return None,
            Err(_) => {
                let why = format!("a write waited {} ms", deadlines.write.as_millis());
                control.close_slow_consumer(&why, &deadlines.slow_closes);
                // The socket takes nothing: a close frame would only wait behind the stalled write.
                return None;
            }
        }
    };
    let frame = Message::Close(Some(close_frame(&reason)));
    match tokio::time::timeout(deadlines.close, sink.send(frame)).await {
        Ok(Ok(())) => Some(sink),
        _ => None,
    }
}

/// After our close frame: shut our side down and wait, for a bounded time, for the client's close
/// frame; a client that sends something else (the rest of a frame over the size limit, bytes
/// after a protocol error) has it read and dropped, up to a bounded amount. Closing with unread
/// bytes in the receive buffer makes the kernel send a reset, which a client still writing sees
/// instead of the close frame waiting for it.
pub(super) async fn linger<S>(ws: &mut WebSocketStream<S>, within: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// Past this much, a client still sending is not worth waiting for.
    const LINGER_BYTES: usize = 64 << 20;
    /// A client that sent nothing for this long has nothing more coming.
    const LINGER_PAUSE: Duration = Duration::from_millis(500);
    let _ = tokio::time::timeout(within, async {
        let _ = ws.get_mut().shutdown().await;
        // A client that answers with its close frame has completed the handshake.
        loop {
            match ws.next().await {
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => continue,
                // The socket ended (then the read below ends at once), or what follows is no
                // longer frames (tungstenite stops reading after an error).
                Some(Err(_)) | None => break,
            }
        }
        // Read what is left as bytes until the client stops, or pauses (nginx's lingering_timeout).
        let io = ws.get_mut();
        let mut buffer = vec![0; 16 << 10];
        let mut read = 0;
        while read < LINGER_BYTES {
            match tokio::time::timeout(LINGER_PAUSE, io.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => break,
                Ok(Ok(n)) => read += n,
            }
        }
    })
    .await;
}

/// A close frame the protocol allows: a valid code and a reason of at most 123 bytes.
fn close_frame(reason: &CloseReason) -> CloseFrame {
    let code = CloseCode::from(reason.code);
    let code = if code.is_allowed() { code } else { CloseCode::Error };
    let mut end = reason.reason.len().min(123);
    while !reason.reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame { code, reason: Utf8Bytes::from(&reason.reason[..end]) }
}
