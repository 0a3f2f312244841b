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

use crate::event::Side;
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
