//! What travels between shards: batches of routed events over bounded SPSC rings.
//!
//! One ring per ordered pair of shards (glommio's `shared_channel`: a bounded,
//! lock-free single-producer single-consumer ring whose consumer parks on an eventfd
//! when it is empty, so an idle shard sleeps instead of spinning). A full ring makes
//! the producer's `send` wait: backpressure reaches the source, nothing is dropped.
//!
//! A [`Batch`] carries up to `engine.batch_events` events in two flat vectors (no
//! allocation per event) and the sender's watermark [`Mark`], which applies after the
//! batch's events.
//!
//! This file owns the rings' wiring ([`wire`]), the sending side of one shard
//! ([`Outbox`]: route a row into its destination's batch, flush, broadcast a barrier)
//! and the waits on a ring ([`recv`], [`send`]; [`connect_guarded`] to connect). It
//! never joins: the batch for the shard itself is handed back to the caller at flush.
//! Invariants: every ring is bounded (`engine.ring_slots`); routing a row allocates
//! nothing once the batches have grown to their working size.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::event::{encode_key, RowView, Side};
use crate::metrics::live::Live;
use crate::router::{key_hash, shard_of};
use crate::schema::Schema;
use crate::watermark::Mark;

/// `key_len` of an event whose key has a NULL field.
pub const NULL_KEY: u32 = u32::MAX;

/// One routed row: where its bytes are in [`Batch::data`] and what the shard needs
/// without reading them.
#[derive(Clone, Copy, Debug)]
pub struct EventMeta {
    pub ts: i64,
    pub hash: u64,
    /// When the row arrived (or was meant to be sent), ns since job start.
    pub arrival_ns: u64,
    pub start: u32,
    pub row_len: u32,
    /// Key bytes follow the row; [`NULL_KEY`] when the key is NULL.
    pub key_len: u32,
    pub side: Side,
}

#[derive(Debug)]
pub struct Batch {
    pub events: Vec<EventMeta>,
    pub data: Vec<u8>,
    pub mark: Mark,
    /// Checkpoint barrier `n`: every row this sender read before checkpoint n is in this
    /// or an earlier batch, every later row in a later one.
    pub barrier: Option<u64>,
}

impl Batch {
    pub fn with_capacity(events: usize) -> Batch {
        Batch {
            events: Vec::with_capacity(events),
            data: Vec::with_capacity(events * 64),
            mark: Mark::At(i64::MIN),
            barrier: None,
        }
    }

    #[inline]
    pub fn push(&mut self, side: Side, ts: i64, hash: u64, arrival_ns: u64, row: &[u8], key: Option<&[u8]>) {
        let start = self.data.len() as u32;
        self.data.extend_from_slice(row);
        let key_len = match key {
            Some(k) => {
                self.data.extend_from_slice(k);
                k.len() as u32
            }
            None => NULL_KEY,
        };
        self.events.push(EventMeta { ts, hash, arrival_ns, start, row_len: row.len() as u32, key_len, side });
    }

    /// (row, key) of an event.
    #[inline]
    pub fn get(&self, e: &EventMeta) -> (&[u8], Option<&[u8]>) {
        let s = e.start as usize;
        let r = s + e.row_len as usize;
        let row = &self.data[s..r];
        if e.key_len == NULL_KEY {
            (row, None)
        } else {
            (row, Some(&self.data[r..r + e.key_len as usize]))
        }
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.data.clear();
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The rings of one shard, before its executor connects them.
pub struct Rings {
    /// `senders[d]`: the ring to shard `d` (`None` for itself).
    pub senders: Vec<Option<SharedSender<Batch>>>,
    /// (peer id, ring from that peer).
    pub receivers: Vec<(usize, SharedReceiver<Batch>)>,
}

/// One ring per ordered pair of shards, `ring_slots` batches each; element `s` holds
/// shard `s`'s ends.
pub fn wire(shards: usize, ring_slots: usize) -> Vec<Rings> {
    let mut rings: Vec<Rings> =
        (0..shards).map(|_| Rings { senders: (0..shards).map(|_| None).collect(), receivers: Vec::new() }).collect();
    for s in 0..shards {
        for d in (0..shards).filter(|&d| d != s) {
            let (tx, rx) = shared_channel::new_bounded(ring_slots);
            rings[s].senders[d] = Some(tx);
            rings[d].receivers.push((s, rx));
        }
    }
    rings
}

/// Awaits a ring's `connect`, polling it again every millisecond even without a
/// wake-up: glommio's shared-channel `connect` sometimes lost the wake-up from the
/// peer's connect (about 7% of 2-shard starts hung). Connecting is the only wait that
/// goes through this; it ends once per ring and glommio drops every connection waker
/// at each turn of its reactor, so re-polls leave nothing behind.
///
/// Never wrap `send` or `recv` in this: glommio 0.9 keeps a clone of the waker of every
/// pending poll of a ring future until the ring has that many items (or free slots),
/// and counts a task's wakers in an `i16`. Re-polled every millisecond, a ring that
/// stayed quiet for ~33 s overflowed the count and crashed its shard ("Waker invariant
/// broken", refcount -32768). Those waits are level-triggered in glommio (the reactor
/// checks every ring with pending wakers at each turn, and before it sleeps, behind a
/// membarrier), so they need no guard: see [`recv`] and [`send`].
pub async fn connect_guarded<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    // The common case (data there, room in the ring) costs no timer.
    if let Some(v) = futures_lite::future::poll_once(&mut f).await {
        return v;
    }
    loop {
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(1)).await;
            None
        };
        if let Some(v) = futures_lite::future::or(async { Some((&mut f).await) }, tick).await {
            return v;
        }
    }
}

/// The next batch from a peer's ring, `None` once the peer closed it. Polled only when
/// glommio wakes it, so a quiet ring holds one waker however long it stays quiet.
pub async fn recv(rx: &ConnectedReceiver<Batch>) -> Option<Batch> {
    rx.recv().await
}

/// Puts `batch` into a peer's ring, waiting while the ring is full (backpressure);
/// false when the peer is gone. Polled only when woken, as [`recv`].
pub async fn send(tx: &ConnectedSender<Batch>, batch: Batch) -> bool {
    tx.send(batch).await.is_ok()
}

/// The sending side of one shard: a batch per destination shard and the connected
/// rings. Dropping it closes the rings, which tells every peer this shard is done.
pub struct Outbox {
    id: u32,
    shards: u32,
    out: Vec<Batch>,
    /// The mark each destination was last sent (`None`: nothing sent yet).
    last_mark: Vec<Option<Mark>>,
    senders: Vec<Option<ConnectedSender<Batch>>>,
    /// Scratch for the encoded key of the row being routed (reused, never shrunk).
    key: Vec<u8>,
    /// Time spent waiting for room in a full ring, since start.
    pub blocked_ns: u64,
    /// Batches sent per destination, shown as ring occupancy when `live` is set.
    sent: Vec<u64>,
    live: Option<Arc<Live>>,
}

impl Outbox {
    /// Connects shard `id`'s rings (waits for each peer's receiver to connect).
    pub async fn connect(
        id: u32,
        senders: Vec<Option<SharedSender<Batch>>>,
        batch_events: usize,
        live: Option<Arc<Live>>,
    ) -> Outbox {
        let shards = senders.len();
        let mut connected = Vec::with_capacity(shards);
        for s in senders {
            connected.push(match s {
                Some(s) => Some(connect_guarded(s.connect()).await),
                None => None,
            });
        }
        Outbox {
            id,
            shards: shards as u32,
            out: (0..shards).map(|_| Batch::with_capacity(batch_events)).collect(),
            last_mark: vec![None; shards],
            senders: connected,
            key: Vec::with_capacity(64),
            blocked_ns: 0,
            sent: vec![0; shards],
            live,
        }
    }

    /// Puts a row into the batch of the shard that owns its key; a row with a NULL key
    /// never matches and stays on this shard. Per row: one key encoding, one hash, one
    /// copy of the row and key into the batch.
    #[inline]
    pub fn route(&mut self, side: Side, ts: i64, arrival_ns: u64, row: &[u8], schema: &Schema) {
        if encode_key(RowView(row), schema, &mut self.key) {
            let hash = key_hash(&self.key);
            self.out[shard_of(hash, self.shards) as usize].push(side, ts, hash, arrival_ns, row, Some(&self.key));
        } else {
            self.out[self.id as usize].push(side, ts, 0, arrival_ns, row, None);
        }
    }

    /// Every destination has been told `Mark::Done`.
    pub fn told_done(&self) -> bool {
        self.last_mark.iter().all(|m| *m == Some(Mark::Done))
    }

    /// Sends every destination its batch (and the new mark); the batch for this shard
    /// goes to `join_local(own id, batch)` in its turn. Skips a destination with no
    /// rows whose mark did not change. Waits while a ring is full (the shard's
    /// receiver tasks keep draining meanwhile).
    pub async fn flush(&mut self, mark: Mark, mut join_local: impl FnMut(usize, &Batch)) {
        for d in 0..self.out.len() {
            if self.out[d].is_empty() && self.last_mark[d] == Some(mark) {
                continue;
            }
            self.last_mark[d] = Some(mark);
            self.out[d].mark = mark;
            if d == self.id as usize {
                join_local(d, &self.out[d]);
                self.out[d].clear();
            } else if self.senders[d].is_some() {
                let cap = self.out[d].events.capacity();
                let batch = std::mem::replace(&mut self.out[d], Batch::with_capacity(cap));
                // False: the peer is gone (it failed); the abort flag stops us next round.
                self.send_timed(d, batch).await;
            }
        }
    }

    /// [`send`] to destination `d`, adding the time the ring was full to `blocked_ns`
    /// (a wait starts at the first poll that finds no room; no extra poll is made).
    async fn send_timed(&mut self, d: usize, batch: Batch) -> bool {
        let Some(tx) = &self.senders[d] else { return false };
        let mut fut = std::pin::pin!(send(tx, batch));
        let mut waited: Option<std::time::Instant> = None;
        let ok = std::future::poll_fn(|cx| {
            let r = fut.as_mut().poll(cx);
            if r.is_pending() {
                waited.get_or_insert_with(std::time::Instant::now);
            }
            r
        })
        .await;
        if let Some(t) = waited {
            self.blocked_ns += t.elapsed().as_nanos() as u64;
        }
        if ok {
            self.sent[d] += 1;
            if let Some(l) = &self.live {
                l.ring(self.id as usize, d).sent.store(self.sent[d], Ordering::Relaxed);
            }
        }
        ok
    }

    /// Sends barrier `n` (with `mark`) to every peer, after everything flushed so far.
    pub async fn broadcast_barrier(&mut self, n: u64, mark: Mark) {
        for d in 0..self.senders.len() {
            if self.senders[d].is_some() {
                let mut b = Batch::with_capacity(0);
                b.mark = mark;
                b.barrier = Some(n);
                self.send_timed(d, b).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::{Context, Poll};
    use std::time::Instant;

    /// Counts the polls of the future it wraps.
    struct Counted<F> {
        inner: std::pin::Pin<Box<F>>,
        polls: Rc<Cell<u32>>,
    }

    impl<F: std::future::Future> std::future::Future for Counted<F> {
        type Output = F::Output;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.polls.set(self.polls.get() + 1);
            self.inner.as_mut().poll(cx)
        }
    }

    /// A receiver waits on a ring that stays quiet, then gets one batch; then a sender
    /// waits on a full ring until the receiver drains it. Each wait must be polled only
    /// when glommio wakes it: the old 1 ms re-poll made ~300 polls of each here, and
    /// every one left a waker clone that a quiet ring never dropped (the overflow).
    #[test]
    fn ring_waits_are_polled_only_when_woken() {
        let quiet = Duration::from_millis(300);
        let (tx, rx) = shared_channel::new_bounded::<Batch>(1);
        let sender = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let tx = connect_guarded(tx.connect()).await;
                glommio::timer::sleep(quiet).await;
                assert!(send(&tx, Batch::with_capacity(0)).await);
                // The ring holds one batch: the second send waits for the receiver.
                assert!(send(&tx, Batch::with_capacity(0)).await);
                let polls = Rc::new(Cell::new(0));
                let t0 = Instant::now();
                let third = Counted { inner: Box::pin(send(&tx, Batch::with_capacity(0))), polls: polls.clone() };
                assert!(third.await);
                (polls.get(), t0.elapsed())
            })
            .unwrap();
        let receiver = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let rx = connect_guarded(rx.connect()).await;
                let polls = Rc::new(Cell::new(0));
                let t0 = Instant::now();
                let first = Counted { inner: Box::pin(recv(&rx)), polls: polls.clone() };
                assert!(first.await.is_some());
                let waited = t0.elapsed();
                // Leave the sender waiting on a full ring for a while, then drain.
                glommio::timer::sleep(quiet).await;
                let mut got = 1;
                while recv(&rx).await.is_some() {
                    got += 1;
                }
                (polls.get(), waited, got)
            })
            .unwrap();
        let (send_polls, send_waited) = sender.join().unwrap();
        let (recv_polls, recv_waited, got) = receiver.join().unwrap();
        assert_eq!(got, 3, "every batch sent arrives");
        assert!(recv_waited >= quiet / 2, "the receiver did wait ({recv_waited:?})");
        assert!(recv_polls <= 3, "{recv_polls} polls of a receive that waited {recv_waited:?}");
        assert!(send_waited >= quiet / 2, "the sender did wait ({send_waited:?})");
        assert!(send_polls <= 3, "{send_polls} polls of a send that waited {send_waited:?}");
    }
}
