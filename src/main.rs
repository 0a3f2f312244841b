//! The `weft` command line. `anyhow` is used only here, at the edge.
#![deny(clippy::undocumented_unsafe_blocks)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use weft::config::{Format, JobConfig, JoinKind};
use weft::engine::{self, RunOptions};
use weft::metrics::live::Live;

#[global_allocator]
static ALLOC: weft::alloc::HugeHintAlloc = weft::alloc::HugeHintAlloc;

#[derive(Parser)]
#[command(name = "weft", version, about = "Thread-per-core streaming interval join")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Log level: error, warn, info (default), debug, trace, or a filter such as
    /// `weft=debug`. Without it, RUST_LOG is read.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Log lines as human text (default) or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormatArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a join job (with no --config: the built-in generator workload).
    Run(RunArgs),
    /// The same join as a batch job over whole inputs (the validation oracle).
    Batch(BatchArgs),
    /// Compare a streaming job's committed output with the batch answer (--config and
    /// --output), or two output directories (--expected and --actual). Exit status 0
    /// when equal, 1 when not, 2 on error.
    Validate(ValidateArgs),
    /// Inspect a checkpoint directory: `list` reads the manifests, `verify` also checks
    /// every state file's size and checksum (exit 1 if any checkpoint is invalid).
    Checkpoints(CheckpointsArgs),
    /// What a checkpoint directory (or a state directory) holds: checkpoints with
    /// their watermarks, source positions, job shape and state per shard and side, and
    /// whether each verifies; arena files of a state directory. Read-only. Exit status
    /// 0 when everything verifies, 1 when something does not, 2 on error.
    Inspect(InspectArgs),
    /// Write the generator's two streams as files plus a job.toml to replay them.
    Gen(GenArgs),
    /// Schema evolution: `check` says what a restart of the job in --config would do
    /// with the newest checkpoint, per input and field (compatible as is, migrated
    /// how, incompatible why). Read-only. Exit status 0 when a restart would resume, 1
    /// when it would be refused, 2 on error.
    Schema(SchemaArgs),
}

#[derive(clap::Args)]
struct SchemaArgs {
    #[command(subcommand)]
    action: SchemaAction,
}

#[derive(Subcommand)]
enum SchemaAction {
    /// Judge the (changed) job against the newest usable checkpoint.
    Check {
        /// The job file as it will be restarted.
        #[arg(long)]
        config: PathBuf,
        /// The checkpoint directory; default: the job's engine.checkpoint_dir.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// Events (impressions + plays) for a generator input.
    #[arg(long)]
    events: Option<u64>,
    /// Override engine.shards.
    #[arg(long)]
    shards: Option<u32>,
    /// Write the final report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Make the first malformed input row fatal.
    #[arg(long)]
    strict: bool,
    /// Replace the output of an earlier run in the output directory.
    #[arg(long)]
    force: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Override engine.state_dir: keep join state in mmap'd arena files there.
    #[arg(long)]
    state_dir: Option<String>,
    /// Override engine.state_memory_mb.
    #[arg(long)]
    state_memory_mb: Option<u64>,
}

#[derive(clap::Args)]
struct BatchArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    output: PathBuf,
    /// Replace weft's files in an output directory that already holds some.
    #[arg(long)]
    force: bool,
    /// Worker threads (default: CPUs available).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ValidateArgs {
    #[arg(long, requires = "output", conflicts_with_all = ["expected", "actual"])]
    config: Option<PathBuf>,
    #[arg(long)]
    output: Option<PathBuf>,
    #[arg(long, requires = "actual")]
    expected: Option<PathBuf>,
    #[arg(long, requires = "expected")]
    actual: Option<PathBuf>,
    /// Differing rows shown per kind.
    #[arg(long, default_value_t = 10)]
    show: usize,
    /// Output format of the directories compared with --expected/--actual.
    #[arg(long, value_enum, default_value = "csv")]
    format: FormatArg,
    /// Write the report as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CheckpointsArgs {
    #[arg(value_enum)]
    action: CheckpointsAction,
    dir: PathBuf,
}

#[derive(clap::Args)]
struct InspectArgs {
    dir: PathBuf,
    /// Print one JSON document (the same report) instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct GenArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = weft::config::GEN_CLI_EVENTS_DEFAULT)]
    events: u64,
    #[arg(long, value_enum, default_value = "csv")]
    format: FormatArg,
    #[arg(long, default_value_t = weft::config::GEN_SEED_DEFAULT)]
    seed: u64,
    #[arg(long, default_value_t = weft::config::GEN_CLI_KEYS_DEFAULT)]
    keys: u64,
    #[arg(long, default_value_t = weft::config::GEN_TITLES_DEFAULT)]
    titles: u32,
    #[arg(long, default_value_t = weft::config::GEN_ZIPF_DEFAULT)]
    zipf: f64,
    #[arg(long, default_value_t = weft::config::GEN_MATCH_RATE_DEFAULT)]
    match_rate: f64,
    #[arg(long, default_value_t = weft::config::GEN_DISORDER_MS_DEFAULT)]
    disorder_ms: i64,
    #[arg(long, default_value_t = weft::config::GEN_LATE_FRACTION_DEFAULT)]
    late_fraction: f64,
    #[arg(long, default_value_t = weft::config::GEN_LATE_MAX_MS_DEFAULT)]
    late_max_ms: i64,
    #[arg(long, default_value_t = weft::config::GEN_EVENT_TIME_RATE_DEFAULT)]
    event_time_rate: f64,
    /// Files per input.
    #[arg(long, default_value_t = weft::config::GEN_CLI_PARTITIONS_DEFAULT)]
    partitions: u32,
    /// Join kind written into job.toml.
    #[arg(long, value_enum, default_value = "left")]
    kind: KindArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CheckpointsAction {
    List,
    Verify,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum KindArg {
    Inner,
    Left,
    Right,
    Full,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Csv => Format::Csv,
            FormatArg::Jsonl => Format::Jsonl,
        }
    }
}

impl From<KindArg> for JoinKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Inner => JoinKind::Inner,
            KindArg::Left => JoinKind::Left,
            KindArg::Right => JoinKind::Right,
            KindArg::Full => JoinKind::Full,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => weft::log::LogFormat::Text,
        LogFormatArg::Json => weft::log::LogFormat::Json,
    };
    if let Err(e) = weft::log::init(cli.log_level.as_deref(), format) {
        // No logger yet: this one line goes to stderr as it is.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "error: {e}");
        return ExitCode::from(2);
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            // Our error types print their cause inline; skip a cause the message above
            // it already contains, so nothing is said twice.
            let mut msg = String::new();
            let mut prev = String::new();
            for cause in e.chain() {
                let text = cause.to_string();
                if !prev.contains(&text) {
                    if !msg.is_empty() {
                        msg += ": ";
                    }
                    msg += &text;
                }
                prev = text;
            }
            tracing::error!("{msg}");
            ExitCode::from(2)
        }
    }
}

fn load(config: Option<&Path>) -> Result<(JobConfig, PathBuf, PathBuf)> {
    Ok(match config {
        Some(p) => {
            let cfg = JobConfig::load(p)?;
            let base = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
            (cfg, p.to_path_buf(), base)
        }
        None => (JobConfig::builtin(), PathBuf::from("<built-in workload>"), PathBuf::from(".")),
    })
}

fn real_main(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::Batch(args) => batch(args),
        Cmd::Validate(args) => validate(args),
        Cmd::Checkpoints(args) => checkpoints(args),
        Cmd::Inspect(args) => inspect(args),
        Cmd::Gen(args) => gen_files(args),
        Cmd::Schema(args) => schema(args),
    }
}

/// Writes a command's report as pretty JSON.
fn write_report(path: &Path, report: &impl serde::Serialize) -> Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json + "\n").with_context(|| format!("cannot write report {}", path.display()))
}

/// `weft run`: the command-line overrides on top of the job file, then the engine.
fn run(args: RunArgs) -> Result<ExitCode> {
    let (mut cfg, path, base) = load(args.config.as_deref())?;
    apply_run_overrides(&mut cfg, &args, &path)?;
    for w in cfg.warnings() {
        tracing::warn!(config = %path.display(), "{w}");
    }
    let job = cfg.resolve(&path, &base)?;
    weft::sys::check_io_uring().map_err(anyhow::Error::msg)?;
    weft::sys::install_stop_handlers();
    let live = match job.metrics_addr {
        Some(addr) => {
            let live = std::sync::Arc::new(Live::new(
                [job.left.schema.name.clone(), job.right.schema.name.clone()],
                job.shards as usize,
                if job.state_dir.is_some() { job.state_memory_mb.saturating_mul(1 << 20) } else { 0 },
                job.ring_slots as u64,
            ));
            let bound = weft::metrics::server::start(addr, live.clone())?;
            tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
            Some(live)
        }
        None => None,
    };
    let options = RunOptions {
        strict: args.strict,
        force: args.force,
        progress: !args.quiet,
        // Diagnostics knobs, read once here and passed down.
        debug_checkpoints: std::env::var_os("WEFT_DEBUG_CHECKPOINTS").is_some(),
        preempt_us: std::env::var("WEFT_PREEMPT_US").ok().and_then(|v| v.parse().ok()),
        live,
    };
    let rep = match engine::run(&job, &options) {
        Err(e @ engine::EngineError::AlreadyFinished { .. }) => {
            tracing::info!("{e}");
            return Ok(ExitCode::SUCCESS);
        }
        r => r.with_context(|| format!("job {} failed", path.display()))?,
    };
    let table = rep.table();
    // The report is the command's result; a closed terminal must not turn it into a panic.
    use std::io::Write;
    if job.output == weft::config::OutputTarget::Stdout {
        let _ = std::io::stderr().write_all(table.as_bytes());
    } else {
        let _ = std::io::stdout().write_all(table.as_bytes());
    }
    if let Some(r) = &args.report {
        write_report(r, &rep)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `--state-dir`, `--state-memory-mb`, `--events` and `--shards` over the job file's values.
fn apply_run_overrides(cfg: &mut JobConfig, args: &RunArgs, path: &Path) -> Result<()> {
    if let Some(d) = &args.state_dir {
        // Relative to the working directory, like every path given on the command line.
        let abs = std::env::current_dir()?.join(d);
        cfg.engine.state_dir = Some(abs.display().to_string());
    }
    if args.state_memory_mb.is_some() {
        cfg.engine.state_memory_mb = args.state_memory_mb;
    }
    if let Some(n) = args.events {
        match (&mut cfg.left.generator, &mut cfg.right.generator) {
            (Some(l), Some(r)) => {
                l.events = Some(n);
                r.events = None;
            }
            _ => anyhow::bail!("--events applies to generator inputs; {} reads files", path.display()),
        }
    }
    if let Some(s) = args.shards {
        cfg.engine.shards = Some(s);
        if let (Some(l), Some(r)) = (&mut cfg.left.generator, &mut cfg.right.generator) {
            // One generator partition per shard unless the config fixed it.
            if l.partitions.is_none() && r.partitions.is_none() {
                l.partitions = Some(s);
            }
        }
    }
    Ok(())
}

/// `weft batch`: the oracle over whole inputs.
fn batch(args: BatchArgs) -> Result<ExitCode> {
    let (cfg, path, base) = load(Some(&args.config))?;
    let job = cfg.resolve(&path, &base)?;
    let threads = args.threads.unwrap_or_else(|| weft::config::available_cpus() as usize).max(1);
    // As `weft run` does: no input inside the output (--force removes files
    // there), and one writer per output directory, held until the job ends.
    let fail = || format!("batch job {} failed", path.display());
    job.check_inputs_outside(&[("output directory", args.output.as_path())]).with_context(fail)?;
    let _lock = weft::sys::lock_dir(&args.output).with_context(fail)?;
    let rep = weft::oracle::batch::run(&job, &args.output, args.force, threads).with_context(fail)?;
    rep.print();
    if let Some(r) = &args.report {
        write_report(r, &rep)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `weft validate`: a job's output against the batch answer, or two directories.
fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let rep = match (args.config, args.output, args.expected, args.actual) {
        (Some(config), Some(output), None, None) => {
            let (cfg, path, base) = load(Some(&config))?;
            let job = cfg.resolve(&path, &base)?;
            weft::oracle::diff::validate_job(&job, &output, args.show)?
        }
        (None, None, Some(e), Some(a)) => {
            weft::oracle::diff::compare_dirs(&e, &a, args.format.into(), args.show, 1 << 30)?
        }
        _ => anyhow::bail!("give either --config FILE --output DIR, or --expected DIR --actual DIR"),
    };
    rep.print();
    if let Some(r) = &args.report {
        write_report(r, &rep)?;
    }
    Ok(if rep.is_equal() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `weft checkpoints list|verify DIR`.
fn checkpoints(args: CheckpointsArgs) -> Result<ExitCode> {
    let dir = &args.dir;
    if !dir.is_dir() {
        anyhow::bail!("checkpoint directory {} does not exist (or is not a directory)", dir.display());
    }
    let (text, ok) = weft::checkpoint::describe(dir, matches!(args.action, CheckpointsAction::Verify))?;
    print!("{text}");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `weft inspect DIR [--json]`: never writes or locks anything in DIR.
fn inspect(args: InspectArgs) -> Result<ExitCode> {
    let report = weft::checkpoint::inspect::inspect(&args.dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `weft schema check`: never writes or locks anything.
fn schema(args: SchemaArgs) -> Result<ExitCode> {
    let SchemaAction::Check { config, checkpoint } = args.action;
    let (cfg, path, base) = load(Some(&config))?;
    let mut job = cfg.resolve(&path, &base)?;
    // Kafka inputs: their partitions are part of the job's shape.
    weft::source::kafka::resolve(&mut job)?;
    let dir = match (checkpoint, &job.checkpoint) {
        (Some(d), _) => d,
        (None, Some(ck)) => ck.dir.clone(),
        (None, None) => anyhow::bail!(
            "{}: the job has no engine.checkpoint_dir; name the checkpoint directory with --checkpoint DIR",
            path.display()
        ),
    };
    let verdict = weft::checkpoint::compat::check(&job, &dir, |w| tracing::warn!(dir = %dir.display(), "{w}"))?;
    print!("{}", verdict.render(&dir));
    Ok(if verdict.compatible() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `weft gen`: the generator's streams as files, with a job.toml that replays them.
fn gen_files(args: GenArgs) -> Result<ExitCode> {
    let mut cfg = JobConfig::builtin();
    let g = cfg.left.generator.as_mut().expect("the built-in job reads a generator");
    g.seed = Some(args.seed);
    g.events = Some(args.events);
    g.keys = Some(args.keys);
    g.titles = Some(args.titles);
    g.zipf = Some(args.zipf);
    g.match_rate = Some(args.match_rate);
    g.disorder_ms = Some(args.disorder_ms);
    g.late_fraction = Some(args.late_fraction);
    g.late_max_ms = Some(args.late_max_ms);
    g.event_time_rate = Some(args.event_time_rate);
    g.partitions = Some(args.partitions);
    cfg.join.max_out_of_orderness_ms = args.disorder_ms;
    cfg.join.kind = args.kind.into();
    let job = cfg.resolve(Path::new("<gen>"), Path::new("."))?;
    let params = job.generator.clone().expect("generator job");
    let (path, counts) = weft::loadgen::write(&args.out, &params, args.format.into(), cfg)?;
    println!(
        "wrote {} impressions and {} plays in {} partitions; job: {}",
        counts[0],
        counts[1],
        args.partitions,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
