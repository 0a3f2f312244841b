//! A tiny nested-loop reference implementation of the join contract
//! (`docs/SEMANTICS.md`), for the property tests to compare the engine against.
//!
//! It is written to be obviously correct, not fast: lateness is decided per partition
//! by scanning the rows before each row, then every non-late left row is compared
//! with every non-late right row (O(n * m)), with both bounds inclusive and all time
//! arithmetic in i128. Values are `Option<i64>` (NULL = `None`); output and late rows
//! are CSV lines in weft's format (integers plain, NULL an empty cell), sorted, so
//! they compare as multisets with the engine's files minus their header lines.

use weft::config::JoinKind;

/// One row: a value per field of its input, in schema order.
pub type Row = Vec<Option<i64>>;

/// One input: which fields are key and time, and its partitions (each an ordered
/// sequence of rows).
#[derive(Clone, Debug)]
pub struct Input {
    /// Number of fields of every row.
    pub width: usize,
    /// Key field indices, in key order (matched pairwise with the other input's).
    pub key: Vec<usize>,
    /// Event-time field index; never NULL in the rows given to the model.
    pub time: usize,
    pub partitions: Vec<Vec<Row>>,
}

#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub kind: JoinKind,
    pub lower_ms: i64,
    pub upper_ms: i64,
    /// B
    pub max_out_of_orderness_ms: i64,
    /// A
    pub allowed_lateness_ms: i64,
}

/// What the contract says a run must produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Output rows as CSV lines, sorted.
    pub output: Vec<String>,
    /// Late rows of each input (left, right), in input columns, sorted.
    pub late: [Vec<String>; 2],
    pub rows_in: [u64; 2],
    pub late_count: [u64; 2],
    pub pairs: u64,
    /// Non-late rows that matched nothing (whatever the join kind).
    pub unmatched: [u64; 2],
    /// Unmatched rows emitted NULL-padded (outer kinds only).
    pub unmatched_emitted: [u64; 2],
}

/// A CSV line: integers plain, NULL empty.
pub fn csv_line<'a>(cells: impl IntoIterator<Item = &'a Option<i64>>) -> String {
    cells.into_iter().map(|c| c.map(|v| v.to_string()).unwrap_or_default()).collect::<Vec<_>>().join(",")
}

/// Splits an input into (non-late rows, late rows). A row is late when its time is
/// below `max(time of the rows before it in its partition) - B - A`.
pub fn split_late<'a>(input: &'a Input, p: &Params) -> (Vec<&'a Row>, Vec<&'a Row>) {
    let (mut on_time, mut late) = (Vec::new(), Vec::new());
    let slack = p.max_out_of_orderness_ms as i128 + p.allowed_lateness_ms as i128;
    for part in &input.partitions {
        for (i, row) in part.iter().enumerate() {
            let t = row[input.time].expect("event time is never NULL") as i128;
            let max_before = part[..i].iter().map(|r| r[input.time].unwrap() as i128).max();
            match max_before {
                Some(m) if t < m - slack => late.push(row),
                _ => on_time.push(row),
            }
        }
    }
    (on_time, late)
}

/// The key of a row, or `None` when a key field is NULL (such a row never matches).
fn key(row: &Row, input: &Input) -> Option<Vec<i64>> {
    input.key.iter().map(|&k| row[k]).collect()
}

fn matches(l: &Row, r: &Row, left: &Input, right: &Input, p: &Params) -> bool {
    let (Some(kl), Some(kr)) = (key(l, left), key(r, right)) else {
        return false;
    };
    let lt = l[left.time].unwrap() as i128;
    let rt = r[right.time].unwrap() as i128;
    kl == kr && lt + p.lower_ms as i128 <= rt && rt <= lt + p.upper_ms as i128
}

fn emits(kind: JoinKind, left_side: bool) -> bool {
    match kind {
        JoinKind::Inner => false,
        JoinKind::Left => left_side,
        JoinKind::Right => !left_side,
        JoinKind::Full => true,
    }
}

/// Runs the join of `left` and `right` under `p`.
pub fn join(left: &Input, right: &Input, p: &Params) -> Expected {
    assert!(p.lower_ms <= p.upper_ms);
    let (l_on, l_late) = split_late(left, p);
    let (r_on, r_late) = split_late(right, p);
    let null_left = vec![None; left.width];
    let null_right = vec![None; right.width];
    let line = |l: &Row, r: &Row| csv_line(l.iter().chain(r.iter()));

    let mut e = Expected::default();
    let mut l_matched = vec![false; l_on.len()];
    let mut r_matched = vec![false; r_on.len()];
    for (i, l) in l_on.iter().enumerate() {
        for (j, r) in r_on.iter().enumerate() {
            if matches(l, r, left, right, p) {
                e.output.push(line(l, r));
                e.pairs += 1;
                l_matched[i] = true;
                r_matched[j] = true;
            }
        }
    }
    for (i, l) in l_on.iter().enumerate() {
        if !l_matched[i] {
            e.unmatched[0] += 1;
            if emits(p.kind, true) {
                e.unmatched_emitted[0] += 1;
                e.output.push(line(l, &null_right));
            }
        }
    }
    for (j, r) in r_on.iter().enumerate() {
        if !r_matched[j] {
            e.unmatched[1] += 1;
            if emits(p.kind, false) {
                e.unmatched_emitted[1] += 1;
                e.output.push(line(&null_left, r));
            }
        }
    }
    e.output.sort();
    for (i, (input, late)) in [(left, &l_late), (right, &r_late)].into_iter().enumerate() {
        e.rows_in[i] = input.partitions.iter().map(|p| p.len() as u64).sum();
        e.late_count[i] = late.len() as u64;
        e.late[i] = late.iter().map(|r| csv_line(r.iter())).collect();
        e.late[i].sort();
    }
    e
}
