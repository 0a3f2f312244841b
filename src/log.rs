//! weft's logs: `tracing` events, written to stderr by the subscriber [`init`] sets up.
//!
//! Two formats. `text` (the default) is for a person: one line per event, the message
//! after `warning: `, `error: ` or `debug: ` (an info line is the message alone), the
//! way weft always spoke. `json` is for journald, Loki and scripts: one JSON object per
//! line with `timestamp`, `level`, `target`, `message` and the event's fields (the
//! shard, checkpoint, file... that the message names). Every warning's message says
//! what happened, where, and what weft did about it; its fields repeat the "where"
//! for machines.
//!
//! The level comes from `--log-level` when given, else `RUST_LOG` (any
//! `tracing_subscriber::EnvFilter` directive, e.g. `weft=debug`), else `info`.
//!
//! Writing a log line never fails the job: with SIGHUP ignored, a closed terminal
//! turns stderr writes into EIO, and the writer here drops them ([`Stderr`]) instead
//! of panicking as `eprintln!` would.

use std::io::Write;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Sets the process's subscriber. `level` is `--log-level` (`error`, `warn`, `info`,
/// `debug`, `trace`, or a filter directive); an invalid one is an error naming it.
pub fn init(level: Option<&str>, format: LogFormat) -> Result<(), String> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l)
            .map_err(|e| format!("--log-level {l:?}: {e} (use error, warn, info, debug or trace)"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
                .map_err(|e| format!("RUST_LOG={v:?}: {e} (use error, warn, info, debug or trace)"))?,
            _ => EnvFilter::new("info"),
        },
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Stderr).log_internal_errors(false);
    let done = match format {
        LogFormat::Text => builder.event_format(Plain).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    // A second init (tests run several commands in one process) keeps the first.
    let _ = done;
    Ok(())
}

/// stderr, dropping what cannot be written (see the module's last paragraph).
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// The `text` format: `warning: <message>` (see the module docs). Fields other than
/// the message are left to the JSON format: the message already says them.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let prefix = match *event.metadata().level() {
            Level::ERROR => "error: ",
            Level::WARN => "warning: ",
            Level::INFO => "",
            Level::DEBUG => "debug: ",
            Level::TRACE => "trace: ",
        };
        let mut message = MessageOnly(String::new());
        event.record(&mut message);
        writeln!(w, "{prefix}{}", message.0)
    }
}

/// Keeps the `message` field of an event.
struct MessageOnly(String);

impl tracing::field::Visit for MessageOnly {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write as _;
            let _ = write!(self.0, "{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        }
    }
}

/// librdkafka's log lines and global errors (a client's context), into weft's log.
/// `what` names the client in every line: its topic, partition or role.
pub struct KafkaLog {
    pub what: String,
}

impl rdkafka::ClientContext for KafkaLog {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, msg: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => tracing::error!("kafka {}: {fac}: {msg}", self.what),
            L::Warning => tracing::warn!("kafka {}: {fac}: {msg}", self.what),
            _ => tracing::debug!("kafka {}: {fac}: {msg}", self.what),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!("kafka {}: {error}: {reason} (retrying)", self.what);
    }
}

impl rdkafka::consumer::ConsumerContext for KafkaLog {}

/// Deliveries are not watched one by one: a failed delivery fails the transaction
/// that holds it, which the Kafka sink retries.
impl rdkafka::producer::ProducerContext for KafkaLog {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
