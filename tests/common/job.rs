//! A job config as TOML text, built from defaults plus the few values a test cares
//! about, so that each test states only what makes its job different.
//!
//! It only renders text: the keys are weft's user-facing config contract and are
//! spelled here exactly as a user writes them; parsing, defaults and validation stay
//! in `weft::config` (tests that check those write their TOML by hand).
//!
//! Defaults: inputs keyed on `k` with time `ts`; an inner join with
//! `lower_ms = upper_ms = 0`; output to `out`; one unpinned shard (tests run side by
//! side, so none pins cores).

use std::fmt;
use std::path::{Path, PathBuf};

use super::toml_str;

/// `[left]` or `[right]`: files or a generator.
#[derive(Clone, Debug)]
pub struct InputToml {
    name: String,
    format: Option<String>,
    source: Source,
    key: Vec<String>,
    time: String,
    fields: Vec<(String, String)>,
    /// Further keys of a field's inline table, verbatim (`default = "tv"`), by field name.
    attrs: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
enum Source {
    /// TOML string literals of the paths.
    Paths(Vec<String>),
    /// The inside of the `generator = { ... }` inline table.
    Generator(String),
}

impl InputToml {
    /// Files (paths relative to the config's directory, or absolute) with fields
    /// `fields` as (name, type), keyed on `k` with time `ts`, format left to weft's
    /// default (CSV).
    pub fn files<P: AsRef<Path>>(name: &str, paths: &[P], fields: &[(&str, &str)]) -> Self {
        InputToml {
            name: name.to_string(),
            format: None,
            source: Source::Paths(paths.iter().map(|p| toml_str(&p.as_ref().display().to_string())).collect()),
            key: vec!["k".to_string()],
            time: "ts".to_string(),
            fields: fields.iter().map(|&(n, t)| (n.to_string(), t.to_string())).collect(),
            attrs: Vec::new(),
        }
    }

    /// The common tiny input: `k` and `ts`, both `i64`.
    pub fn k_ts<P: AsRef<Path>>(name: &str, paths: &[P]) -> Self {
        Self::files(name, paths, &[("k", "i64"), ("ts", "i64")])
    }

    /// A generator input: `params` is the inside of `generator = { ... }` ("" for
    /// `{}`, i.e. the other input's generator). A generator fixes its own schema, key
    /// and time, so none is written.
    pub fn generator(name: &str, params: &str) -> Self {
        InputToml {
            name: name.to_string(),
            format: None,
            source: Source::Generator(params.to_string()),
            key: Vec::new(),
            time: String::new(),
            fields: Vec::new(),
            attrs: Vec::new(),
        }
    }

    /// `format = "..."` (`csv` or `jsonl`).
    pub fn format(mut self, format: &str) -> Self {
        self.format = Some(format.to_string());
        self
    }

    /// `key = [...]` (default `["k"]`).
    pub fn key(mut self, key: &[&str]) -> Self {
        self.key = key.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Adds `attr` (TOML, e.g. `default = "tv"` or `aliases = ["duration_ms"]`) to the
    /// inline table of field `field`.
    pub fn field_attr(mut self, field: &str, attr: &str) -> Self {
        self.attrs.push((field.to_string(), attr.to_string()));
        self
    }

    fn render(&self, table: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| format!("[{}]", items.join(", "));
        writeln!(f, "[{table}]\nname = {}", toml_str(&self.name))?;
        if let Some(format) = &self.format {
            writeln!(f, "format = {}", toml_str(format))?;
        }
        match &self.source {
            Source::Generator(p) if p.is_empty() => writeln!(f, "generator = {{}}"),
            Source::Generator(p) => writeln!(f, "generator = {{ {p} }}"),
            Source::Paths(paths) => {
                let key: Vec<String> = self.key.iter().map(|k| toml_str(k)).collect();
                let fields: Vec<String> = self
                    .fields
                    .iter()
                    .map(|(n, t)| {
                        let more: String =
                            self.attrs.iter().filter(|(a, _)| a == n).map(|(_, v)| format!(", {v}")).collect();
                        format!("{{ name = {}, type = {}{more} }}", toml_str(n), toml_str(t))
                    })
                    .collect();
                writeln!(f, "paths = {}\nkey = {}", list(paths), list(&key))?;
                writeln!(f, "time = {}\nfields = {}", toml_str(&self.time), list(&fields))
            }
        }
    }
}

/// A whole job: `[left]`, `[right]`, `[join]`, `[output]`, `[engine]`.
#[derive(Clone, Debug)]
pub struct JobToml {
    left: InputToml,
    right: InputToml,
    kind: String,
    lower_ms: i64,
    upper_ms: i64,
    max_out_of_orderness_ms: Option<i64>,
    allowed_lateness_ms: Option<i64>,
    idle_timeout_ms: Option<i64>,
    output_path: String,
    output_format: Option<String>,
    shards: u32,
    /// Further `[engine]` lines, verbatim.
    engine_lines: Vec<String>,
}

impl JobToml {
    pub fn new(left: InputToml, right: InputToml) -> Self {
        JobToml {
            left,
            right,
            kind: "inner".to_string(),
            lower_ms: 0,
            upper_ms: 0,
            max_out_of_orderness_ms: None,
            allowed_lateness_ms: None,
            idle_timeout_ms: None,
            output_path: "out".to_string(),
            output_format: None,
            shards: 1,
            engine_lines: Vec::new(),
        }
    }

    /// The built-in workload: `impressions` from a generator with `params` (the
    /// inside of `generator = { ... }`), `plays` from the same generator.
    pub fn generated(params: &str) -> Self {
        Self::new(InputToml::generator("impressions", params), InputToml::generator("plays", ""))
    }

    /// Both inputs `k_ts`, from `l_paths` and `r_paths`, named `l` and `r`.
    pub fn k_ts<P: AsRef<Path>>(l_paths: &[P], r_paths: &[P]) -> Self {
        Self::new(InputToml::k_ts("l", l_paths), InputToml::k_ts("r", r_paths))
    }

    /// `join.kind` (default `inner`).
    pub fn kind(mut self, kind: &str) -> Self {
        self.kind = kind.to_string();
        self
    }

    /// `join.lower_ms` and `join.upper_ms` (default 0 and 0).
    pub fn window(mut self, lower_ms: i64, upper_ms: i64) -> Self {
        self.lower_ms = lower_ms;
        self.upper_ms = upper_ms;
        self
    }

    /// `join.max_out_of_orderness_ms` (default: not written).
    pub fn max_out_of_orderness_ms(mut self, ms: i64) -> Self {
        self.max_out_of_orderness_ms = Some(ms);
        self
    }

    /// `join.allowed_lateness_ms` (default: not written).
    pub fn allowed_lateness_ms(mut self, ms: i64) -> Self {
        self.allowed_lateness_ms = Some(ms);
        self
    }

    /// `join.idle_timeout_ms` (default: not written).
    pub fn idle_timeout_ms(mut self, ms: i64) -> Self {
        self.idle_timeout_ms = Some(ms);
        self
    }

    /// `output.path` (default `out`).
    pub fn output(mut self, path: &str) -> Self {
        self.output_path = path.to_string();
        self
    }

    /// `output.format` (default: not written).
    pub fn output_format(mut self, format: &str) -> Self {
        self.output_format = Some(format.to_string());
        self
    }

    /// `engine.shards` (default 1).
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// Appends `lines` (one or more `key = value` lines, or "") to `[engine]`
    /// verbatim, e.g. `"state_bucket_ms = 5"`.
    pub fn engine(mut self, lines: &str) -> Self {
        if !lines.is_empty() {
            self.engine_lines.push(lines.trim_end_matches('\n').to_string());
        }
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        self.to_string()
    }

    /// Writes the TOML text to `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        super::write(dir, name, self.render())
    }
}

impl fmt::Display for JobToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.left.render("left", f)?;
        self.right.render("right", f)?;
        writeln!(f, "[join]\nkind = {}", toml_str(&self.kind))?;
        writeln!(f, "lower_ms = {}\nupper_ms = {}", self.lower_ms, self.upper_ms)?;
        for (key, ms) in [
            ("max_out_of_orderness_ms", self.max_out_of_orderness_ms),
            ("allowed_lateness_ms", self.allowed_lateness_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if let Some(ms) = ms {
                writeln!(f, "{key} = {ms}")?;
            }
        }
        writeln!(f, "[output]\npath = {}", toml_str(&self.output_path))?;
        if let Some(format) = &self.output_format {
            writeln!(f, "format = {}", toml_str(format))?;
        }
        writeln!(f, "[engine]\nshards = {}\npin_cores = false", self.shards)?;
        for lines in &self.engine_lines {
            writeln!(f, "{lines}")?;
        }
        Ok(())
    }
}
