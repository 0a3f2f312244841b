//! Guards the report's per-input counts against the contract on a tiny hand-made
//! input: `unmatched` counts the non-late rows that matched nothing, for every join
//! kind, including inner joins where nothing is emitted for them.
//!
//! (The property test in prop_join.rs checks every other count on random inputs.)

mod common;

use common::job::JobToml;
use weft::config::JoinKind;

fn config(dir: &std::path::Path, kind: &str) -> String {
    let l = common::write(dir, "l.csv", "k,ts\n1,10\n2,10\n");
    let r = common::write(dir, "r.csv", "k,ts\n1,10\n3,10\n");
    JobToml::k_ts(&[l], &[r]).kind(kind).render()
}

/// Key 1 matches (left row stored first, right row arrives and matches it); keys 2
/// and 3 match nothing. So one row of each side is unmatched, whatever the kind.
#[test]
fn unmatched_counts_rows_that_matched_nothing_for_every_kind() {
    for (kind, name) in
        [(JoinKind::Inner, "inner"), (JoinKind::Left, "left"), (JoinKind::Right, "right"), (JoinKind::Full, "full")]
    {
        let tmp = tempfile::tempdir().unwrap();
        let text = config(tmp.path(), name);
        let rep = common::run(&text, tmp.path());
        assert_eq!(rep.matched_pairs, 1, "{kind:?}");
        assert_eq!(
            (rep.left.unmatched, rep.right.unmatched),
            (1, 1),
            "{kind:?}: `unmatched` must count only rows that matched nothing (key 2 on the left, key 3 on the right)"
        );
        let emitted = |side_emits: bool| u64::from(side_emits);
        assert_eq!(
            (rep.left.unmatched_emitted, rep.right.unmatched_emitted),
            (
                emitted(matches!(kind, JoinKind::Left | JoinKind::Full)),
                emitted(matches!(kind, JoinKind::Right | JoinKind::Full))
            ),
            "{kind:?}"
        );
        assert_eq!(rep.output_rows, 1 + rep.left.unmatched_emitted + rep.right.unmatched_emitted, "{kind:?}");
        assert_eq!((rep.left.rows_in, rep.right.rows_in, rep.left.late, rep.right.late), (2, 2, 0, 0), "{kind:?}");
    }
}
