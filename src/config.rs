//! The job configuration: one TOML file, parsed strictly, validated before anything
//! runs, and resolved into a [`Job`] the engine and the batch join both execute.
//!
//! Every limit of the engine is a named constant here, unit last. Unknown keys and
//! wrong types are rejected by serde (`deny_unknown_fields`) with the key's line;
//! semantic checks ([`Job::resolve`]) name the offending key.
//! Relative paths are resolved against the directory of the config file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::event::Side;
use crate::schema::{Field, FieldType, Schema};

/// Events per batch on a ring.
pub const BATCH_EVENTS_DEFAULT: u32 = 1024;
pub const BATCH_EVENTS_MAX: u32 = 65536;
/// Batches a ring holds before its producer waits (backpressure).
pub const RING_SLOTS_DEFAULT: u32 = 64;
pub const RING_SLOTS_MAX: u32 = 4096;
/// Shards per job.
pub const SHARDS_MAX: u32 = 256;
/// Rows a source reads per poll before the shard serves its rings again.
pub const SOURCE_CHUNK_ROWS: usize = 1024;
/// Memory glommio registers per executor for its io_uring buffers.
pub const IO_MEMORY_KIB_DEFAULT: u32 = 1024;
/// `engine.file_split_kib` when not given: files above 4 MiB are split across shards.
pub const FILE_SPLIT_KIB_DEFAULT: u64 = 4096;
/// Resident arena memory, all shards together, when `engine.state_memory_mb` is unset.
pub const STATE_MEMORY_MB_DEFAULT: u64 = 1024;
/// Events the built-in workload runs when `--events` is not given.
pub const BUILTIN_EVENTS_DEFAULT: u64 = 20_000_000;
/// Time between two checkpoints when `engine.checkpoint_interval_ms` is unset.
pub const CHECKPOINT_INTERVAL_MS_DEFAULT: u64 = 10_000;
/// Complete checkpoints kept when `engine.checkpoints_retained` is unset.
pub const CHECKPOINTS_RETAINED_DEFAULT: u32 = 3;
/// How often a busy shard yields to reap io_uring completions (checkpoint writes, ring
/// wake-ups), in µs. glommio's default (100 ms) stalled checkpoints that long; 1 ms made
/// glommio lose timer wake-ups (rate-limited runs hung, 1 in ~3); 10 ms did not hang in
/// 30 tries. `WEFT_PREEMPT_US` overrides it for experiments (read once, by the CLI).
pub const PREEMPT_US_DEFAULT: u64 = 10_000;

const _: () = assert!(BATCH_EVENTS_DEFAULT <= BATCH_EVENTS_MAX);
const _: () = assert!(RING_SLOTS_DEFAULT <= RING_SLOTS_MAX);

/// Errors found in a configuration, before anything runs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: `{key}`: {message}")]
    Invalid { path: PathBuf, key: String, message: String },
    #[error(
        "input file {input} lies inside the {what} {dir}; weft writes and removes files there, \
         so it could lose the input. Move the input or choose another directory"
    )]
    InputInJobDir { input: PathBuf, what: &'static str, dir: PathBuf },
}

/// The text format of inputs and output; owned by `codec` (layer 3), named here
/// because the config is where users choose it.
pub use crate::codec::Format;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

impl JoinKind {
    /// Whether unmatched rows of `side` are emitted NULL-padded.
    pub fn emits_unmatched(self, side: Side) -> bool {
        matches!((self, side), (JoinKind::Full, _) | (JoinKind::Left, Side::Left) | (JoinKind::Right, Side::Right))
    }
}

/// The raw TOML document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub left: InputConfig,
    pub right: InputConfig,
    pub join: JoinConfig,
    #[serde(default)]
    pub output: OutputConfig,
    #[serde(default)]
    pub engine: EngineConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub name: String,
    #[serde(default)]
    pub format: Format,
    /// Each file is one partition.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Instead of `paths`: the built-in impressions/plays generator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<GeneratorConfig>,
    /// Instead of `paths`: a Kafka topic, each of its partitions one partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinConfig {
    pub kind: JoinKind,
    pub lower_ms: i64,
    pub upper_ms: i64,
    #[serde(default)]
    pub max_out_of_orderness_ms: i64,
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    #[serde(default = "idle_timeout_default")]
    pub idle_timeout_ms: i64,
}

/// `[left].kafka` / `[right].kafka` / `[output].kafka`: a topic on a Kafka cluster.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,...`; may be left out when `engine.kafka_brokers` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    pub topic: String,
    /// Read up to the end offsets found at start, then end as a file does (inputs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bounded: Option<bool>,
    /// The consumer group the checkpointed offsets are committed to (for lag tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Passed to librdkafka as they are.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// Output only: the topic of late rows (default `<topic>.late`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_topic: Option<String>,
    /// Output only: the topic of dead letters (default `<topic>.dead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_topic: Option<String>,
    /// Output only: the topic of weft's publish markers (default `<topic>.weft-progress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_topic: Option<String>,
    /// Output only: the prefix of the producers' transactional ids (default `weft-<topic>`);
    /// the id of instance i, shard s is `<prefix>-<i>-<s>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
}

fn idle_timeout_default() -> i64 {
    10_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// A directory; "-" = stdout; "none" = count only.
    #[serde(default = "output_path_default")]
    pub path: String,
    #[serde(default)]
    pub format: Format,
    /// Instead of `path`: a Kafka topic, written exactly once per checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaConfig>,
}

fn output_path_default() -> String {
    "none".into()
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { path: output_path_default(), format: Format::Csv, kafka: None }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Default: the number of CPUs this process may run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_events: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_slots: Option<u32>,
    /// Width of a state time bucket; default (upper_ms - lower_ms) / 32, at least 1 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_bucket_ms: Option<i64>,
    /// Pin shard i to CPU i (modulo the CPUs available). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_cores: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_memory_kib: Option<u32>,
    /// A CSV or JSON-lines file larger than this (KiB) is read by every shard, in chunks
    /// of this size (source/split.rs). 0: every file is read by one shard. Default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_split_kib: Option<u64>,
    /// Keep join state in mmap'd arena files under this directory (one subdirectory
    /// per shard). Without it, state lives on the heap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Mapped arena pages kept resident, all shards together (MiB). Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_memory_mb: Option<u64>,
    /// Checkpointing is on when this is set: snapshots go here, and a job restarted with
    /// the same config resumes from the latest valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<String>,
    /// Time between two checkpoints (ms, processing time). Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval_ms: Option<u64>,
    /// Checkpoints kept. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints_retained: Option<u32>,
    /// Serve Prometheus metrics at `http://<metrics_addr>/metrics` (`host:port`);
    /// off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// This process's number among `instances` (0-based). Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// How many weft processes share the Kafka topics. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<u32>,
    /// Brokers of every `kafka` table that gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_brokers: Option<String>,
}

/// Parameters of the impressions (left) / plays (right) generator. Every field is
/// optional; `[left].generator` and `[right].generator` are merged, and a key set on
/// both must agree.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Total events, impressions + plays (the CLI's `--events` overrides it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    /// Distinct profile ids, drawn with zipf skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub titles: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipf: Option<f64>,
    /// Fraction of impressions that get a play, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_rate: Option<f64>,
    /// On-time rows arrive up to this many ms after their event time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disorder_ms: Option<i64>,
    /// Fraction of rows delayed by 2 x disorder_ms + U[0, late_max_ms].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_fraction: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late_max_ms: Option<i64>,
    /// Plays happen 0..=play_window_ms after their impression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_window_ms: Option<i64>,
    /// Impressions per simulated second of event time, all partitions together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_rate: Option<f64>,
    /// Wall-clock events/s, all partitions together; 0 = as fast as possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
    /// Partitions per input; default one per shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
}

/// Resolved generator parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenParams {
    pub seed: u64,
    pub events: u64,
    pub keys: u64,
    pub titles: u32,
    pub zipf: f64,
    pub match_rate: f64,
    pub disorder_ms: i64,
    pub late_fraction: f64,
    pub late_max_ms: i64,
    pub play_window_ms: i64,
    pub event_time_rate: f64,
    pub rate_limit: f64,
    pub partitions: u32,
}

/// Where one input's rows come from.
#[derive(Clone, Debug)]
pub enum InputSource {
    Files { format: Format, paths: Vec<PathBuf> },
    Generator,
    Kafka(KafkaInput),
}

/// A resolved Kafka input.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaInput {
    pub format: Format,
    pub brokers: String,
    pub topic: String,
    pub bounded: bool,
    pub group: Option<String>,
    pub options: Vec<(String, String)>,
    /// The topic's partition count, read from the brokers at start
    /// (`source::kafka::resolve`); 0 until then.
    pub partitions: u32,
}

/// librdkafka properties weft sets itself: an input's `options` may not give them.
pub const KAFKA_OWN_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `brokers` (or engine.kafka_brokers)"),
    ("group.id", "use `group`"),
    ("enable.auto.commit", "weft commits the offsets of completed checkpoints itself"),
    ("enable.auto.offset.store", "weft commits the offsets of completed checkpoints itself"),
    ("auto.offset.reset", "weft starts at the beginning and refuses offsets lost to retention"),
    ("enable.partition.eof", "weft needs partition ends for bounded reads"),
];

#[derive(Clone, Debug)]
pub struct Input {
    pub schema: Schema,
    pub source: InputSource,
}

impl Input {
    /// The format the input's rows arrive in, in which its late rows are written (so
    /// they can be fed again): the files' or the records' format; CSV for the generator.
    pub fn row_format(&self) -> Format {
        match &self.source {
            InputSource::Files { format, .. } => *format,
            InputSource::Kafka(k) => k.format,
            InputSource::Generator => Format::Csv,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum OutputTarget {
    Dir(PathBuf),
    Stdout,
    None,
    Kafka(Box<KafkaOutput>),
}

impl OutputTarget {
    /// Where the shards' epoch files go: the output directory, or the Kafka sink's
    /// staging directory (published from there once committed).
    pub fn files_dir(&self) -> Option<&Path> {
        match self {
            OutputTarget::Dir(d) => Some(d),
            OutputTarget::Kafka(k) => Some(&k.staging),
            OutputTarget::Stdout | OutputTarget::None => None,
        }
    }
}

/// A resolved Kafka output (`[output].kafka`).
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaOutput {
    pub brokers: String,
    pub topic: String,
    pub late_topic: String,
    pub dead_topic: String,
    pub progress_topic: String,
    /// Prefix of the transactional ids: `<prefix>-<instance>-<shard>`.
    pub transactional_id: String,
    pub options: Vec<(String, String)>,
    /// `<checkpoint_dir>/kafka-out`: committed epochs wait here until published.
    pub staging: PathBuf,
}

/// librdkafka properties the Kafka sink sets itself.
pub const KAFKA_SINK_OWN_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `brokers` (or engine.kafka_brokers)"),
    ("transactional.id", "use `transactional_id` (a prefix; weft adds the instance and shard)"),
    ("enable.idempotence", "transactions need the idempotent producer"),
];

/// The subdirectory of `engine.checkpoint_dir` where the Kafka sink stages its epochs.
pub const KAFKA_STAGING_DIR: &str = "kafka-out";

/// A validated, resolved job: what the engine and the batch join execute.
#[derive(Clone, Debug)]
pub struct Job {
    pub left: Input,
    pub right: Input,
    pub kind: JoinKind,
    pub lower_ms: i64,
    pub upper_ms: i64,
    pub max_out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub idle_timeout_ms: i64,
    pub output: OutputTarget,
    pub output_format: Format,
    pub shards: u32,
    pub batch_events: u32,
    pub ring_slots: u32,
    pub state_bucket_ms: i64,
    pub pin_cores: bool,
    pub io_memory_kib: u32,
    /// `engine.file_split_kib` in bytes (0: off).
    pub file_split_bytes: u64,
    pub state_dir: Option<PathBuf>,
    pub state_memory_mb: u64,
    pub checkpoint: Option<CheckpointSettings>,
    pub generator: Option<GenParams>,
    /// `engine.metrics_addr`: where the metrics endpoint listens (not part of the job's
    /// shape: a restart may move it).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `engine.instance` of `engine.instances`: this process reads partition `p` of a
    /// Kafka topic when `p % instances == instance`.
    pub instance: u32,
    pub instances: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSettings {
    pub dir: PathBuf,
    pub interval_ms: u64,
    pub retained: u32,
}

impl Job {
    pub fn input(&self, side: Side) -> &Input {
        match side {
            Side::Left => &self.left,
            Side::Right => &self.right,
        }
    }

    /// The directories `weft run` of this job writes, named as the messages name them:
    /// output, checkpoint and state directories (those the job has).
    pub fn job_dirs(&self) -> Vec<(&'static str, &Path)> {
        let mut v = Vec::new();
        if let Some(ck) = &self.checkpoint {
            v.push(("checkpoint directory", ck.dir.as_path()));
        }
        if let Some(d) = &self.state_dir {
            v.push(("state directory", d.as_path()));
        }
        if let OutputTarget::Dir(d) = &self.output {
            v.push(("output directory", d.as_path()));
        }
        v
    }

    /// Refuses an input file that lies inside one of `dirs` (canonical paths, so links
    /// and `..` do not hide it). A directory or input that does not exist yet holds
    /// nothing and is skipped (the source reports a missing input). Run before any of
    /// the directories is touched: `--force` and recovery remove files there.
    pub fn check_inputs_outside(&self, dirs: &[(&'static str, &Path)]) -> Result<(), ConfigError> {
        let canon_dirs: Vec<_> =
            dirs.iter().filter_map(|(what, d)| Some((*what, *d, std::fs::canonicalize(d).ok()?))).collect();
        for side in [Side::Left, Side::Right] {
            let InputSource::Files { paths, .. } = &self.input(side).source else { continue };
            for p in paths {
                let Ok(cp) = std::fs::canonicalize(p) else { continue };
                if let Some((what, d, _)) = canon_dirs.iter().find(|(_, _, cd)| cp.starts_with(cd)) {
                    return Err(ConfigError::InputInJobDir { input: p.clone(), what, dir: d.to_path_buf() });
                }
            }
        }
        Ok(())
    }
}

// The generator's schema and defaults: owned here, once. `source/generator.rs`
// emits rows in this schema (its tests check it) and `weft gen`, the built-in job
// and the benches take the names from here. They are not in source/generator.rs
// because the config (layer 4) resolves generator inputs and may not import
// `source` (layer 7).

/// Input names of the built-in job and of `weft gen` files: impressions, plays.
pub const GENERATOR_INPUT_NAMES: [&str; 2] = ["impressions", "plays"];
/// The generator's key fields (both inputs).
pub const GENERATOR_KEY: [&str; 2] = ["profile_id", "title_id"];
/// The generator's event-time field (both inputs).
pub const GENERATOR_TIME: &str = "ts";
/// Impressions: `profile_id, title_id, ts, row, col`, in the order the generator
/// sets the slots.
pub const GENERATOR_LEFT_FIELDS: [(&str, FieldType); 5] = [
    ("profile_id", FieldType::U64),
    ("title_id", FieldType::U32),
    ("ts", FieldType::I64),
    ("row", FieldType::U32),
    ("col", FieldType::U32),
];
/// Plays: `profile_id, title_id, ts, duration_ms`.
pub const GENERATOR_RIGHT_FIELDS: [(&str, FieldType); 4] = [
    ("profile_id", FieldType::U64),
    ("title_id", FieldType::U32),
    ("ts", FieldType::I64),
    ("duration_ms", FieldType::U32),
];

/// Generator defaults for a config (README, "Configuration"); `[left].generator`
/// and `[right].generator` keys left out take these.
pub const GEN_SEED_DEFAULT: u64 = 42;
pub const GEN_KEYS_DEFAULT: u64 = 1_000_000;
pub const GEN_TITLES_DEFAULT: u32 = 20_000;
pub const GEN_ZIPF_DEFAULT: f64 = 1.0;
pub const GEN_MATCH_RATE_DEFAULT: f64 = 0.3;
pub const GEN_DISORDER_MS_DEFAULT: i64 = 5_000;
pub const GEN_LATE_FRACTION_DEFAULT: f64 = 0.001;
pub const GEN_LATE_MAX_MS_DEFAULT: i64 = 600_000;
pub const GEN_PLAY_WINDOW_MS_DEFAULT: i64 = 3_600_000;
pub const GEN_EVENT_TIME_RATE_DEFAULT: f64 = 200.0;
/// 0 = as fast as possible.
pub const GEN_RATE_LIMIT_DEFAULT: f64 = 0.0;
/// Generator partitions per input at most.
pub const GEN_PARTITIONS_MAX: u32 = 4096;
/// `weft gen` defaults that differ from a config's, as `weft gen --help` shows
/// them: files for a quick check, not the 20M-event benchmark (so fewer events
/// and keys, and a fixed partition count since there are no shards to follow).
pub const GEN_CLI_EVENTS_DEFAULT: u64 = 1_000_000;
pub const GEN_CLI_KEYS_DEFAULT: u64 = 100_000;
pub const GEN_CLI_PARTITIONS_DEFAULT: u32 = 2;

/// The fields the generator writes for impressions (left) and plays (right).
pub fn generator_fields(side: Side) -> Vec<Field> {
    let fields: &[(&str, FieldType)] = match side {
        Side::Left => &GENERATOR_LEFT_FIELDS,
        Side::Right => &GENERATOR_RIGHT_FIELDS,
    };
    fields.iter().map(|&(name, ty)| Field::new(name, ty)).collect()
}

/// The generator's schema for `side`, as the built-in job and `weft gen` name it.
pub fn generator_schema(side: Side) -> Schema {
    let key: Vec<String> = GENERATOR_KEY.iter().map(|k| k.to_string()).collect();
    Schema::new(GENERATOR_INPUT_NAMES[side.idx()], generator_fields(side), &key, GENERATOR_TIME)
        .expect("the generator's schema is valid")
}

pub fn available_cpus() -> u32 {
    core_affinity::get_core_ids().map(|c| c.len() as u32).filter(|&n| n > 0).unwrap_or(1)
}

impl JobConfig {
    /// Reads and parses a config file (syntax, unknown keys and types only).
    pub fn load(path: &Path) -> Result<JobConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { path: path.into(), source: e })?;
        JobConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<JobConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })
    }

    /// The built-in workload: generator with 1,000,000 keys, left outer join of
    /// impressions and plays within one hour, output counted.
    pub fn builtin() -> JobConfig {
        let gen_input = |name: &str, g: Option<GeneratorConfig>| InputConfig {
            name: name.into(),
            generator: Some(g.unwrap_or_default()),
            ..Default::default()
        };
        JobConfig {
            left: gen_input(
                GENERATOR_INPUT_NAMES[Side::Left.idx()],
                Some(GeneratorConfig {
                    keys: Some(GEN_KEYS_DEFAULT),
                    events: Some(BUILTIN_EVENTS_DEFAULT),
                    ..Default::default()
                }),
            ),
            right: gen_input(GENERATOR_INPUT_NAMES[Side::Right.idx()], None),
            join: JoinConfig {
                kind: JoinKind::Left,
                lower_ms: 0,
                upper_ms: 3_600_000,
                max_out_of_orderness_ms: 5_000,
                allowed_lateness_ms: 0,
                idle_timeout_ms: idle_timeout_default(),
            },
            output: OutputConfig::default(),
            engine: EngineConfig::default(),
        }
    }

    /// Settings that are valid but have no effect, one line each (the CLI prints them
    /// as warnings before a run).
    pub fn warnings(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.engine.state_memory_mb.is_some() && self.engine.state_dir.is_none() {
            v.push(
                "`engine.state_memory_mb` is set but `engine.state_dir` is not: the budget applies only to \
                 state in arena files, so it has no effect on heap state"
                    .to_string(),
            );
        }
        v
    }

    /// Validates and resolves. `base` is the directory relative paths are taken from.
    pub fn resolve(&self, path: &Path, base: &Path) -> Result<Job, ConfigError> {
        self.resolve_checked(base).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        })
    }

    /// [`JobConfig::resolve`] in named steps; an error is the offending key and why.
    fn resolve_checked(&self, base: &Path) -> Result<Job, Invalid> {
        let j = &self.join;
        check_join(j)?;
        let e = &self.engine;
        let shards = e.shards.unwrap_or_else(available_cpus);
        if shards == 0 || shards > SHARDS_MAX {
            return Err(invalid("engine.shards", format!("must be in 1..={SHARDS_MAX}, got {shards}")));
        }
        let batch_events = e.batch_events.unwrap_or(BATCH_EVENTS_DEFAULT);
        if batch_events == 0 || batch_events > BATCH_EVENTS_MAX {
            return Err(invalid("engine.batch_events", format!("must be in 1..={BATCH_EVENTS_MAX}")));
        }
        let ring_slots = e.ring_slots.unwrap_or(RING_SLOTS_DEFAULT);
        if !(2..=RING_SLOTS_MAX).contains(&ring_slots) {
            return Err(invalid("engine.ring_slots", format!("must be in 2..={RING_SLOTS_MAX}")));
        }
        let width = (j.upper_ms as i128 - j.lower_ms as i128) / 32;
        let state_bucket_ms = match e.state_bucket_ms {
            Some(b) if b <= 0 => return Err(invalid("engine.state_bucket_ms", format!("must be > 0, got {b}"))),
            Some(b) => b,
            None => width.clamp(1000, 3_600_000) as i64,
        };
        let generator = self.resolve_generator(shards)?;
        let (left, right) = self.resolve_inputs(base)?;
        let (instance, instances) = self.resolve_instances(&left, &right)?;
        let checkpoint = self.resolve_checkpoint(base)?;
        let output = match self.output.path.as_str() {
            _ if self.output.kafka.is_some() => self.resolve_kafka_output(checkpoint.as_ref())?,
            "" => return Err(invalid("output.path", "is empty: use a directory, \"-\" or \"none\"".into())),
            "-" => OutputTarget::Stdout,
            "none" => OutputTarget::None,
            p => OutputTarget::Dir(base.join(p)),
        };
        Ok(Job {
            left,
            right,
            kind: j.kind,
            lower_ms: j.lower_ms,
            upper_ms: j.upper_ms,
            max_out_of_orderness_ms: j.max_out_of_orderness_ms,
            allowed_lateness_ms: j.allowed_lateness_ms,
            idle_timeout_ms: j.idle_timeout_ms,
            output,
            output_format: self.output.format,
            shards,
            batch_events,
            ring_slots,
            state_bucket_ms,
            pin_cores: e.pin_cores.unwrap_or(true),
            io_memory_kib: e.io_memory_kib.unwrap_or(IO_MEMORY_KIB_DEFAULT),
            file_split_bytes: e.file_split_kib.unwrap_or(FILE_SPLIT_KIB_DEFAULT).saturating_mul(1024),
            state_dir: match &e.state_dir {
                Some(d) if d.is_empty() => return Err(invalid("engine.state_dir", "is empty".into())),
                Some(d) => Some(base.join(d)),
                None => None,
            },
            state_memory_mb: match e.state_memory_mb {
                Some(0) => return Err(invalid("engine.state_memory_mb", "must be > 0".into())),
                Some(m) => m,
                None => STATE_MEMORY_MB_DEFAULT,
            },
            checkpoint,
            generator,
            metrics_addr: resolve_metrics_addr(e.metrics_addr.as_deref())?,
            instance,
            instances,
        })
    }

    /// `[output].kafka`: a topic written through transactions tied to checkpoints, so
    /// checkpointing is required (the epochs are staged under its directory).
    fn resolve_kafka_output(&self, checkpoint: Option<&CheckpointSettings>) -> Result<OutputTarget, Invalid> {
        let kc = self.output.kafka.as_ref().expect("called with an output.kafka table");
        if self.output.path != output_path_default() {
            return Err(invalid("output.path", "an output has one of `path` or `kafka`".into()));
        }
        let Some(ck) = checkpoint else {
            return Err(invalid(
                "output.kafka",
                "needs checkpointing: the output is published to Kafka in one transaction per checkpoint, exactly                  once; set engine.checkpoint_dir"
                    .into(),
            ));
        };
        if kc.bounded.is_some() {
            return Err(invalid("output.kafka.bounded", "only an input is bounded".into()));
        }
        if kc.group.is_some() {
            return Err(invalid("output.kafka.group", "only an input has a consumer group".into()));
        }
        let brokers = resolve_brokers(kc, self.engine.kafka_brokers.as_deref(), "output.kafka")?;
        let topic = kc.topic.clone();
        let named = |key: &str, v: &Option<String>, default: String| match v.as_deref() {
            Some("") => Err(invalid(&format!("output.kafka.{key}"), "is empty: leave it out for the default".into())),
            Some(t) => Ok(t.to_string()),
            None => Ok(default),
        };
        if topic.is_empty() {
            return Err(invalid("output.kafka.topic", "is empty".into()));
        }
        let late_topic = named("late_topic", &kc.late_topic, format!("{topic}.late"))?;
        let dead_topic = named("dead_topic", &kc.dead_topic, format!("{topic}.dead"))?;
        let progress_topic = named("progress_topic", &kc.progress_topic, format!("{topic}.weft-progress"))?;
        let transactional_id = named("transactional_id", &kc.transactional_id, format!("weft-{topic}"))?;
        let topics = [("topic", &topic), ("late_topic", &late_topic), ("dead_topic", &dead_topic)];
        for (key, t) in topics {
            if *t == progress_topic {
                return Err(invalid(
                    &format!("output.kafka.{key}"),
                    format!("`{t}` is also the progress topic: weft's markers must have a topic of their own"),
                ));
            }
        }
        for (name, why) in KAFKA_SINK_OWN_OPTIONS {
            if kc.options.contains_key(*name) {
                return Err(invalid("output.kafka.options", format!("`{name}` is set by weft: {why}")));
            }
        }
        Ok(OutputTarget::Kafka(Box::new(KafkaOutput {
            brokers,
            topic,
            late_topic,
            dead_topic,
            progress_topic,
            transactional_id,
            options: kc.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            staging: ck.dir.join(KAFKA_STAGING_DIR),
        })))
    }

    /// `engine.instance` / `engine.instances`: more than one instance needs both inputs
    /// on Kafka (a file or the generator would be read by every instance).
    fn resolve_instances(&self, left: &Input, right: &Input) -> Result<(u32, u32), Invalid> {
        let instances = self.engine.instances.unwrap_or(1);
        let instance = self.engine.instance.unwrap_or(0);
        if instances == 0 {
            return Err(invalid("engine.instances", "must be >= 1".into()));
        }
        if instance >= instances {
            return Err(invalid(
                "engine.instance",
                format!("is {instance}, must be below engine.instances ({instances}): instances are numbered from 0"),
            ));
        }
        if instances > 1 {
            for (key, input) in [("left.kafka", left), ("right.kafka", right)] {
                if !matches!(input.source, InputSource::Kafka(_)) {
                    return Err(invalid(
                        key,
                        format!(
                            "engine.instances is {instances}: every input must be a Kafka topic, whose partitions \
                             the instances share (a file or the generator would be read by every instance)"
                        ),
                    ));
                }
            }
        }
        Ok((instance, instances))
    }

    /// The generator: on both inputs or neither, its two tables merged into one.
    fn resolve_generator(&self, shards: u32) -> Result<Option<GenParams>, Invalid> {
        match (&self.left.generator, &self.right.generator) {
            (None, None) => Ok(None),
            (Some(l), Some(r)) => Ok(Some(merge_generator(l, r, shards)?)),
            (Some(_), None) => Err(invalid(
                "right.generator",
                "the generator produces both inputs: set it on [right] too (`generator = {}`)".into(),
            )),
            (None, Some(_)) => Err(invalid(
                "left.generator",
                "the generator produces both inputs: set it on [left] too (`generator = {}`)".into(),
            )),
        }
    }

    /// Both inputs, with distinct names and keys of the same types field by field.
    fn resolve_inputs(&self, base: &Path) -> Result<(Input, Input), Invalid> {
        let brokers = self.engine.kafka_brokers.as_deref();
        let left = resolve_input(&self.left, "left", Side::Left, base, brokers)?;
        let right = resolve_input(&self.right, "right", Side::Right, base, brokers)?;
        if left.schema.name == right.schema.name {
            return Err(invalid(
                "right.name",
                format!("both inputs are named `{}`; output columns would clash", left.schema.name),
            ));
        }
        let (lk, rk) = (left.schema.key_types(), right.schema.key_types());
        if lk.len() != rk.len() {
            return Err(invalid("right.key", format!("left key has {} fields, right key has {}", lk.len(), rk.len())));
        }
        for (i, (a, b)) in lk.iter().zip(&rk).enumerate() {
            if a != b {
                return Err(invalid(
                    "right.key",
                    format!(
                        "key field {} has type {} on the left (`{}`) and {} on the right (`{}`); key types must be equal",
                        i + 1,
                        a.name(),
                        self.left.key[i],
                        b.name(),
                        self.right.key[i]
                    ),
                ));
            }
        }
        Ok((left, right))
    }

    /// Checkpoint settings, or `None` when checkpointing is off (then its other keys must
    /// be unset too); stdout output cannot be committed, so it refuses checkpointing.
    fn resolve_checkpoint(&self, base: &Path) -> Result<Option<CheckpointSettings>, Invalid> {
        let e = &self.engine;
        let d = match &e.checkpoint_dir {
            None if e.checkpoint_interval_ms.is_some() || e.checkpoints_retained.is_some() => return Err(invalid(
                "engine.checkpoint_dir",
                "checkpoint_interval_ms / checkpoints_retained are set but checkpointing is off: set checkpoint_dir"
                    .into(),
            )),
            None => return Ok(None),
            Some(d) if d.is_empty() => return Err(invalid("engine.checkpoint_dir", "is empty".into())),
            Some(d) => d,
        };
        if self.output.path == "-" {
            return Err(invalid(
                "output.path",
                "\"-\" (stdout) cannot be committed exactly once; checkpointing needs a directory or \"none\"".into(),
            ));
        }
        let interval_ms = e.checkpoint_interval_ms.unwrap_or(CHECKPOINT_INTERVAL_MS_DEFAULT);
        if interval_ms == 0 {
            return Err(invalid("engine.checkpoint_interval_ms", "must be > 0".into()));
        }
        let retained = e.checkpoints_retained.unwrap_or(CHECKPOINTS_RETAINED_DEFAULT);
        if retained == 0 {
            return Err(invalid("engine.checkpoints_retained", "must be >= 1".into()));
        }
        Ok(Some(CheckpointSettings { dir: base.join(d), interval_ms, retained }))
    }
}

/// A configuration error before the file is named: the key and what is wrong with it.
type Invalid = (String, String);

fn invalid(key: &str, message: String) -> Invalid {
    (key.to_string(), message)
}

/// The join's bounds and times: lower <= upper, no negative disorder or lateness, a
/// positive idle timeout.
fn check_join(j: &JoinConfig) -> Result<(), Invalid> {
    if j.lower_ms > j.upper_ms {
        return Err(invalid(
            "join.lower_ms",
            format!("lower_ms ({}) is greater than upper_ms ({})", j.lower_ms, j.upper_ms),
        ));
    }
    for (k, v) in [
        ("join.max_out_of_orderness_ms", j.max_out_of_orderness_ms),
        ("join.allowed_lateness_ms", j.allowed_lateness_ms),
    ] {
        if v < 0 {
            return Err(invalid(k, format!("must be >= 0, got {v}")));
        }
    }
    if j.idle_timeout_ms <= 0 {
        return Err(invalid("join.idle_timeout_ms", format!("must be > 0, got {}", j.idle_timeout_ms)));
    }
    Ok(())
}

/// A `kafka` table's brokers: its own, else `engine.kafka_brokers` (`fallback`).
fn resolve_brokers(kc: &KafkaConfig, fallback: Option<&str>, key: &str) -> Result<String, Invalid> {
    match (kc.brokers.as_deref(), fallback) {
        (Some(b), _) | (None, Some(b)) if !b.trim().is_empty() => Ok(b.trim().to_string()),
        _ => Err((
            format!("{key}.brokers"),
            "missing: give `brokers = \"host:port,...\"` here or `kafka_brokers` under [engine]".into(),
        )),
    }
}

/// An input's `kafka` table: brokers from it or from `engine.kafka_brokers`, a topic,
/// options that leave weft's own properties alone.
fn resolve_kafka(kc: &KafkaConfig, format: Format, key: &str, brokers: Option<&str>) -> Result<KafkaInput, Invalid> {
    let brokers = resolve_brokers(kc, brokers, key)?;
    if kc.topic.is_empty() {
        return Err((format!("{key}.topic"), "is empty".into()));
    }
    if kc.group.as_deref() == Some("") {
        return Err((format!("{key}.group"), "is empty: leave it out, or name the consumer group".into()));
    }
    let output_only = [
        ("late_topic", &kc.late_topic),
        ("dead_topic", &kc.dead_topic),
        ("progress_topic", &kc.progress_topic),
        ("transactional_id", &kc.transactional_id),
    ];
    if let Some((name, _)) = output_only.iter().find(|(_, v)| v.is_some()) {
        return Err((format!("{key}.{name}"), "only [output].kafka has it".into()));
    }
    for (name, why) in KAFKA_OWN_OPTIONS {
        if kc.options.contains_key(*name) {
            return Err((format!("{key}.options"), format!("`{name}` is set by weft: {why}")));
        }
    }
    Ok(KafkaInput {
        format,
        brokers,
        topic: kc.topic.clone(),
        bounded: kc.bounded.unwrap_or(false),
        group: kc.group.clone(),
        options: kc.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        partitions: 0,
    })
}

fn resolve_input(
    c: &InputConfig,
    side_key: &str,
    side: Side,
    base: &Path,
    brokers: Option<&str>,
) -> Result<Input, Invalid> {
    let k = |s: &str| format!("{side_key}.{s}");
    if c.name.is_empty() || c.name.contains(['.', '/', ',', '"']) {
        return Err((k("name"), format!("`{}` is not a usable name (non-empty, no . / , \")", c.name)));
    }
    let (fields, key, time, source) = if let Some(kc) = &c.kafka {
        if !c.paths.is_empty() || c.generator.is_some() {
            return Err((k("kafka"), "an input has one of `paths`, `generator` or `kafka`".into()));
        }
        if c.fields.is_empty() {
            return Err((k("fields"), "missing: list the input's fields with their types".into()));
        }
        let time = c.time.clone().ok_or_else(|| (k("time"), "missing: name the event-time field".into()))?;
        (c.fields.clone(), c.key.clone(), time, InputSource::Kafka(resolve_kafka(kc, c.format, &k("kafka"), brokers)?))
    } else if c.generator.is_some() {
        if !c.paths.is_empty() {
            return Err((k("paths"), "an input has either `paths` or `generator`, not both".into()));
        }
        let gf = generator_fields(side);
        if !c.fields.is_empty() && c.fields != gf {
            return Err((k("fields"), "the generator's fields are fixed; leave `fields` out".into()));
        }
        let key = if c.key.is_empty() { GENERATOR_KEY.iter().map(|k| k.to_string()).collect() } else { c.key.clone() };
        (gf, key, c.time.clone().unwrap_or_else(|| GENERATOR_TIME.into()), InputSource::Generator)
    } else {
        if c.paths.is_empty() {
            return Err((k("paths"), "no input: give `paths` (one file per partition), `generator` or `kafka`".into()));
        }
        if c.fields.is_empty() {
            return Err((k("fields"), "missing: list the input's fields with their types".into()));
        }
        let time = c.time.clone().ok_or_else(|| (k("time"), "missing: name the event-time field".into()))?;
        let paths = c.paths.iter().map(|p| base.join(p)).collect();
        (c.fields.clone(), c.key.clone(), time, InputSource::Files { format: c.format, paths })
    };
    let schema = Schema::new(&c.name, fields, &key, &time).map_err(|m| {
        let which = if m.contains("time field") {
            "time"
        } else if m.contains("key") {
            "key"
        } else {
            "fields"
        };
        (k(which), m)
    })?;
    Ok(Input { schema, source })
}

fn merge_generator(l: &GeneratorConfig, r: &GeneratorConfig, shards: u32) -> Result<GenParams, Invalid> {
    macro_rules! pick {
        ($f:ident, $default:expr) => {
            match (l.$f, r.$f) {
                (Some(a), Some(b)) if a != b => {
                    return Err((
                        format!("right.generator.{}", stringify!($f)),
                        format!("differs from left.generator.{} ({:?} vs {:?})", stringify!($f), b, a),
                    ))
                }
                (Some(a), _) | (None, Some(a)) => a,
                (None, None) => $default,
            }
        };
    }
    let g = GenParams {
        seed: pick!(seed, GEN_SEED_DEFAULT),
        events: pick!(events, BUILTIN_EVENTS_DEFAULT),
        keys: pick!(keys, GEN_KEYS_DEFAULT),
        titles: pick!(titles, GEN_TITLES_DEFAULT),
        zipf: pick!(zipf, GEN_ZIPF_DEFAULT),
        match_rate: pick!(match_rate, GEN_MATCH_RATE_DEFAULT),
        disorder_ms: pick!(disorder_ms, GEN_DISORDER_MS_DEFAULT),
        late_fraction: pick!(late_fraction, GEN_LATE_FRACTION_DEFAULT),
        late_max_ms: pick!(late_max_ms, GEN_LATE_MAX_MS_DEFAULT),
        play_window_ms: pick!(play_window_ms, GEN_PLAY_WINDOW_MS_DEFAULT),
        event_time_rate: pick!(event_time_rate, GEN_EVENT_TIME_RATE_DEFAULT),
        rate_limit: pick!(rate_limit, GEN_RATE_LIMIT_DEFAULT),
        partitions: pick!(partitions, shards),
    };
    let bad = |f: &str, m: String| Err((format!("left.generator.{f}"), m));
    if g.keys == 0 {
        return bad("keys", "must be > 0".into());
    }
    if g.titles == 0 {
        return bad("titles", "must be > 0".into());
    }
    if !(g.zipf >= 0.0 && g.zipf.is_finite()) {
        return bad("zipf", format!("must be >= 0, got {}", g.zipf));
    }
    if !(0.0..=1.0).contains(&g.match_rate) {
        return bad("match_rate", format!("must be in [0, 1], got {}", g.match_rate));
    }
    if !(0.0..=1.0).contains(&g.late_fraction) {
        return bad("late_fraction", format!("must be in [0, 1], got {}", g.late_fraction));
    }
    if g.disorder_ms < 0 || g.late_max_ms < 0 || g.play_window_ms < 0 {
        return bad("disorder_ms", "disorder_ms, late_max_ms and play_window_ms must be >= 0".into());
    }
    if !(g.event_time_rate > 0.0 && g.event_time_rate.is_finite()) {
        return bad("event_time_rate", format!("must be > 0, got {}", g.event_time_rate));
    }
    if !(g.rate_limit >= 0.0 && g.rate_limit.is_finite()) {
        return bad("rate_limit", format!("must be >= 0, got {}", g.rate_limit));
    }
    if g.partitions == 0 || g.partitions > GEN_PARTITIONS_MAX {
        return bad("partitions", format!("must be in 1..={GEN_PARTITIONS_MAX}, got {}", g.partitions));
    }
    Ok(g)
}

/// `engine.metrics_addr`: `host:port`, where `host` is an IP address or a name that
/// resolves (the first address is used).
fn resolve_metrics_addr(addr: Option<&str>) -> Result<Option<std::net::SocketAddr>, Invalid> {
    use std::net::ToSocketAddrs;
    let Some(a) = addr else { return Ok(None) };
    let bad =
        |why: String| invalid("engine.metrics_addr", format!("{a:?} {why}: use host:port, e.g. \"127.0.0.1:9464\""));
    if a.trim().is_empty() {
        return Err(bad("is empty".into()));
    }
    match a.to_socket_addrs() {
        Ok(mut it) => it.next().map(Some).ok_or_else(|| bad("resolves to no address".into())),
        Err(e) => Err(bad(format!("is not an address ({e})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[left]
name = "impressions"
format = "csv"
paths = ["data/left.csv"]
key = ["profile_id", "title_id"]
time = "ts"
fields = [ { name = "profile_id", type = "u64" }, { name = "title_id", type = "u32" },
           { name = "ts", type = "i64" }, { name = "row", type = "u32" } ]
[right]
name = "plays"
paths = ["data/right.csv"]
key = ["profile_id", "title_id"]
time = "ts"
fields = [ { name = "profile_id", type = "u64" }, { name = "title_id", type = "u32" },
           { name = "ts", type = "i64" } ]
[join]
kind = "left"
lower_ms = 0
upper_ms = 3600000
max_out_of_orderness_ms = 5000
allowed_lateness_ms = 0
idle_timeout_ms = 10000
[output]
path = "out"
format = "csv"
[engine]
shards = 2
"#;

    fn resolve(text: &str) -> Result<Job, ConfigError> {
        let p = Path::new("job.toml");
        JobConfig::parse(text, p)?.resolve(p, Path::new("/base"))
    }

    #[test]
    fn the_documented_example_resolves() {
        let j = resolve(GOOD).unwrap();
        assert_eq!(j.shards, 2);
        assert_eq!(j.output, OutputTarget::Dir("/base/out".into()));
        assert_eq!(j.left.schema.key, vec![0, 1]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (GOOD.replace("lower_ms = 0", "lower_ms = 5000000"), "join.lower_ms"),
            (GOOD.replace("kind = \"left\"", "kind = \"left\"\ncolour = 1"), "colour"),
            (GOOD.replace("shards = 2", "shards = \"two\""), "shards"),
            (GOOD.replacen("key = [\"profile_id\", \"title_id\"]", "key = [\"nope\"]", 1), "left.key"),
            (
                GOOD.replacen("time = \"ts\"", "time = \"row\"", 1)
                    .replace("type = \"u32\" } ]\n[right]", "type = \"f64\" } ]\n[right]"),
                "left.time",
            ),
            (
                GOOD.replacen("{ name = \"title_id\", type = \"u32\" }", "{ name = \"title_id\", type = \"u64\" }", 1),
                "right.key",
            ),
            (GOOD.replace("shards = 2", "shards = 0"), "engine.shards"),
        ];
        for (text, needle) in cases {
            let e = resolve(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "error `{e}` should name `{needle}`");
        }
    }

    #[test]
    fn builtin_resolves_with_generator() {
        let c = JobConfig::builtin();
        let j = c.resolve(Path::new("<built-in>"), Path::new(".")).unwrap();
        let g = j.generator.unwrap();
        assert_eq!(g.keys, 1_000_000);
        assert_eq!(g.partitions, j.shards);
        assert_eq!(j.output, OutputTarget::None);
    }
}
