//! Guards configuration errors: a bad config is refused before anything runs, with a
//! message naming the offending key. In process, `resolve` returns
//! `ConfigError::Invalid` with that key; through the binary, `weft run` exits with
//! status 2, prints `error: ...` naming the key on stderr, and creates no output
//! directory.

mod common;

use std::path::Path;
use std::process::Output;

use weft::config::{ConfigError, JobConfig};

const GOOD: &str = r#"[left]
name = "l"
paths = ["l.csv"]
key = ["k"]
time = "ts"
fields = [ { name = "k", type = "i64" }, { name = "ts", type = "i64" }, { name = "s", type = "string" } ]

[right]
name = "r"
paths = ["r.csv"]
key = ["k"]
time = "ts"
fields = [ { name = "k", type = "i64" }, { name = "ts", type = "i64" } ]

[join]
kind = "inner"
lower_ms = 0
upper_ms = 10

[output]
path = "out"

[engine]
shards = 1
pin_cores = false
"#;

/// `GOOD` with the first `from` replaced by `to` (which must be there).
fn edit(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "test bug: `{from}` is not in the base config");
    GOOD.replacen(from, to, 1)
}

const LEFT_PATHS: &str = "paths = [\"l.csv\"]\n";
const LEFT_FIELDS: &str =
    r#"fields = [ { name = "k", type = "i64" }, { name = "ts", type = "i64" }, { name = "s", type = "string" } ]"#;

/// Configs that resolve to `ConfigError::Invalid` naming `key`.
fn invalid_cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("lower_ms > upper_ms", edit("lower_ms = 0", "lower_ms = 11"), "join.lower_ms"),
        ("key field not in fields", edit("key = [\"k\"]", "key = [\"nope\"]"), "left.key"),
        ("time field not an integer", edit("time = \"ts\"", "time = \"s\""), "left.time"),
        ("time field missing", edit("time = \"ts\"\n", ""), "left.time"),
        ("time field not in fields", edit("time = \"ts\"", "time = \"when\""), "left.time"),
        (
            "key types differ",
            edit(
                "{ name = \"k\", type = \"i64\" }, { name = \"ts\", type = \"i64\" } ]\n\n[join]",
                "{ name = \"k\", type = \"u64\" }, { name = \"ts\", type = \"i64\" } ]\n\n[join]",
            ),
            "right.key",
        ),
        ("key arity differs", edit("key = [\"k\"]", "key = [\"k\", \"s\"]"), "right.key"),
        ("no paths and no generator", edit(LEFT_PATHS, ""), "left.paths"),
        ("empty paths", edit(LEFT_PATHS, "paths = []\n"), "left.paths"),
        ("no fields", edit(LEFT_FIELDS, ""), "left.fields"),
        (
            "field declared twice",
            edit("{ name = \"s\", type = \"string\" }", "{ name = \"k\", type = \"string\" }"),
            "left.fields",
        ),
        ("generator on the left only", edit(LEFT_PATHS, "generator = {}\n"), "right.generator"),
        ("generator and paths", GOOD.replacen("key = [\"k\"]", "generator = {}\nkey = [\"k\"]", 2), "left.paths"),
        ("shards = 0", edit("shards = 1", "shards = 0"), "engine.shards"),
        ("too many shards", edit("shards = 1", "shards = 100000"), "engine.shards"),
        ("empty output.path", edit("path = \"out\"", "path = \"\""), "output.path"),
        (
            "negative B",
            edit("upper_ms = 10", "upper_ms = 10\nmax_out_of_orderness_ms = -1"),
            "join.max_out_of_orderness_ms",
        ),
        ("negative A", edit("upper_ms = 10", "upper_ms = 10\nallowed_lateness_ms = -1"), "join.allowed_lateness_ms"),
        ("idle timeout 0", edit("upper_ms = 10", "upper_ms = 10\nidle_timeout_ms = 0"), "join.idle_timeout_ms"),
        ("state_bucket_ms 0", edit("shards = 1", "shards = 1\nstate_bucket_ms = 0"), "engine.state_bucket_ms"),
        ("ring_slots 1", edit("shards = 1", "shards = 1\nring_slots = 1"), "engine.ring_slots"),
        ("batch_events 0", edit("shards = 1", "shards = 1\nbatch_events = 0"), "engine.batch_events"),
        ("same input names", edit("name = \"r\"", "name = \"l\""), "right.name"),
        ("dotted input name", edit("name = \"l\"", "name = \"a.b\""), "left.name"),
        (
            "instance not below instances",
            edit("shards = 1", "shards = 1\ninstance = 2\ninstances = 2"),
            "engine.instance",
        ),
        ("instances 0", edit("shards = 1", "shards = 1\ninstances = 0"), "engine.instances"),
        ("two instances over files", edit("shards = 1", "shards = 1\ninstances = 2"), "left.kafka"),
        ("paths and kafka", edit(LEFT_PATHS, &format!("{LEFT_PATHS}{KAFKA}")), "left.kafka"),
        ("kafka without brokers", edit(LEFT_PATHS, "kafka = { topic = \"t\" }\n"), "left.kafka.brokers"),
        ("kafka empty topic", edit(LEFT_PATHS, "kafka = { brokers = \"b:9092\", topic = \"\" }\n"), "left.kafka.topic"),
        (
            "kafka option weft sets",
            edit(LEFT_PATHS, "kafka = { brokers = \"b:9092\", topic = \"t\", options = { \"group.id\" = \"g\" } }\n"),
            "left.kafka.options",
        ),
        ("kafka output and a path", edit("path = \"out\"", &format!("path = \"out\"\n{KAFKA}")), "output.path"),
        ("kafka output without checkpointing", edit("path = \"out\"", KAFKA), "output.kafka"),
        (
            "kafka output bounded",
            checkpointed(&edit("path = \"out\"", "kafka = { brokers = \"b:9092\", topic = \"t\", bounded = true }")),
            "output.kafka.bounded",
        ),
        (
            "kafka output sets the transactional id",
            checkpointed(&edit(
                "path = \"out\"",
                "kafka = { brokers = \"b:9092\", topic = \"t\", options = { \"transactional.id\" = \"x\" } }",
            )),
            "output.kafka.options",
        ),
        (
            "kafka output's progress topic is its output topic",
            checkpointed(&edit(
                "path = \"out\"",
                "kafka = { brokers = \"b:9092\", topic = \"t\", progress_topic = \"t\" }",
            )),
            "output.kafka.topic",
        ),
        (
            "an input with an output's key",
            edit(LEFT_PATHS, "kafka = { brokers = \"b:9092\", topic = \"t\", late_topic = \"x\" }\n"),
            "left.kafka.late_topic",
        ),
    ]
}

fn checkpointed(text: &str) -> String {
    text.replacen("shards = 1", "shards = 1\ncheckpoint_dir = \"ck\"", 1)
}

#[test]
fn a_kafka_output_has_its_side_topics_and_staging_by_default() {
    let text = checkpointed(&edit("path = \"out\"", KAFKA));
    let job = common::job_from_toml(&text, Path::new("/base")).unwrap();
    let weft::config::OutputTarget::Kafka(k) = &job.output else { panic!("not kafka: {:?}", job.output) };
    assert_eq!(
        (k.topic.as_str(), k.late_topic.as_str(), k.dead_topic.as_str(), k.progress_topic.as_str()),
        ("t", "t.late", "t.dead", "t.weft-progress")
    );
    assert_eq!(k.transactional_id, "weft-t");
    assert_eq!(k.staging, Path::new("/base/ck/kafka-out"));
}

const KAFKA: &str = "kafka = { brokers = \"b:9092\", topic = \"t\" }\n";

#[test]
fn kafka_brokers_may_come_from_the_engine_table() {
    let text = edit(LEFT_PATHS, "kafka = { topic = \"t\", group = \"g\" }\n").replacen(
        "shards = 1",
        "shards = 1\nkafka_brokers = \"h1:9092,h2:9092\"",
        1,
    );
    let job = common::job_from_toml(&text, Path::new(".")).unwrap();
    let weft::config::InputSource::Kafka(k) = &job.left.source else { panic!("not kafka") };
    assert_eq!(
        (k.brokers.as_str(), k.topic.as_str(), k.bounded, k.group.as_deref()),
        ("h1:9092,h2:9092", "t", false, Some("g"))
    );
}

/// Configs that do not even parse (syntax, unknown key, wrong type); the message
/// must contain the needle.
fn parse_cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("unknown key", edit("upper_ms = 10", "upper_ms = 10\ncolour = 1"), "colour"),
        ("unknown table", format!("{GOOD}\n[extra]\nx = 1\n"), "extra"),
        ("wrong type", edit("shards = 1", "shards = \"two\""), "shards"),
        ("wrong type (integer as string)", edit("upper_ms = 10", "upper_ms = \"10\""), "upper_ms"),
        ("unknown field type", edit("type = \"string\"", "type = \"text\""), "text"),
        ("unknown join kind", edit("kind = \"inner\"", "kind = \"outer\""), "outer"),
        ("missing [join]", edit("[join]\nkind = \"inner\"\nlower_ms = 0\nupper_ms = 10\n", ""), "join"),
        ("syntax", edit("upper_ms = 10", "upper_ms = = 10"), "upper_ms"),
    ]
}

fn resolve(text: &str) -> Result<weft::config::Job, ConfigError> {
    let p = Path::new("/cfg/job.toml");
    JobConfig::parse(text, p)?.resolve(p, Path::new("/cfg"))
}

/// Writes the inputs of `GOOD` (without `r.csv` unless `with_right`) and `text` as
/// `dir/job.toml`, and runs the binary on it.
fn run_in(dir: &Path, text: &str, with_right: bool) -> Output {
    common::write(dir, "l.csv", "k,ts,s\n1,5,a\n");
    if with_right {
        common::write(dir, "r.csv", "k,ts\n1,7\n");
    }
    let cfg = common::write(dir, "job.toml", text);
    common::weft_run(&cfg, &[])
}

#[test]
fn the_base_config_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(tmp.path(), GOOD, true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows = common::output_rows(&tmp.path().join("out"), "l.k,l.ts,l.s,r.k,r.ts");
    assert_eq!(rows, ["1,5,a,1,7"]);
}

#[test]
fn invalid_values_name_the_key() {
    for (what, text, key) in invalid_cases() {
        match resolve(&text) {
            Err(ConfigError::Invalid { key: k, message, .. }) => {
                assert_eq!(k, key, "{what}: wrong key named (message: {message})")
            }
            Err(e) => panic!("{what}: expected an invalid `{key}`, got: {e}"),
            Ok(_) => panic!("{what}: accepted\n{text}"),
        }
    }
}

#[test]
fn unparsable_configs_name_the_key() {
    for (what, text, needle) in parse_cases() {
        match resolve(&text) {
            Err(e @ ConfigError::Parse { .. }) => {
                let m = e.to_string();
                assert!(m.contains(needle), "{what}: `{m}` should name `{needle}`");
                assert!(m.contains("/cfg/job.toml"), "{what}: `{m}` should name the config file");
            }
            Err(e) => panic!("{what}: expected a parse error, got: {e}"),
            Ok(_) => panic!("{what}: accepted\n{text}"),
        }
    }
}

/// Runs the binary on `text` as `DIR/job.toml`; asserts status 2, `error:` naming
/// `needle` on stderr, and no output directory.
fn refused(what: &str, text: &str, needle: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(tmp.path(), text, true);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{what}: exit status; stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{what}: stderr `{stderr}`");
    assert!(stderr.contains(needle), "{what}: stderr `{stderr}` should name `{needle}`");
    assert!(o.stdout.is_empty(), "{what}: stdout `{}`", String::from_utf8_lossy(&o.stdout));
    assert!(!tmp.path().join("out").exists(), "{what}: the output directory was created");
}

#[test]
fn the_binary_refuses_bad_configs_before_running() {
    for (what, text, key) in invalid_cases().into_iter().chain(parse_cases()) {
        refused(what, &text, key);
    }
}

#[test]
fn a_missing_config_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("nope.toml");
    let o = common::weft_out(&["run", "--config", p.to_str().unwrap(), "--quiet"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("nope.toml"), "{stderr}");
}

#[test]
fn a_missing_input_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(tmp.path(), GOOD, false);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("r.csv"), "stderr `{stderr}` should name the missing file");
}

/// The OS error of a failed open appears once, not repeated by the error chain
/// (`{source}` in a thiserror message whose `source` field is also the error's
/// `source()`, printed again by anyhow's `{:#}`).
#[test]
fn io_errors_are_reported_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_in(tmp.path(), GOOD, false);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "stderr: {stderr}");
}
