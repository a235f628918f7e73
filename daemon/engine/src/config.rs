//! Configuration: `/etc/kiln/kiln.toml` plus drop-ins in `kiln.toml.d/*.toml`
//! (lexical order, later wins), then command-line overrides. Every key has a
//! default, so a file holds only what it changes. Each file is checked on its
//! own first, so an error names the file, the key, the bad value and what is
//! expected. Reads files only; applies nothing.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the packaged daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/kiln/kiln.toml";

pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];

/// The largest `daemon.max_message_bytes` accepted: a request is held whole in memory (and
/// the transport allows twice the limit before refusing), so one client must not be able to
/// ask for more.
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub dbus: DbusConfig,
    pub metrics: MetricsConfig,
    pub auth: AuthConfig,
    pub hal: HalConfig,
    /// The UMA budget rule (see kiln_hal::BudgetPolicy).
    pub budget: kiln_hal::BudgetPolicy,
    pub admission: AdmissionConfig,
    /// Datasets for models, embeddings, checkpoints and logs (see kiln_storage).
    pub storage: kiln_hal::ports::storage::StorageConfig,
    /// The model repository and how models are loaded.
    pub models: ModelsConfig,
    /// Where the OpenVINO runtime comes from.
    pub openvino: OpenvinoConfig,
    /// Job supervision: launcher, grace period, battery policy.
    pub jobs: JobsConfig,
    /// Vector collections: search threads, compaction, the default embedding model.
    pub vectors: VectorsConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// `<repository>/<name>/<version>/` holds the models; unset: no models served.
    pub repository: Option<PathBuf>,
    /// `explicit` (load/unload calls only) or `poll` (new version folders are picked up).
    pub control: String,
    /// How often the repository is re-scanned with control = "poll", in milliseconds.
    pub poll_interval_ms: u64,
    /// `latest`, `latest:N`, `all` or `specific:1,3`; a model's kiln-model.toml may override.
    pub version_policy: String,
    /// Load every valid model of the repository at start (kiln-model.toml may opt out).
    pub load_at_start: bool,
    /// Inference precision of models whose kiln-model.toml sets none: `f32` (exact, the
    /// default), `bf16`, `f16` or `auto` (what the device prefers).
    pub precision: crate::models::repo::PrecisionSetting,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            repository: None,
            control: "explicit".into(),
            poll_interval_ms: 5000,
            version_policy: "latest:1".into(),
            load_at_start: true,
            precision: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OpenvinoConfig {
    /// `libopenvino_c.so*` or a directory holding it; when set, nothing else is searched.
    pub library: Option<PathBuf>,
    /// Python prefixes or venvs searched for the pip wheel before the built-in ones.
    pub python_prefixes: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HalConfig {
    /// Where the machine is read from: `/`, or a recorded machine tree.
    pub root: PathBuf,
    /// How often utilisation is sampled and devices rescanned, in milliseconds.
    pub sample_interval_ms: u64,
}

impl Default for HalConfig {
    fn default() -> Self {
        HalConfig {
            root: PathBuf::from("/"),
            sample_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// New reservations are refused while PSI memory `some avg10` exceeds this (percent).
    pub max_memory_pressure: f64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_memory_pressure: 20.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// gRPC Unix socket.
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660); skipped with a warning if absent.
    pub socket_group: String,
    /// SQLite state and the instance lock.
    pub state_dir: PathBuf,
    /// error | warn | info | debug | trace, or a tracing filter such as `info,kilnd=debug`.
    pub log_level: String,
    /// How long SIGTERM waits for in-flight calls before closing them.
    pub drain_timeout_ms: u64,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 streams (calls) one gRPC connection may have open at once; a client queues or
    /// is refused beyond it, so one connection cannot hold unbounded server state.
    pub max_concurrent_streams: u32,
    /// gRPC connections one uid may hold open at once. Calls on connections beyond it are
    /// refused with RESOURCE_EXHAUSTED; beyond twice it, connections are closed at once.
    pub max_connections_per_uid: u32,
    /// Longest a gRPC call may take to answer (a client's shorter `grpc-timeout` wins);
    /// streams are bounded by their own messages, not by this.
    pub request_timeout_ms: u64,
    /// Audit rows and finished jobs older than this many days are deleted (at start and
    /// daily); 0 keeps them forever.
    pub history_days: u32,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: PathBuf::from("/run/kiln/kiln.sock"),
            socket_group: "kiln".into(),
            state_dir: PathBuf::from("/var/lib/kiln"),
            log_level: "info".into(),
            drain_timeout_ms: 5000,
            max_message_bytes: 64 * 1024 * 1024,
            max_concurrent_streams: 128,
            max_connections_per_uid: 64,
            request_timeout_ms: 600_000,
            history_days: 90,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DbusConfig {
    /// `system`, `session`, `none`, or a D-Bus address such as `unix:path=/run/x`.
    pub bus: String,
}

impl Default for DbusConfig {
    fn default() -> Self {
        DbusConfig {
            bus: "system".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Empty: off. `unix:/path/to/metrics.sock` or a loopback `127.0.0.1:9464`.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `polkit` asks polkit per call (needs the system bus); `group` allows
    /// root, the daemon's own user and members of `group`.
    pub backend: String,
    pub group: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            backend: "polkit".into(),
            group: "kiln".into(),
        }
    }
}

/// Where metrics are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

/// Which bus the D-Bus service joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Session,
    None,
    Address(String),
}

impl BusChoice {
    pub fn parse(s: &str) -> Result<BusChoice, String> {
        match s {
            "system" => Ok(BusChoice::System),
            "session" => Ok(BusChoice::Session),
            "none" => Ok(BusChoice::None),
            a if a.contains(':') && a.contains('=') => Ok(BusChoice::Address(a.to_string())),
            other => Err(format!(
                "bad value {other:?}; expected system, session, none or a D-Bus address like unix:path=/run/dbus/system_bus_socket"
            )),
        }
    }
}

impl Config {
    /// Semantic checks that serde cannot express. Messages name the key, the
    /// value and what is expected.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let level = self.daemon.log_level.trim();
        let first = level.split(',').next().unwrap_or("");
        if level.is_empty() || (!LOG_LEVELS.contains(&first) && !first.contains('=')) {
            errs.push(format!(
                "key `daemon.log_level`: bad value {:?}; expected one of {} (optionally followed by ,target=level filters)",
                self.daemon.log_level,
                LOG_LEVELS.join(", ")
            ));
        }
        if self.daemon.socket.as_os_str().is_empty() {
            errs.push(
                "key `daemon.socket`: empty; expected a path such as /run/kiln/kiln.sock".into(),
            );
        }
        if self.daemon.state_dir.as_os_str().is_empty() {
            errs.push(
                "key `daemon.state_dir`: empty; expected a directory such as /var/lib/kiln".into(),
            );
        }
        if !(4096..=MAX_MESSAGE_BYTES_LIMIT).contains(&self.daemon.max_message_bytes) {
            errs.push(format!(
                "key `daemon.max_message_bytes`: bad value {}; expected 4096 to {MAX_MESSAGE_BYTES_LIMIT} bytes (1 GiB)",
                self.daemon.max_message_bytes
            ));
        }
        if self.daemon.history_days > 36_500 {
            errs.push(format!(
                "key `daemon.history_days`: bad value {}; expected 0 (keep forever) to 36500",
                self.daemon.history_days
            ));
        }
        if !(1..=65_536).contains(&self.daemon.max_concurrent_streams) {
            errs.push(format!(
                "key `daemon.max_concurrent_streams`: bad value {}; expected 1 to 65536",
                self.daemon.max_concurrent_streams
            ));
        }
        if !(1..=65_536).contains(&self.daemon.max_connections_per_uid) {
            errs.push(format!(
                "key `daemon.max_connections_per_uid`: bad value {}; expected 1 to 65536",
                self.daemon.max_connections_per_uid
            ));
        }
        if !(1000..=86_400_000).contains(&self.daemon.request_timeout_ms) {
            errs.push(format!(
                "key `daemon.request_timeout_ms`: bad value {}; expected 1000 (1 s) to 86400000 (a day)",
                self.daemon.request_timeout_ms
            ));
        }
        if self.daemon.drain_timeout_ms > 600_000 {
            errs.push(format!(
                "key `daemon.drain_timeout_ms`: bad value {}; expected at most 600000 (10 minutes)",
                self.daemon.drain_timeout_ms
            ));
        }
        if let Err(e) = BusChoice::parse(&self.dbus.bus) {
            errs.push(format!("key `dbus.bus`: {e}"));
        }
        if let Err(e) = self.metrics_listen() {
            errs.push(format!("key `metrics.listen`: {e}"));
        }
        if !["polkit", "group"].contains(&self.auth.backend.as_str()) {
            errs.push(format!(
                "key `auth.backend`: bad value {:?}; expected polkit or group",
                self.auth.backend
            ));
        }
        if self.hal.root.as_os_str().is_empty() {
            errs.push(
                "key `hal.root`: empty; expected / or the path of a recorded machine tree".into(),
            );
        }
        if !(10..=3_600_000).contains(&self.hal.sample_interval_ms) {
            errs.push(format!(
                "key `hal.sample_interval_ms`: bad value {}; expected 10 to 3600000",
                self.hal.sample_interval_ms
            ));
        }
        if !["explicit", "poll"].contains(&self.models.control.as_str()) {
            errs.push(format!(
                "key `models.control`: bad value {:?}; expected explicit or poll",
                self.models.control
            ));
        }
        if !(100..=86_400_000).contains(&self.models.poll_interval_ms) {
            errs.push(format!(
                "key `models.poll_interval_ms`: bad value {}; expected 100 to 86400000",
                self.models.poll_interval_ms
            ));
        }
        if let Err(e) = crate::models::repo::VersionPolicy::parse(&self.models.version_policy) {
            errs.push(format!("key `models.version_policy`: {e}"));
        }
        if self
            .models
            .repository
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            errs.push("key `models.repository`: empty; expected a directory or no key".into());
        }
        if let Err(e) = self.storage.validate() {
            errs.push(format!("table `storage`: {e}"));
        }
        if let Err(e) = self.jobs.validate() {
            errs.push(e);
        }
        if let Err(e) = self.vectors.validate() {
            errs.extend(e);
        }
        if let Err(e) = self.budget.validate() {
            errs.push(format!("table `budget`: {e}"));
        }
        let p = self.admission.max_memory_pressure;
        if !(p > 0.0 && p <= 100.0) {
            errs.push(format!(
                "key `admission.max_memory_pressure`: bad value {p}; expected a percentage in (0, 100]"
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    pub fn bus(&self) -> BusChoice {
        BusChoice::parse(&self.dbus.bus).unwrap_or(BusChoice::None)
    }

    pub fn metrics_listen(&self) -> Result<MetricsListen, String> {
        let l = self.metrics.listen.trim();
        if l.is_empty() {
            return Ok(MetricsListen::Off);
        }
        if let Some(p) = l.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("bad value \"unix:\"; expected unix:/path/to/metrics.sock".into());
            }
            return Ok(MetricsListen::Unix(PathBuf::from(p)));
        }
        match l.parse::<std::net::SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Ok(MetricsListen::Tcp(a)),
            Ok(a) => Err(format!(
                "bad value {l:?}: {} is not a loopback address; metrics are served on loopback only (use 127.0.0.1:{} or unix:/path)",
                a.ip(),
                a.port()
            )),
            Err(_) => Err(format!(
                "bad value {l:?}; expected empty (off), unix:/path/to/metrics.sock or 127.0.0.1:PORT"
            )),
        }
    }
}

/// Command-line overrides, applied on top of the files on every load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub bus: Option<String>,
    pub log_level: Option<String>,
    pub hal_root: Option<PathBuf>,
    pub model_repository: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, c: &mut Config) {
        if let Some(s) = &self.socket {
            c.daemon.socket = s.clone();
        }
        if let Some(s) = &self.state_dir {
            c.daemon.state_dir = s.clone();
        }
        if let Some(b) = &self.bus {
            c.dbus.bus = b.clone();
        }
        if let Some(l) = &self.log_level {
            c.daemon.log_level = l.clone();
        }
        if let Some(r) = &self.hal_root {
            c.hal.root = r.clone();
        }
        if let Some(r) = &self.model_repository {
            c.models.repository = Some(r.clone());
        }
    }
}

/// Where configuration comes from; kept so that a reload reads the same places.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSources {
    pub main: PathBuf,
    /// `--config` was given: the file must exist.
    pub explicit: bool,
    pub overrides: Overrides,
}

impl ConfigSources {
    pub fn new(config: Option<PathBuf>, overrides: Overrides) -> Self {
        match config {
            Some(p) => ConfigSources {
                main: p,
                explicit: true,
                overrides,
            },
            None => ConfigSources {
                main: PathBuf::from(DEFAULT_CONFIG),
                explicit: false,
                overrides,
            },
        }
    }

    /// `<main>.d/`, e.g. `/etc/kiln/kiln.toml.d`.
    pub fn dropin_dir(&self) -> PathBuf {
        let mut s = self.main.as_os_str().to_owned();
        s.push(".d");
        PathBuf::from(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: Config,
    /// The files that were read, in order.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match &self.file {
            Some(p) => format!("{}: ", p.display()),
            None => "command line: ".to_string(),
        };
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{prefix}{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn file_err(file: &Path, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        file: Some(file.to_path_buf()),
        problems: vec![problem.into()],
    }
}

/// Parse one file, check it alone (so errors name it) and return its table.
fn read_file(path: &Path, base: &Path) -> Result<toml::Table, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let mut partial: Config = toml::from_str(&text)
        .map_err(|e: toml::de::Error| file_err(path, describe_toml_error(&text, &e)))?;
    resolve_relative(&mut partial, base);
    partial.validate().map_err(|problems| ConfigError {
        file: Some(path.to_path_buf()),
        problems,
    })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(path, describe_toml_error(&text, &e)))?;
    Ok(table)
}

/// One line: `line L: <message>`, with the offending text when there is a span.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let snippet = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line} (`{snippet}`): {msg}")
        }
        None => msg,
    }
}

/// Later tables win key by key; nested tables merge.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Relative paths in the files resolve against the main file's directory.
fn resolve_relative(c: &mut Config, base: &Path) {
    for p in [
        &mut c.daemon.socket,
        &mut c.daemon.state_dir,
        &mut c.hal.root,
        &mut c.storage.root,
        &mut c.storage.proc_root,
    ] {
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = base.join(&*p);
        }
    }
    let optional = [&mut c.models.repository, &mut c.openvino.library];
    for p in optional
        .into_iter()
        .flatten()
        .chain(c.openvino.python_prefixes.iter_mut())
    {
        if p.is_relative() && !p.as_os_str().is_empty() {
            *p = base.join(&*p);
        }
    }
    if let Some(rest) = c.metrics.listen.strip_prefix("unix:") {
        let p = Path::new(rest);
        if p.is_relative() && !rest.is_empty() {
            c.metrics.listen = format!("unix:{}", base.join(p).display());
        }
    }
}

/// Load the main file (if present or required), the drop-ins, then overrides.
pub fn load(sources: &ConfigSources) -> Result<LoadedConfig, ConfigError> {
    let base = sources
        .main
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let mut merged = toml::Table::new();
    let mut files = Vec::new();
    if sources.main.exists() {
        merge(&mut merged, read_file(&sources.main, &base)?);
        files.push(sources.main.clone());
    } else if sources.explicit {
        return Err(file_err(
            &sources.main,
            "no such file; pass an existing file to --config or omit it to use /etc/kiln/kiln.toml",
        ));
    }
    let dir = sources.dropin_dir();
    if dir.is_dir() {
        let mut dropins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| file_err(&dir, format!("cannot list drop-ins: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        dropins.sort();
        for d in dropins {
            merge(&mut merged, read_file(&d, &base)?);
            files.push(d);
        }
    }
    // The directory backend keeps its data under the state directory unless told otherwise,
    // so two daemons with their own state never share one data tree.
    let root_given = merged.get("storage").and_then(|t| t.get("root")).is_some();
    let mut config = Config::deserialize(toml::Value::Table(merged)).map_err(|e| ConfigError {
        file: sources.main.exists().then(|| sources.main.clone()),
        problems: vec![e.message().to_string()],
    })?;
    resolve_relative(&mut config, &base);
    sources.overrides.apply(&mut config);
    if !root_given {
        config.storage.root = config.daemon.state_dir.clone();
    }
    config.validate().map_err(|problems| ConfigError {
        file: None,
        problems,
    })?;
    Ok(LoadedConfig { config, files })
}

/// The `[jobs]` config table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Hold GPU training jobs in the queue while the machine runs on battery.
    pub defer_gpu_on_battery: bool,
    /// SIGTERM → SIGKILL grace period for cancel and max runtime, milliseconds.
    pub grace_ms: u64,
    /// `auto` (a systemd transient unit when booted with systemd, else fork), `fork`, `systemd`.
    pub launcher: String,
    /// How often running jobs are checked for exit and checkpoint markers, milliseconds.
    pub poll_interval_ms: u64,
    /// Memory limit and budget reservation of a job that gives none, bytes.
    pub default_memory_bytes: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            defer_gpu_on_battery: true,
            grace_ms: 10_000,
            launcher: "auto".into(),
            poll_interval_ms: 100,
            default_memory_bytes: 1 << 30,
        }
    }
}

impl JobsConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !["auto", "fork", "systemd"].contains(&self.launcher.as_str()) {
            return Err(format!(
                "key `jobs.launcher`: bad value {:?}; expected auto, fork or systemd",
                self.launcher
            ));
        }
        if self.grace_ms > 600_000 {
            return Err(format!(
                "key `jobs.grace_ms`: bad value {}; expected at most 600000 (10 minutes)",
                self.grace_ms
            ));
        }
        if self.default_memory_bytes < 1 << 20 {
            return Err(format!(
                "key `jobs.default_memory_bytes`: bad value {}; expected at least 1048576 (1 MiB)",
                self.default_memory_bytes
            ));
        }
        if !(10..=10_000).contains(&self.poll_interval_ms) {
            return Err(format!(
                "key `jobs.poll_interval_ms`: bad value {}; expected 10 to 10000",
                self.poll_interval_ms
            ));
        }
        Ok(())
    }
}

/// `[vectors]` in kiln.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VectorsConfig {
    /// Search threads; 0 = one per performance core (at least 1).
    pub threads: usize,
    /// Rewrite a collection into one segment once it has more segment files than this.
    pub compact_after_segments: usize,
    /// Embedding model used by Embed, EmbedAndAdd and SearchText when the call names none.
    pub embedding_model: String,
    /// Texts per inference request on the embedding path.
    pub embed_batch: usize,
    /// Most hits a search may return in all: queries × min(k, collection size).
    pub max_hits: usize,
}

impl Default for VectorsConfig {
    fn default() -> Self {
        VectorsConfig {
            threads: 0,
            compact_after_segments: 64,
            embedding_model: "minilm".into(),
            embed_batch: 32,
            max_hits: 1 << 20,
        }
    }
}

impl VectorsConfig {
    /// Messages name the key, the value and what is expected.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        if self.threads > 1024 {
            errs.push(format!(
                "key `vectors.threads`: bad value {}; expected 0 (one per performance core) to 1024",
                self.threads
            ));
        }
        if !(1..=1_000_000).contains(&self.compact_after_segments) {
            errs.push(format!(
                "key `vectors.compact_after_segments`: bad value {}; expected 1 to 1000000",
                self.compact_after_segments
            ));
        }
        if self.embedding_model.trim().is_empty() {
            errs.push(
                "key `vectors.embedding_model`: empty; expected a model name such as \"minilm\""
                    .into(),
            );
        }
        if !(1..=4096).contains(&self.embed_batch) {
            errs.push(format!(
                "key `vectors.embed_batch`: bad value {}; expected 1 to 4096",
                self.embed_batch
            ));
        }
        if !(1..=1 << 26).contains(&self.max_hits) {
            errs.push(format!(
                "key `vectors.max_hits`: bad value {}; expected 1 to {}",
                self.max_hits,
                1u64 << 26
            ));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_and_deadline_bounds_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.daemon.max_connections_per_uid, 64);
        c.daemon.max_connections_per_uid = 0;
        c.daemon.request_timeout_ms = 10;
        let errs = c.validate().unwrap_err().join("\n");
        assert!(errs.contains("daemon.max_connections_per_uid"), "{errs}");
        assert!(
            errs.contains("daemon.request_timeout_ms") && errs.contains("1000"),
            "{errs}"
        );
    }

    #[test]
    fn the_data_root_follows_the_state_dir_unless_set() {
        let t = tempfile::tempdir().unwrap();
        let main = t.path().join("kiln.toml");
        std::fs::write(&main, "[daemon]\nlog_level = \"info\"\n").unwrap();
        let over = Overrides {
            state_dir: Some(t.path().join("state-a")),
            ..Overrides::default()
        };
        let c = load(&ConfigSources::new(Some(main.clone()), over.clone()))
            .unwrap()
            .config;
        assert_eq!(c.storage.root, t.path().join("state-a"));
        std::fs::write(&main, "[storage]\nroot = \"/srv/kiln-data\"\n").unwrap();
        let c = load(&ConfigSources::new(Some(main), over)).unwrap().config;
        assert_eq!(c.storage.root, std::path::PathBuf::from("/srv/kiln-data"));
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn empty_file_gives_defaults() {
        let t = tempfile::tempdir().unwrap();
        let main = write(t.path(), "kiln.toml", "");
        let l = load(&ConfigSources::new(Some(main), Overrides::default())).unwrap();
        assert_eq!(l.config, Config::default());
    }

    #[test]
    fn dropins_apply_in_lexical_order_and_overrides_win() {
        let t = tempfile::tempdir().unwrap();
        let main = write(t.path(), "kiln.toml", "[daemon]\nlog_level = \"warn\"\n");
        write(
            t.path(),
            "kiln.toml.d/20-b.toml",
            "[daemon]\nlog_level = \"debug\"\n",
        );
        write(
            t.path(),
            "kiln.toml.d/10-a.toml",
            "[daemon]\nlog_level = \"error\"\ndrain_timeout_ms = 7\n",
        );
        write(t.path(), "kiln.toml.d/ignored.txt", "garbage");
        let l = load(&ConfigSources::new(
            Some(main.clone()),
            Overrides::default(),
        ))
        .unwrap();
        assert_eq!(l.config.daemon.log_level, "debug");
        assert_eq!(l.config.daemon.drain_timeout_ms, 7);
        assert_eq!(l.files.len(), 3);
        let o = Overrides {
            log_level: Some("trace".into()),
            ..Default::default()
        };
        let l = load(&ConfigSources::new(Some(main), o)).unwrap();
        assert_eq!(l.config.daemon.log_level, "trace");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let t = tempfile::tempdir().unwrap();
        let main = write(t.path(), "kiln.toml", "[daemon]\nsockett = \"/x\"\n");
        let e = load(&ConfigSources::new(
            Some(main.clone()),
            Overrides::default(),
        ))
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains(&main.display().to_string()), "{s}");
        assert!(s.contains("sockett"), "{s}");
        assert!(s.contains("line 2"), "{s}");
    }

    #[test]
    fn bad_value_names_key_value_and_expectation() {
        let t = tempfile::tempdir().unwrap();
        let main = write(t.path(), "kiln.toml", "");
        let d = write(
            t.path(),
            "kiln.toml.d/50.toml",
            "[daemon]\nlog_level = \"loud\"\n",
        );
        let e = load(&ConfigSources::new(Some(main), Overrides::default())).unwrap_err();
        let s = e.to_string();
        assert!(s.contains(&d.display().to_string()), "{s}");
        assert!(
            s.contains("daemon.log_level") && s.contains("loud") && s.contains("expected"),
            "{s}"
        );
        let main2 = write(
            t.path(),
            "b.toml",
            "[daemon]\ndrain_timeout_ms = \"soon\"\n",
        );
        let s = load(&ConfigSources::new(Some(main2), Overrides::default()))
            .unwrap_err()
            .to_string();
        assert!(s.contains("soon") || s.contains("invalid type"), "{s}");
    }

    #[test]
    fn max_message_bytes_is_bounded_both_ways() {
        let t = tempfile::tempdir().unwrap();
        for (v, ok) in [
            (4095u64, false),
            (4096, true),
            (1 << 30, true),
            ((1 << 30) + 1, false),
        ] {
            let main = write(
                t.path(),
                "kiln.toml",
                &format!("[daemon]\nmax_message_bytes = {v}\n"),
            );
            let r = load(&ConfigSources::new(Some(main), Overrides::default()));
            assert_eq!(r.is_ok(), ok, "{v}");
            if let Err(e) = r {
                let s = e.to_string();
                assert!(
                    s.contains("daemon.max_message_bytes") && s.contains("1073741824"),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn model_precision_defaults_to_f32_and_names_the_choices() {
        use crate::models::PrecisionSetting;
        assert_eq!(Config::default().models.precision, PrecisionSetting::F32);
        let t = tempfile::tempdir().unwrap();
        let main = write(t.path(), "kiln.toml", "[models]\nprecision = \"auto\"\n");
        let l = load(&ConfigSources::new(Some(main), Overrides::default())).unwrap();
        assert_eq!(l.config.models.precision, PrecisionSetting::Auto);
        let main = write(t.path(), "kiln.toml", "[models]\nprecision = \"f8\"\n");
        let s = load(&ConfigSources::new(Some(main), Overrides::default()))
            .unwrap_err()
            .to_string();
        assert!(s.contains("precision") && s.contains("f8"), "{s}");
        assert!(s.contains("bf16") && s.contains("auto"), "{s}");
    }

    #[test]
    fn relative_paths_resolve_against_the_main_file() {
        let t = tempfile::tempdir().unwrap();
        let main = write(
            t.path(),
            "conf/kiln.toml",
            "[daemon]\nstate_dir = \"../state\"\n",
        );
        let l = load(&ConfigSources::new(Some(main), Overrides::default())).unwrap();
        let canon = std::fs::canonicalize(t.path()).unwrap();
        assert_eq!(
            l.config.daemon.state_dir,
            canon.join("conf").join("../state")
        );
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_missing_is_not() {
        let t = tempfile::tempdir().unwrap();
        let e = load(&ConfigSources::new(
            Some(t.path().join("nope.toml")),
            Overrides::default(),
        ));
        assert!(e.unwrap_err().to_string().contains("no such file"));
    }

    #[test]
    fn metrics_listen_must_be_loopback_or_unix() {
        let mut c = Config::default();
        c.metrics.listen = "0.0.0.0:9000".into();
        assert!(c.validate().unwrap_err()[0].contains("loopback"));
        c.metrics.listen = "127.0.0.1:9000".into();
        assert!(matches!(c.metrics_listen(), Ok(MetricsListen::Tcp(_))));
        c.metrics.listen = "unix:/tmp/m.sock".into();
        assert_eq!(
            c.metrics_listen(),
            Ok(MetricsListen::Unix("/tmp/m.sock".into()))
        );
    }
}
