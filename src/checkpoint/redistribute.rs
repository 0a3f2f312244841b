//! A restore that re-distributes a checkpoint's rows by key: after a change of
//! `engine.shards`, of the routing function, or of a schema that rewrites stored rows.
//!
//! Each bucket copy of the checkpoint is read by exactly one new shard, its *reader*
//! ([`assign`]): the old shard's own copies when the shard counts agree, otherwise the
//! copies spread over the new shards by size. The reader validates the copy, migrates
//! its rows when the schema changed, and hands each row to the shard its key routes to
//! now (`shard_of(key_hash(key), shards)`): its own rows go straight into its state,
//! the others travel in batches over a bounded channel into each new shard's inbox
//! ([`Mailbox`]). So the state is read once in all, whatever the old and new shard
//! counts, and the reading is spread over the new shards (Flink's key groups serve the
//! same end by letting each new task read only its ranges; weft's arenas are in
//! arrival order, not key order, so it moves rows instead of seeking to them).
//!
//! Invariants: every row of the checkpoint is inserted exactly once, on the shard its
//! key routes to; a shard's restore ends only after every other shard said it has sent
//! all its rows (`Moved::Done`), and fails, naming why, if one stopped without saying
//! so. No deadlock: a shard whose send would block takes rows from its own inbox while
//! it waits, and the channels are bounded, so the rows in flight stay within
//! `shards x BATCHES_IN_FLIGHT x BATCH_BYTES`. The per-key order of rows in the index
//! does not matter (it keeps the least bucket, see `state::index`).

use std::fmt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::barrier::{Host, Partition, RestoreError};
use super::{CheckpointError, ShardSnapshot, SourceState};
use crate::event::{RowBuilder, RowView, Side};
use crate::evolve::Migration;
use crate::join::Join;
use crate::metrics::ShardCounters;
use crate::schema::FieldType;
use crate::source::SourcePos;
use crate::state::arena::StateError;
use crate::state::record::{archive_into, Record};
use crate::watermark::{Mark, PartitionClock};

/// A batch of moved rows is sent once it holds this many bytes.
const BATCH_BYTES: usize = 256 << 10;
/// Batches an inbox holds per sending shard before a send waits.
const BATCHES_IN_FLIGHT: usize = 4;
/// How long a shard whose send is blocked and whose inbox is empty sleeps.
const WAIT: Duration = Duration::from_micros(50);

/// A checkpoint's state as the new shards of a re-distributing restore read it.
#[derive(Debug)]
pub struct Redistribution {
    pub old: Vec<ShardSnapshot>,
    /// Per side (left, right): how stored rows become rows of the job's schema, with
    /// that schema's field types; `None` when they are kept as stored.
    pub migrations: [Option<(Migration, Vec<FieldType>)>; 2],
    /// `reader[s][b]`: the new shard that reads bucket copy `b` of `old[s]`.
    reader: Vec<Vec<u32>>,
}

impl Redistribution {
    pub fn new(old: Vec<ShardSnapshot>, migrations: [Option<(Migration, Vec<FieldType>)>; 2], shards: u32) -> Self {
        let reader = assign(&old, shards);
        Redistribution { old, migrations, reader }
    }

    /// Bytes of bucket copies each new shard reads (for logs and tests).
    pub fn read_bytes(&self, shards: u32) -> Vec<u64> {
        let mut v = vec![0; shards as usize];
        for (snap, readers) in self.old.iter().zip(&self.reader) {
            for (copy, &r) in snap.buckets.iter().zip(readers) {
                v[r as usize] += copy.bytes;
            }
        }
        v
    }
}

/// Which new shard reads each bucket copy. With as many new shards as old ones, old
/// shard `s`'s copies go to new shard `s` (a schema or routing change: under the same
/// routing every row then stays where it is and nothing travels). Otherwise largest
/// copy first to the new shard with the fewest bytes so far (ties: lowest shard), so
/// the reading is balanced within one copy's size. Deterministic.
fn assign(old: &[ShardSnapshot], shards: u32) -> Vec<Vec<u32>> {
    if old.len() == shards as usize {
        return old.iter().enumerate().map(|(s, snap)| vec![s as u32; snap.buckets.len()]).collect();
    }
    let mut reader: Vec<Vec<u32>> = old.iter().map(|snap| vec![0; snap.buckets.len()]).collect();
    let mut copies: Vec<(u64, usize, usize)> = old
        .iter()
        .enumerate()
        .flat_map(|(s, snap)| snap.buckets.iter().enumerate().map(move |(b, c)| (c.bytes, s, b)))
        .collect();
    copies.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut load = vec![0u64; shards.max(1) as usize];
    for (bytes, s, b) in copies {
        let mut least = 0;
        for (j, &l) in load.iter().enumerate() {
            if l < load[least] {
                least = j;
            }
        }
        load[least] += bytes.max(1);
        reader[s][b] = least as u32;
    }
    reader
}

/// What one new shard restores from: the checkpoint, and its ends of the channels.
pub struct Redistributing {
    pub from: Arc<Redistribution>,
    mail: Mailbox,
}

impl fmt::Debug for Redistributing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redistributing").field("checkpoint", &self.from).field("shard", &self.mail.me).finish()
    }
}

/// Sets up a re-distributing restore over `shards` new shards: one [`Redistributing`]
/// per shard, in shard order.
pub fn plan(from: Redistribution, shards: u32) -> Vec<Redistributing> {
    let from = Arc::new(from);
    let n = shards as usize;
    let (senders, inboxes): (Vec<SyncSender<Moved>>, Vec<Receiver<Moved>>) =
        (0..n).map(|_| sync_channel(BATCHES_IN_FLIGHT * n.saturating_sub(1).max(1))).unzip();
    inboxes
        .into_iter()
        .enumerate()
        .map(|(me, inbox)| Redistributing {
            from: from.clone(),
            mail: Mailbox {
                me,
                inbox,
                to: senders.iter().enumerate().map(|(j, s)| (j != me).then(|| s.clone())).collect(),
                peers: n - 1,
                done_from: 0,
            },
        })
        .collect()
    // `senders` drops here: an inbox disconnects once every other shard dropped its end.
}

/// Rows in flight between the new shards.
enum Moved {
    /// Framed rows (see [`frame`]).
    Rows(Vec<u8>),
    /// The sender has sent every row it read for this shard.
    Done,
}

/// One shard's ends of the restore's channels.
struct Mailbox {
    me: usize,
    inbox: Receiver<Moved>,
    /// A sender into every other shard's inbox (`None` at `me`).
    to: Vec<Option<SyncSender<Moved>>>,
    peers: usize,
    /// Shards that sent `Done` so far.
    done_from: usize,
}

impl Mailbox {
    /// Sends `msg` to shard `to`, taking rows from this shard's inbox while its inbox
    /// is full.
    fn send(&mut self, to: usize, mut msg: Moved, join: &mut Join) -> Result<(), RestoreError> {
        let Some(tx) = self.to[to].clone() else {
            return Err(RestoreError::Peer(format!("shard {} has no channel to shard {to}", self.me)));
        };
        loop {
            match tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    if !self.take_one(join)? {
                        std::thread::sleep(WAIT);
                    }
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(RestoreError::Peer(format!(
                    "shard {to} stopped its restore before taking the rows shard {} read for it; its error says why",
                    self.me
                )))
                }
            }
        }
    }

    /// Takes one message from the inbox if there is one; whether there was.
    fn take_one(&mut self, join: &mut Join) -> Result<bool, RestoreError> {
        match self.inbox.try_recv() {
            Ok(m) => self.take(m, join).map(|()| true),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => Ok(false),
        }
    }

    fn take(&mut self, m: Moved, join: &mut Join) -> Result<(), RestoreError> {
        match m {
            Moved::Rows(b) => insert_frames(join, &b),
            Moved::Done => {
                self.done_from += 1;
                Ok(())
            }
        }
    }

    /// Says `Done` to every other shard, then takes rows until every other shard has
    /// said `Done` to this one.
    fn finish(mut self, join: &mut Join) -> Result<(), RestoreError> {
        for to in 0..self.to.len() {
            if to != self.me {
                self.send(to, Moved::Done, join)?;
            }
        }
        self.to.clear(); // our senders: the others' inboxes disconnect when all are gone
        while self.done_from < self.peers {
            match self.inbox.recv() {
                Ok(m) => self.take(m, join)?,
                Err(_) => {
                    return Err(RestoreError::Peer(format!(
                        "{} of the other {} shards stopped before sending shard {} all its rows; their errors say why",
                        self.peers - self.done_from,
                        self.peers,
                        self.me
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a frame's fixed part: side, matched, ts, hash, payload length.
const HEAD: usize = 1 + 1 + 8 + 8 + 4;

/// What errors about moved rows name in place of a file.
const MOVED: &str = "<rows moved from another shard>";

/// Appends one row, as its archived record's bytes, to a batch.
fn frame(buf: &mut Vec<u8>, side: Side, matched: bool, ts: i64, hash: u64, payload: &[u8]) {
    buf.push(side.idx() as u8);
    buf.push(matched as u8);
    buf.extend_from_slice(&ts.to_le_bytes());
    buf.extend_from_slice(&hash.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Inserts every row of a batch made by [`frame`] (in this process, by another shard).
/// Looks [`crate::state::RESTORE_LOOKAHEAD`] frames ahead to prefetch index slots.
fn insert_frames(join: &mut Join, buf: &[u8]) -> Result<(), RestoreError> {
    let broken =
        || RestoreError::Peer("a batch of moved rows is cut short (a bug: it was framed in this process)".into());
    let mut starts = Vec::with_capacity(buf.len() / 64);
    let mut at = 0;
    while at < buf.len() {
        let h = buf.get(at..at + HEAD).ok_or_else(broken)?;
        starts.push(at);
        at += HEAD + u32::from_le_bytes(le(&h[18..])) as usize;
    }
    for (i, &at) in starts.iter().enumerate() {
        if let Some(&next) = starts.get(i + crate::state::RESTORE_LOOKAHEAD) {
            join.prefetch(u64::from_le_bytes(le(&buf[next + 10..])));
        }
        let h = buf.get(at..at + HEAD).ok_or_else(broken)?;
        let side = if h[0] == 0 { Side::Left } else { Side::Right };
        let matched = h[1] != 0;
        let ts = i64::from_le_bytes(le(&h[2..]));
        let hash = u64::from_le_bytes(le(&h[10..]));
        let len = u32::from_le_bytes(le(&h[18..])) as usize;
        let payload = buf.get(at + HEAD..at + HEAD + len).ok_or_else(broken)?;
        join.insert_restored_archived(side, ts, hash, payload, matched, Path::new(MOVED))?;
    }
    Ok(())
}

/// Restores this shard (`me` of `shards`) from a checkpoint of another layout, routing
/// or schema (see the module's doc for how rows move). The partitions this shard now
/// reads get their positions and clocks from whichever old shard read them; the marks
/// of the new senders are computed from those clocks, and the watermark is the least of
/// the old shards' (at an aligned checkpoint they agree unless an idle partition let
/// one run ahead; the least never drops a row the old layout would still have joined).
/// The job's counters are carried by shard 0 (the report sums them).
pub fn restore_redistributed<C: Host, P: Partition>(
    core: &mut C,
    partitions: &mut [P],
    r: Redistributing,
    dir: &Path,
    shards: u32,
    out_of_orderness_ms: i64,
) -> Result<(), RestoreError> {
    let Redistributing { from, mut mail } = r;
    let me = mail.me as u32;
    let old = &from.old[..];
    let p = core.parts().expect("restore runs only with checkpointing on");
    let least = |side: usize| old.iter().filter_map(|s| s.base_buckets[side]).min();
    p.join.restore_bases([least(0), least(1)]);
    let mut migrated = RowBuilder::new();
    let mut scratch = rkyv::util::AlignedVec::<16>::new();
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); shards as usize];
    for (snap, readers) in old.iter().zip(&from.reader) {
        for (b, _) in snap.buckets.iter().zip(readers).filter(|(_, &r)| r == me) {
            let (bytes, flips) = super::read_bucket(dir, b)?;
            let pack = dir.join(&b.file);
            let join = &mut *p.join;
            let migration = from.migrations[b.side.idx()].as_ref();
            let mut peer_failed = None;
            crate::state::each_copied_record(bytes, &flips, &pack, |rec, payload, matched, ahead| {
                if peer_failed.is_some() {
                    return Ok(());
                }
                if let Some(next) = ahead {
                    let h = crate::router::key_hash(next.key.get());
                    if crate::router::shard_of(h, shards) == me {
                        join.prefetch(h);
                    }
                }
                let key = rec.key.get();
                let hash = crate::router::key_hash(key);
                let ts = rec.ts.to_native();
                let to = crate::router::shard_of(hash, shards);
                // The key's fields and types are unchanged by any migration (evolve
                // refuses otherwise), so its bytes and hash stay valid. A row kept as
                // stored is copied as its archived bytes (the hash rewritten when the
                // routing changed); a migrated one is serialised again.
                let payload = match migration {
                    None => payload,
                    Some((m, types)) => {
                        m.apply(RowView(rec.row.get()), types, &mut migrated)
                            .map_err(|e| StateError::Migrate { path: pack.clone(), reason: e.to_string() })?;
                        if to == me {
                            return join.insert_restored(b.side, ts, hash, key, migrated.bytes(), matched);
                        }
                        let rec = Record { hash, ts, matched, key, row: migrated.bytes() };
                        archive_into(&rec, &mut scratch)
                    }
                };
                if to == me {
                    return join.insert_restored_archived(b.side, ts, hash, payload, matched, &pack);
                }
                let batch = &mut out[to as usize];
                frame(batch, b.side, matched, ts, hash, payload);
                if batch.len() >= BATCH_BYTES {
                    let full = std::mem::take(batch);
                    if let Err(e) = mail.send(to as usize, Moved::Rows(full), join) {
                        peer_failed = Some(e);
                    }
                }
                Ok(())
            })?;
            if let Some(e) = peer_failed {
                return Err(e);
            }
        }
    }
    for (to, batch) in out.into_iter().enumerate() {
        if !batch.is_empty() {
            mail.send(to, Moved::Rows(batch), p.join)?;
        }
    }
    mail.finish(p.join)?;

    let all_sources: Vec<&SourceState> = old.iter().flat_map(|s| &s.sources).collect();
    let marks: Vec<Mark> = (0..shards)
        .map(|sender| {
            let clocks: Vec<PartitionClock> = all_sources
                .iter()
                .filter(|st| {
                    // A split file is read by every shard: each sender counts every
                    // record of it (the lowest bound is safe for all).
                    matches!(st.position, SourcePos::Split(_)) || st.plan_index % shards == sender
                })
                .flat_map(|st| st.clocks.iter().flatten())
                .map(|c| {
                    let mut clock = PartitionClock::new(out_of_orderness_ms, 0);
                    clock.restore(c.max_ts, c.done);
                    clock
                })
                .collect();
            crate::watermark::sender_mark(clocks.iter())
        })
        .collect();
    let watermark = old.iter().map(|s| s.watermark).min().unwrap_or(i64::MIN);
    p.wm.restore(&marks, watermark);
    if me == 0 {
        let mut k = ShardCounters::default();
        for s in old {
            k.merge(&s.counters);
        }
        *p.counters = k.clone();
        p.join.stats.pairs = k.pairs;
        p.join.stats.unmatched = k.unmatched;
        p.sinks.output_rows = k.output_rows;
        p.sinks.unmatched_emitted = k.unmatched_emitted;
    }
    for part in partitions.iter_mut() {
        let sts: Vec<&SourceState> =
            all_sources.iter().copied().filter(|s| s.plan_index == part.plan_index()).collect();
        match sts.as_slice() {
            [] => {
                return Err(CheckpointError::Invalid {
                    path: dir.to_path_buf(),
                    reason: format!("no shard of the checkpoint has a position for partition {}", part.name()),
                }
                .into())
            }
            [st] if !matches!(st.position, SourcePos::Split(_)) => part.seek_to(st)?,
            _ => part.seek_merged(&sts)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::copy::BucketCopy;

    fn snap(shard: u32, sizes: &[u64]) -> ShardSnapshot {
        ShardSnapshot {
            shard,
            watermark: 0,
            marks: Vec::new(),
            sources: Vec::new(),
            buckets: sizes
                .iter()
                .enumerate()
                .map(|(i, &b)| BucketCopy::unwritten(Side::Left, i as i64, "p", b))
                .collect(),
            base_buckets: [None, None],
            counters: ShardCounters::default(),
        }
    }

    #[test]
    fn same_count_reads_own_copies() {
        let old = vec![snap(0, &[5, 1]), snap(1, &[7])];
        assert_eq!(assign(&old, 2), vec![vec![0, 0], vec![1]]);
    }

    #[test]
    fn each_copy_has_one_reader_and_reading_is_balanced() {
        let old = vec![snap(0, &[10, 10, 10, 1]), snap(1, &[10, 10, 10, 1])];
        let r = Redistribution::new(old, [None, None], 3);
        let bytes = r.read_bytes(3);
        assert_eq!(bytes.iter().sum::<u64>(), 62, "every copy read exactly once");
        assert!(bytes.iter().all(|&b| (20..=21).contains(&b)), "{bytes:?}");
        let one = Redistribution::new(vec![snap(0, &[3]), snap(1, &[4])], [None, None], 1);
        assert_eq!(one.read_bytes(1), vec![7]);
    }

    fn join() -> Join {
        use crate::join::JoinParams;
        Join::new(JoinParams {
            kind: crate::config::JoinKind::Inner,
            lower_ms: 0,
            upper_ms: 10,
            allowed_lateness_ms: 0,
            bucket_ms: 10,
        })
    }

    /// Shard `me` of 2 sends `rows` framed rows, distinct keys, to the other shard in
    /// full batches (many more than its inbox holds), then finishes.
    fn send_rows(mut mail: Mailbox, rows: u64) -> Result<Join, RestoreError> {
        let mut j = join();
        let to = 1 - mail.me;
        let mut batch = Vec::new();
        let mut scratch = rkyv::util::AlignedVec::<16>::new();
        for i in 0..rows {
            let key = ((mail.me as u64) << 40 | i).to_le_bytes();
            let h = crate::router::key_hash(&key);
            let ts = 1_000 + (i % 50) as i64;
            let rec = Record { hash: h, ts, matched: false, key: &key, row: &[7u8; 40] };
            frame(&mut batch, Side::Left, false, ts, h, archive_into(&rec, &mut scratch));
            if batch.len() >= 4096 {
                mail.send(to, Moved::Rows(std::mem::take(&mut batch)), &mut j)?;
            }
        }
        mail.send(to, Moved::Rows(batch), &mut j)?;
        mail.finish(&mut j)?;
        Ok(j)
    }

    #[test]
    fn two_shards_sending_to_each_other_past_their_bounds_both_finish() {
        let mut plans = plan(Redistribution::new(Vec::new(), [None, None], 2), 2).into_iter();
        let (a, b) = (plans.next().unwrap().mail, plans.next().unwrap().mail);
        let t = std::thread::spawn(move || send_rows(b, 20_000).map(|j| j.keys()));
        let ja = send_rows(a, 30_000).unwrap();
        assert_eq!(ja.keys(), 20_000, "shard 0 holds every row shard 1 sent it");
        assert_eq!(t.join().unwrap().unwrap(), 30_000);
    }

    #[test]
    fn a_shard_whose_peer_stopped_fails_instead_of_waiting() {
        let mut plans = plan(Redistribution::new(Vec::new(), [None, None], 2), 2).into_iter();
        let a = plans.next().unwrap().mail;
        drop(plans); // shard 1 failed before reading anything
        let e = send_rows(a, 100).err().expect("shard 1 is gone");
        assert!(e.to_string().contains("shard 1 stopped its restore"), "{e}");
        let mut plans = plan(Redistribution::new(Vec::new(), [None, None], 3), 3).into_iter();
        let a = plans.next().unwrap().mail;
        let b = plans.next().unwrap().mail;
        drop(plans); // shard 2 gone: shard 1 finishes, shard 0 still must not hang
        let t = std::thread::spawn(move || {
            let mut j = join();
            b.finish(&mut j).map(|_| ())
        });
        let mut j = join();
        let e = a.finish(&mut j).expect_err("shard 2 never said done");
        assert!(e.to_string().contains("stopped"), "{e}");
        assert!(t.join().unwrap().is_err());
    }

    #[test]
    fn frames_round_trip_through_a_batch() {
        let mut scratch = rkyv::util::AlignedVec::<16>::new();
        let mut b = Vec::new();
        let rec = Record { hash: 1, ts: -5, matched: false, key: b"key", row: b"row!" };
        let first = archive_into(&rec, &mut scratch).to_vec();
        frame(&mut b, Side::Right, true, -5, 42, &first);
        let rec = Record { hash: 1, ts: 7, matched: false, key: b"", row: b"r" };
        frame(&mut b, Side::Left, false, 7, 1, archive_into(&rec, &mut scratch));
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 1);
        assert_eq!(i64::from_le_bytes(le(&b[2..])), -5);
        assert_eq!(u64::from_le_bytes(le(&b[10..])), 42);
        assert_eq!(&b[HEAD..HEAD + first.len()], &first[..]);
        let mut j = join();
        insert_frames(&mut j, &b).unwrap();
        assert_eq!(j.keys(), 2);
        // A batch cut inside a frame is an error, not a guess.
        let e = insert_frames(&mut join(), &b[..b.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }
}
