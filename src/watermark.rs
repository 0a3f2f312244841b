//! Event-time progress: per-partition watermarks and lateness at the source, and the
//! engine watermark `W` a shard computes from what every sender reports.
//!
//! Rules (docs/SEMANTICS.md): `wm_p = max ts seen in p - B`; a row is late when
//! `ts < wm_p - A` over the rows before it; `W = min` over active partitions, an ended
//! partition counts as +infinity and an idle one is left out. `W` never goes back.
//! All arithmetic is done in i128 so that no timestamp can overflow.

/// Watermark and lateness of one source partition, kept by the shard that reads it.
#[derive(Clone, Debug)]
pub struct PartitionClock {
    /// Max event time seen; `None` before the first row.
    max_ts: Option<i64>,
    out_of_orderness_ms: i64,
    lateness_ms: i64,
    pub last_row_ns: u64,
    pub idle: bool,
    pub done: bool,
}

impl PartitionClock {
    pub fn new(out_of_orderness_ms: i64, lateness_ms: i64) -> PartitionClock {
        PartitionClock { max_ts: None, out_of_orderness_ms, lateness_ms, last_row_ns: 0, idle: false, done: false }
    }

    /// Records a row's event time; returns true when the row is late (it then does not
    /// move the watermark: a late row is always behind the maximum).
    #[inline]
    pub fn observe(&mut self, ts: i64) -> bool {
        match self.max_ts {
            None => {
                self.max_ts = Some(ts);
                false
            }
            Some(m) => {
                let late = (ts as i128) < m as i128 - self.out_of_orderness_ms as i128 - self.lateness_ms as i128;
                if ts > m {
                    self.max_ts = Some(ts);
                }
                late
            }
        }
    }

    pub fn max_ts(&self) -> Option<i64> {
        self.max_ts
    }

    /// Raises the max event time to `max_ts` (the rows before these were read
    /// elsewhere: a chunk of a split file). Never lowers it.
    pub fn raise(&mut self, max_ts: Option<i64>) {
        self.max_ts = self.max_ts.max(max_ts);
    }

    /// Back to a checkpointed state.
    pub fn restore(&mut self, max_ts: Option<i64>, done: bool) {
        self.max_ts = max_ts;
        self.done = done;
        self.idle = false;
    }

    /// `max ts - B`, or i64::MIN before the first row.
    pub fn watermark(&self) -> i64 {
        match self.max_ts {
            None => i64::MIN,
            Some(m) => clamp(m as i128 - self.out_of_orderness_ms as i128),
        }
    }
}

/// What a sender shard reports with every batch about the partitions it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// Min watermark over its active, non-idle partitions.
    At(i64),
    /// All its unfinished partitions are idle: do not wait for it.
    Idle,
    /// All its partitions have ended (+infinity).
    Done,
}

/// Combines the partition clocks of one sender into its [`Mark`].
pub fn sender_mark<'a>(clocks: impl Iterator<Item = &'a PartitionClock>) -> Mark {
    let mut min: Option<i64> = None;
    let mut any_idle = false;
    for c in clocks {
        if c.done {
            continue;
        }
        if c.idle {
            any_idle = true;
            continue;
        }
        let w = c.watermark();
        min = Some(min.map_or(w, |m: i64| m.min(w)));
    }
    match (min, any_idle) {
        (Some(w), _) => Mark::At(w),
        (None, true) => Mark::Idle,
        (None, false) => Mark::Done,
    }
}

/// The engine watermark at one shard: min over the marks of all senders.
#[derive(Clone, Debug)]
pub struct ShardWatermark {
    marks: Vec<Mark>,
    current: i64,
}

impl ShardWatermark {
    pub fn new(senders: usize) -> ShardWatermark {
        ShardWatermark { marks: vec![Mark::At(i64::MIN); senders], current: i64::MIN }
    }

    /// Updates one sender's mark; returns the new `W` (monotonic).
    pub fn update(&mut self, sender: usize, mark: Mark) -> i64 {
        self.marks[sender] = mark;
        let mut min: Option<i64> = None;
        let mut all_done = true;
        for m in &self.marks {
            match *m {
                Mark::At(w) => {
                    all_done = false;
                    min = Some(min.map_or(w, |x: i64| x.min(w)));
                }
                Mark::Idle => all_done = false,
                Mark::Done => {}
            }
        }
        let w = match min {
            Some(w) => w,
            None if all_done => i64::MAX,
            None => self.current, // everyone idle: hold W where it is
        };
        self.current = self.current.max(w);
        self.current
    }

    pub fn current(&self) -> i64 {
        self.current
    }

    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// Back to a checkpointed state.
    pub fn restore(&mut self, marks: &[Mark], current: i64) {
        self.marks.copy_from_slice(marks);
        self.current = current;
    }

    pub fn all_done(&self) -> bool {
        self.marks.iter().all(|m| *m == Mark::Done)
    }
}

pub fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_strict_and_relative_to_rows_before() {
        let mut c = PartitionClock::new(10, 5);
        assert!(!c.observe(100));
        assert!(!c.observe(85)); // 85 == 100 - 15: not late
        assert!(c.observe(84));
        assert_eq!(c.watermark(), 90);
        assert!(c.observe(i64::MIN + 1), "far in the past: late, and no overflow");
    }

    #[test]
    fn engine_watermark_min_idle_done_monotonic() {
        let mut w = ShardWatermark::new(3);
        assert_eq!(w.update(0, Mark::At(100)), i64::MIN);
        w.update(1, Mark::At(50));
        assert_eq!(w.update(2, Mark::Idle), 50);
        assert_eq!(w.update(1, Mark::Done), 100);
        assert_eq!(w.update(2, Mark::At(10)), 100, "W never goes back");
        w.update(2, Mark::Done);
        assert_eq!(w.update(0, Mark::Done), i64::MAX);
        assert!(w.all_done());
    }

    #[test]
    fn sender_mark_combines() {
        let mut a = PartitionClock::new(0, 0);
        a.observe(7);
        let mut b = PartitionClock::new(0, 0);
        b.idle = true;
        assert_eq!(sender_mark([a.clone(), b.clone()].iter()), Mark::At(7));
        a.done = true;
        assert_eq!(sender_mark([a.clone(), b.clone()].iter()), Mark::Idle);
        b.done = true;
        assert_eq!(sender_mark([a, b].iter()), Mark::Done);
    }
}
