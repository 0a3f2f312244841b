//! Guards the shard start-up and shut-down handshakes: many tiny jobs, with as many
//! shards as partitions and with more shards than partitions (shards that read
//! nothing), must all finish. A lost wake-up or a shard that never reports its end
//! shows up here as a run that does not finish within a few seconds.

mod common;

use std::time::Duration;

use common::job::JobToml;

const RUNS: usize = 40;
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

fn config(shards: u32) -> String {
    JobToml::k_ts(&["l.csv"], &["r.csv"]).kind("full").window(0, 10).shards(shards).render()
}

fn many_runs(shards: u32, runs: usize) {
    let tmp = tempfile::tempdir().unwrap();
    common::write(tmp.path(), "l.csv", "k,ts\n1,100\n2,100\n");
    common::write(tmp.path(), "r.csv", "k,ts\n3,100\n1,105\n");
    let text = config(shards);
    let opts = weft::engine::RunOptions { force: true, ..Default::default() };
    for i in 0..runs {
        let rep = common::try_run_within(&text, tmp.path(), &opts, RUN_TIMEOUT)
            .unwrap_or_else(|e| panic!("run {i} with {shards} shards failed: {e}"));
        assert_eq!((rep.matched_pairs, rep.output_rows), (1, 3), "run {i} with {shards} shards");
    }
}

#[test]
fn two_shards_two_partitions_always_finish() {
    many_runs(2, RUNS);
}

#[test]
fn more_shards_than_partitions_always_finish() {
    many_runs(3, RUNS / 4);
    many_runs(5, RUNS / 4);
}
