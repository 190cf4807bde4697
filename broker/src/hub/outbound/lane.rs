//! The channel under a connection's outbound queue: bounded in items and in bytes, many senders,
//! one receiver, and nothing allocated while it is empty.
//!
//! tokio's bounded `mpsc` allocates its first block of 32 slots when it is created, 1.8 KiB for
//! the 56-byte `Outbound`, which every idle connection kept: a fifth of its memory. Here the items
//! live in a `VecDeque` that grows with a burst and is given back once the burst is written.
//!
//! The bytes are counted under the same lock as the items, not by a semaphore beside it: a
//! semaphore is one more allocation per connection whose memory each message touched (a permit
//! taken, then given back under the semaphore's own lock), cold in the caches when a thousand
//! connections take turns.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Past this many slots, a drained queue gives its memory back: a burst's size is not kept.
const KEPT_CAPACITY: usize = 8;

struct State<T> {
    /// Each item with its bytes.
    items: VecDeque<(T, usize)>,
    /// The bytes of the queued items and of the one the receiver took last, until it is written.
    bytes: usize,
    senders: usize,
    receiving: bool,
    receiver: Option<Waker>,
}

/// In this order (`repr(C)`): what every item touches first, then what rides with the channel.
#[repr(C)]
struct Shared<T, W> {
    /// A panic while it is held leaves the queue consistent, so the lock does not poison.
    state: Mutex<State<T>>,
    capacity: usize,
    max_bytes: usize,
    /// What the owner keeps with the channel, in the same allocation: state read with every item
    /// (a connection's close flags) is then on the lines the item touches anyway, not on a line of
    /// an allocation of its own, cold when a thousand connections take turns.
    with: W,
    /// Senders waiting for room are woken one per item taken (or, the queue empty, per item's
    /// bytes given back), and all when the receiver goes.
    room: Notify,
}

/// A channel with nothing beside its state, for the tests of the channel itself.
#[cfg(test)]
pub fn lane<T>(capacity: usize, max_bytes: usize) -> (Sender<T>, Receiver<T>) {
    lane_with(capacity, max_bytes, ())
}

/// A channel of at most `capacity` items (at least one) and `max_bytes` bytes, keeping `with`
/// beside its state (see [`Sender::with`]). An item's bytes are what its sender says it weighs;
/// one of more than `max_bytes` never fits.
pub fn lane_with<T, W>(capacity: usize, max_bytes: usize, with: W) -> (Sender<T, W>, Receiver<T, W>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), bytes: 0, senders: 1, receiving: true, receiver: None }),
        capacity: capacity.max(1),
        max_bytes,
        with,
        room: Notify::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared, taken: 0 })
}

/// What a channel keeps beside its state, held without being a sender or the receiver: it does
/// not keep the channel open.
pub struct With<T, W>(Arc<Shared<T, W>>);

impl<T, W> Clone for With<T, W> {
    fn clone(&self) -> Self {
        With(self.0.clone())
    }
}

impl<T, W> std::ops::Deref for With<T, W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.0.with
    }
}

/// Why `try_send` did not queue the item, which it gives back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// `capacity` items are queued.
    Full(T),
    /// Its bytes would take the queue past `max_bytes`.
    TooManyBytes(T),
    Closed(T),
}

/// The receiver is gone; the item is given back.
#[derive(Debug)]
pub struct Closed<T>(pub T);

/// Why `try_recv` has nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum TryRecvError {
    Empty,
    Disconnected,
}

pub struct Sender<T, W = ()> {
    shared: Arc<Shared<T, W>>,
}

impl<T, W> std::fmt::Debug for Sender<T, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("capacity", &self.shared.capacity).finish_non_exhaustive()
    }
}

impl<T, W> Clone for Sender<T, W> {
    fn clone(&self) -> Self {
        self.shared.state.lock().senders += 1;
        Sender { shared: self.shared.clone() }
    }
}

impl<T, W> Drop for Sender<T, W> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        state.senders -= 1;
        let wake = if state.senders == 0 { state.receiver.take() } else { None };
        drop(state);
        if let Some(waker) = wake {
            waker.wake();
        }
    }
}

impl<T, W> Sender<T, W> {
    /// What the channel keeps beside its state.
    pub fn with(&self) -> &W {
        &self.shared.with
    }

    /// The same, held on its own.
    pub fn with_held(&self) -> With<T, W> {
        With(self.shared.clone())
    }

    /// Queues `item`, of `bytes` bytes, if there is room for both.
    pub fn try_send(&self, item: T, bytes: usize) -> Result<(), TrySendError<T>> {
        self.push(item, bytes, None)
    }

    /// Queues `item` if there is room, from a task woken by `current`: a receiver in that same
    /// task is not woken, since it is polled after the sender in the same wake-up (the connection
    /// task polls its read loop, then its write loop). Waking the task that is running costs it a
    /// second poll of everything it waits on, for nothing.
    pub fn try_send_within(&self, item: T, bytes: usize, current: &Waker) -> Result<(), TrySendError<T>> {
        self.push(item, bytes, Some(current))
    }

    fn push(&self, item: T, bytes: usize, current: Option<&Waker>) -> Result<(), TrySendError<T>> {
        let mut state = self.shared.state.lock();
        if !state.receiving {
            return Err(TrySendError::Closed(item));
        }
        if state.bytes.saturating_add(bytes) > self.shared.max_bytes {
            return Err(TrySendError::TooManyBytes(item));
        }
        if state.items.len() >= self.shared.capacity {
            return Err(TrySendError::Full(item));
        }
        state.bytes += bytes;
        state.items.push_back((item, bytes));
        let own = |waker: &Waker| current.is_some_and(|current| waker.will_wake(current));
        let waker = if state.receiver.as_ref().is_some_and(own) { None } else { state.receiver.take() };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Queues `item`, of `bytes` bytes, waiting for room for both.
    pub async fn send(&self, mut item: T, bytes: usize) -> Result<(), Closed<T>> {
        loop {
            // Registered before trying, so room made between the try and the wait is not missed.
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_send(item, bytes) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(Closed(back)),
                Err(TrySendError::Full(back) | TrySendError::TooManyBytes(back)) => item = back,
            }
            room.await;
        }
    }
}

pub struct Receiver<T, W = ()> {
    shared: Arc<Shared<T, W>>,
    /// The bytes of the item taken last, held against `max_bytes` until the next is asked for.
    taken: usize,
}

impl<T, W> Receiver<T, W> {
    /// The next item; `None` once it is empty and every sender is gone.
    ///
    /// The item taken before is taken to be done with (the write loop asks for the next frame once
    /// the last is written): its bytes are given back here, not when it was taken, so a frame in
    /// the middle of its write still counts against the bound.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            let mut state = self.shared.state.lock();
            match take(&self.shared, &mut state, &mut self.taken) {
                Ok(item) => Poll::Ready(Some(item)),
                Err(TryRecvError::Disconnected) => Poll::Ready(None),
                Err(TryRecvError::Empty) => {
                    if !state.receiver.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
                        state.receiver = Some(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Like [`Receiver::recv`], without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.state.lock();
        take(&self.shared, &mut state, &mut self.taken)
    }

    pub fn is_empty(&self) -> bool {
        self.shared.state.lock().items.is_empty()
    }
}

/// The next item, after giving back the bytes of the one taken before (`taken`).
fn take<T, W>(shared: &Shared<T, W>, state: &mut State<T>, taken: &mut usize) -> Result<T, TryRecvError> {
    let released = std::mem::take(taken);
    state.bytes -= released;
    let Some((item, bytes)) = state.items.pop_front() else {
        if released > 0 {
            shared.room.notify_one();
        }
        return Err(if state.senders == 0 { TryRecvError::Disconnected } else { TryRecvError::Empty });
    };
    *taken = bytes;
    if state.items.is_empty() && state.items.capacity() > KEPT_CAPACITY {
        state.items = VecDeque::new();
    }
    shared.room.notify_one();
    Ok(item)
}

impl<T, W> Drop for Receiver<T, W> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.state.lock();
            state.receiving = false;
            std::mem::take(&mut state.items)
        };
        // Dropped outside the lock: an item's drop may release a permit that wakes someone.
        drop(items);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_up_to_the_bound() {
        let (tx, mut rx) = lane(2, usize::MAX);
        tx.try_send(1, 0).unwrap();
        tx.try_send(2, 0).unwrap();
        assert!(matches!(tx.try_send(3, 0), Err(TrySendError::Full(3))));
        assert_eq!((rx.recv().await, rx.recv().await), (Some(1), Some(2)));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(rx.is_empty());
    }

    #[tokio::test]
    async fn the_receiver_ends_once_every_sender_is_gone_and_it_is_drained() {
        let (tx, mut rx) = lane(4, usize::MAX);
        let other = tx.clone();
        tx.try_send("a", 0).unwrap();
        drop(tx);
        other.try_send("b", 0).unwrap();
        let waiting = tokio::spawn(async move { (rx.recv().await, rx.recv().await, rx.recv().await) });
        drop(other);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(got, (Some("a"), Some("b"), None));
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_and_fails_when_the_receiver_goes() {
        let (tx, mut rx) = lane(1, usize::MAX);
        tx.try_send(1, 0).unwrap();
        let sender = tx.clone();
        let waiting = tokio::spawn(async move { sender.send(2, 0).await.map_err(|Closed(item)| item) });
        tokio::task::yield_now().await;
        assert_eq!(rx.recv().await, Some(1));
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
        assert_eq!(rx.recv().await, Some(2));

        tx.try_send(3, 0).unwrap();
        let sender = tx.clone();
        let refused = tokio::spawn(async move { sender.send(4, 0).await.map_err(|Closed(item)| item) });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), refused).await.unwrap().unwrap(), Err(4));
        assert!(matches!(tx.try_send(5, 0), Err(TrySendError::Closed(5))));
    }

    #[tokio::test]
    async fn bytes_count_against_the_bound_until_the_next_item_is_asked_for() {
        let (tx, mut rx) = lane(8, 10);
        tx.try_send('a', 6).unwrap();
        assert!(matches!(tx.try_send('b', 5), Err(TrySendError::TooManyBytes('b'))));
        tx.try_send('b', 4).unwrap();
        assert_eq!(rx.try_recv(), Ok('a'));
        // 'a' is taken but not yet written: its bytes still count.
        assert!(matches!(tx.try_send('c', 1), Err(TrySendError::TooManyBytes('c'))));
        let sender = tx.clone();
        let waiting = tokio::spawn(async move { sender.send('c', 6).await.map_err(|Closed(item)| item) });
        tokio::task::yield_now().await;
        // Asking for the next item gives back the bytes of 'a': 'c' fits beside 'b'.
        assert_eq!(rx.recv().await, Some('b'));
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
        assert_eq!(rx.recv().await, Some('c'));
        assert!(matches!(tx.try_send('d', 5), Err(TrySendError::TooManyBytes('d'))));
        // Nothing left: the last item's bytes come back on an empty queue too.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        tx.try_send('d', 10).unwrap();
        assert!(matches!(tx.try_send('e', 11), Err(TrySendError::TooManyBytes('e'))));
    }

    #[tokio::test]
    async fn an_empty_queue_holds_no_memory_and_a_drained_burst_gives_it_back() {
        let (tx, mut rx) = lane(4096, usize::MAX);
        assert_eq!(tx.shared.state.lock().items.capacity(), 0);
        for i in 0..1000 {
            tx.try_send(i, 0).unwrap();
        }
        for i in 0..1000 {
            assert_eq!(rx.recv().await, Some(i));
        }
        assert!(tx.shared.state.lock().items.capacity() <= KEPT_CAPACITY);
    }

    #[tokio::test]
    async fn what_is_kept_beside_the_state_is_one_value_and_does_not_keep_the_channel_open() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let (tx, mut rx) = lane_with(4, usize::MAX, AtomicBool::new(false));
        let held = tx.with_held();
        tx.with().store(true, SeqCst);
        assert!(held.load(SeqCst), "the sender's and the held one are the same value");
        tx.try_send(1, 0).unwrap();
        drop(tx);
        let drained = tokio::time::timeout(Duration::from_secs(5), async { (rx.recv().await, rx.recv().await) });
        assert_eq!(drained.await.unwrap(), (Some(1), None), "held, it is not a sender");
        drop(rx);
        assert!(held.load(SeqCst), "it outlives both ends");
    }

    /// Counts its wake-ups.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_sender_in_the_receivers_own_task_does_not_wake_it_and_any_other_does() {
        let (tx, mut rx) = lane(4, usize::MAX);
        let own = Arc::new(Counting(Default::default()));
        let own_waker = Waker::from(own.clone());
        let other = Waker::from(Arc::new(Counting(Default::default())));
        let woken = || own.0.load(std::sync::atomic::Ordering::SeqCst);
        let mut recv = Box::pin(rx.recv());
        assert!(recv.as_mut().poll(&mut std::task::Context::from_waker(&own_waker)).is_pending());

        tx.try_send_within(1, 0, &own_waker).unwrap();
        assert_eq!(woken(), 0, "the task that queued it polls the receiver next");
        assert_eq!(recv.as_mut().poll(&mut std::task::Context::from_waker(&own_waker)), Poll::Ready(Some(1)));
        drop(recv);

        let mut recv = Box::pin(rx.recv());
        assert!(recv.as_mut().poll(&mut std::task::Context::from_waker(&own_waker)).is_pending());
        tx.try_send_within(2, 0, &other).unwrap();
        assert_eq!(woken(), 1, "another task's frame wakes the receiver");
        assert_eq!(recv.as_mut().poll(&mut std::task::Context::from_waker(&own_waker)), Poll::Ready(Some(2)));
    }
}
