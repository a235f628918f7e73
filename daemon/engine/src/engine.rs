//! The engine: owns the effective configuration, daemon state, component
//! health, the audit trail and authorisation. Every transport calls these
//! methods; a state-changing method authorises, acts, then audits, in that
//! order, here and nowhere else.

use crate::auth::{Action, Authority, Caller};
use crate::budget::{BudgetStatus, Ledger};
use crate::config::{self, Config, ConfigSources, LoadedConfig};
pub use crate::core::{Component, ComponentState, DaemonState, LiveSettings, rfc3339};
use crate::core::{Core, read, write};
use crate::devices::DeviceHub;
use crate::error::EngineError;
use crate::metrics::Metrics;
use crate::state::StateDb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};
use tokio::sync::watch;

/// Config keys (dotted, or a `section.` prefix) that a reload applies live;
/// every other changed key needs a restart.
const LIVE_KEYS: &[&str] = &[
    "daemon.log_level",
    "daemon.drain_timeout_ms",
    "budget.",
    "admission.",
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub version: String,
    pub state: DaemonState,
    pub started_at: String,
    pub uptime_s: u64,
    pub pid: u32,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bus: String,
    pub log_level: String,
    pub config_files: Vec<PathBuf>,
    pub restart_required: Vec<String>,
    pub components: Vec<Component>,
    pub budget: BudgetStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub applied: Vec<String>,
    pub restart_required: Vec<String>,
    pub config_files: Vec<PathBuf>,
}

/// What ServerMetadata reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMetadata {
    pub name: String,
    pub version: String,
    pub extensions: Vec<String>,
}

pub(crate) struct Inner {
    /// What every hub shares (configuration, ledger, database, events, components).
    pub(crate) core: Arc<Core>,
    pub(crate) storage: Arc<crate::storage::StorageHub>,
    pub(crate) devices: Arc<DeviceHub>,
    pub(crate) models: Arc<crate::models::ModelsHub>,
    pub(crate) jobs: Arc<crate::jobs::JobsHub>,
    pub(crate) vectors: Arc<crate::vectors::VectorsHub>,
}

/// Cheap to clone; all clones share one engine.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// An engine on the drivers its configuration asks for.
    pub fn new(
        loaded: LoadedConfig,
        sources: ConfigSources,
        db: StateDb,
        authority: Box<dyn Authority>,
        live: Box<dyn LiveSettings>,
    ) -> Result<Engine, String> {
        let ports = crate::wiring::Ports::from_config(&loaded.config);
        Engine::with_ports(loaded, sources, db, authority, live, ports)
    }

    /// An engine on the given port implementations (fakes, in tests).
    pub fn with_ports(
        loaded: LoadedConfig,
        sources: ConfigSources,
        db: StateDb,
        authority: Box<dyn Authority>,
        live: Box<dyn LiveSettings>,
        ports: crate::wiring::Ports,
    ) -> Result<Engine, String> {
        let (state, _) = watch::channel(DaemonState::Starting);
        let cfg = &loaded.config;
        let first = crate::devices::FirstProbe::read(cfg)?;
        let inv = first.inventory.clone();
        let budget = Ledger::new(
            crate::devices::budget_bytes(cfg, &inv),
            cfg.admission.max_memory_pressure,
        );
        budget.set_pressure(inv.memory.psi.map(|p| p.some.avg10));
        // Planned before anything is pinned: the mask now is what kilnd was started with.
        let usable = kiln_hal::current_affinity()
            .map_err(|e| format!("cannot read this process's CPU affinity: {e}"))?;
        let threads = crate::threads::ThreadPlacement::plan(&inv.cpus, &usable);
        let storage = ports.storage;
        let core = Arc::new(Core {
            budget,
            events: crate::events::EventBus::default(),
            sources,
            current: RwLock::new(loaded),
            restart_required: RwLock::new(Vec::new()),
            state,
            started_at: SystemTime::now(),
            started: Instant::now(),
            db,
            authority,
            live,
            metrics: Metrics::new(),
            components: RwLock::new(BTreeMap::new()),
            threads,
        });
        let devices = Arc::new(DeviceHub::new(core.clone(), first));
        let storage = Arc::new(crate::storage::StorageHub::new(core.clone(), storage));
        let models = Arc::new(crate::models::ModelsHub::new(
            core.clone(),
            storage.clone(),
            devices.clone(),
            ports.inference,
        ));
        let vectors = Arc::new(crate::vectors::VectorsHub::new(
            core.clone(),
            storage.clone(),
            models.clone(),
            ports.vectors,
        ));
        let jobs = Arc::new(crate::jobs::JobsHub::new(
            core.clone(),
            storage.clone(),
            devices.clone(),
            ports.jobs,
        ));
        let engine = Engine {
            inner: Arc::new(Inner {
                jobs,
                devices,
                storage,
                models,
                vectors,
                core,
            }),
        };
        match &engine.inner.storage.port() {
            Ok(s) => {
                let where_ = match s.kind() {
                    kiln_hal::ports::storage::BackendKind::Dir => {
                        format!("dir backend under {}", s.config().root.display())
                    }
                    kiln_hal::ports::storage::BackendKind::Zfs => {
                        format!("zfs backend on pool {}", s.config().pool)
                    }
                };
                engine.set_component("storage", ComponentState::Ok, where_);
            }
            Err(e) => {
                tracing::warn!("{e}");
                engine.set_component("storage", ComponentState::Degraded, e.message.clone());
            }
        }
        Ok(engine)
    }

    /// The storage backend, or Unavailable with the reason and the fix.
    pub fn storage(&self) -> Result<Arc<dyn kiln_hal::ports::storage::Storage>, EngineError> {
        self.inner.storage.port()
    }

    /// Which CPUs background and compute threads run on.
    pub fn threads(&self) -> &crate::threads::ThreadPlacement {
        self.inner.core.threads()
    }

    /// Put every thread of this process on the background CPUs (compute threads pin
    /// themselves when they start) and report the placement as component `threads`. For
    /// the daemon process; call once, right after [`Engine::new`].
    pub fn place_daemon_threads(&self) {
        let p = self.threads();
        match p.pin_process_background() {
            Ok(n) => {
                tracing::debug!(threads = n, "pinned to background CPUs");
                self.set_component("threads", ComponentState::Ok, p.summary());
            }
            Err(e) => {
                let detail = format!(
                    "threads not pinned ({e}); they run on every CPU kilnd may use. Check the cgroup's cpuset and CPU hotplug"
                );
                tracing::warn!("{detail}");
                self.set_component("threads", ComponentState::Degraded, detail);
            }
        }
    }

    /// The UMA budget ledger shared by models, jobs and batches.
    pub fn budget(&self) -> &Ledger {
        self.inner.core.budget()
    }

    pub fn config(&self) -> Config {
        self.inner.core.config()
    }

    pub fn metrics(&self) -> &Metrics {
        self.inner.core.metrics()
    }

    pub fn db(&self) -> &StateDb {
        self.inner.core.db()
    }

    pub fn state(&self) -> DaemonState {
        self.inner.core.state()
    }

    pub fn set_state(&self, s: DaemonState) {
        self.inner.core.set_state(s)
    }

    /// Changes of `state`, for adapters that publish them (PropertiesChanged).
    /// Every device, job and import event from now on (see `events`).
    pub fn events(&self) -> crate::events::Subscription {
        self.inner.core.subscribe()
    }

    pub fn subscribe_state(&self) -> watch::Receiver<DaemonState> {
        self.inner.core.state.subscribe()
    }

    pub fn started_at(&self) -> String {
        self.inner.core.started_at()
    }

    pub fn set_component(&self, name: &str, state: ComponentState, detail: impl Into<String>) {
        self.inner.core.set_component(name, state, detail)
    }

    pub fn is_live(&self) -> bool {
        self.state() != DaemonState::Stopping
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state(), DaemonState::Running | DaemonState::Reloading)
    }

    pub fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "kiln".into(),
            version: crate::VERSION.into(),
            // KServe extensions implemented by the inference service.
            extensions: vec!["model_repository".into(), "statistics".into()],
        }
    }

    /// The shared core (configuration, ledger, database, events, components).
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.inner.core
    }

    pub fn status(&self) -> StatusReport {
        let core = &self.inner.core;
        let cur = read(&core.current);
        let c = &cur.config;
        StatusReport {
            version: crate::VERSION.into(),
            state: self.state(),
            started_at: self.started_at(),
            uptime_s: core.started.elapsed().as_secs(),
            pid: std::process::id(),
            socket: c.daemon.socket.clone(),
            state_dir: c.daemon.state_dir.clone(),
            bus: c.dbus.bus.clone(),
            log_level: c.daemon.log_level.clone(),
            config_files: cur.files.clone(),
            restart_required: read(&core.restart_required).clone(),
            components: read(&core.components).values().cloned().collect(),
            budget: core.budget.status(),
        }
    }

    /// Re-read the configuration; apply live keys; list the rest as needing a restart.
    pub async fn reload(&self, caller: &Caller) -> Result<ReloadReport, EngineError> {
        let result = self
            .core()
            .authorised(
                caller,
                Action::ManageDaemon,
                "Reload",
                "",
                || async { self.reload_authorized() },
                |r| {
                    format!(
                        "applied={:?} restart_required={:?}",
                        r.applied, r.restart_required
                    )
                },
            )
            .await;
        match &result {
            Ok(r) => {
                tracing::info!(caller = %caller.describe(), applied = ?r.applied, restart_required = ?r.restart_required, "configuration reloaded")
            }
            Err(e) => tracing::warn!(caller = %caller.describe(), error = %e, "reload refused"),
        }
        result
    }

    fn reload_authorized(&self) -> Result<ReloadReport, EngineError> {
        let prev_state = self.state();
        self.set_state(DaemonState::Reloading);
        let out = self.apply_reload();
        self.set_state(prev_state);
        out
    }

    fn apply_reload(&self) -> Result<ReloadReport, EngineError> {
        let new = config::load(&self.inner.core.sources).map_err(|e| {
            EngineError::invalid(format!(
                "configuration not reloaded, the running one stays: {e}"
            ))
        })?;
        let old = self.config();
        let changed = changed_keys(&old, &new.config);
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        for key in changed {
            if LIVE_KEYS
                .iter()
                .any(|l| key == *l || (l.ends_with('.') && key.starts_with(l)))
            {
                applied.push(key);
            } else {
                restart.push(key);
            }
        }
        if new.config.daemon.log_level != old.daemon.log_level {
            self.inner
                .core
                .live
                .set_log_level(&new.config.daemon.log_level)
                .map_err(|e| EngineError::invalid(format!("daemon.log_level: {e}")))?;
        }
        if new.config.budget != old.budget || new.config.admission != old.admission {
            let inv = self.inner.devices.inventory();
            self.budget()
                .set_budget(crate::devices::budget_bytes(&new.config, &inv));
            self.budget()
                .set_max_pressure(new.config.admission.max_memory_pressure);
        }
        // Keys that need a restart keep their running values.
        let mut effective = new.config.clone();
        keep_restart_keys(&mut effective, &old);
        let files = new.files.clone();
        *write(&self.inner.core.current) = LoadedConfig {
            config: effective,
            files: files.clone(),
        };
        *write(&self.inner.core.restart_required) = restart.clone();
        Ok(ReloadReport {
            applied,
            restart_required: restart,
            config_files: files,
        })
    }
}

/// Dotted keys whose values differ between two configurations.
fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(va), Ok(vb)) = (toml::Value::try_from(a), toml::Value::try_from(b)) else {
        return vec!["<configuration>".into()];
    };
    let mut fa = BTreeMap::new();
    let mut fb = BTreeMap::new();
    flatten("", &va, &mut fa);
    flatten("", &vb, &mut fb);
    let mut keys: Vec<String> = fa.keys().chain(fb.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| fa.get(k) != fb.get(k))
        .collect()
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Everything not live-reloadable keeps the value the process started with.
fn keep_restart_keys(new: &mut Config, running: &Config) {
    let live = new.clone();
    *new = running.clone();
    new.daemon.log_level = live.daemon.log_level;
    new.daemon.drain_timeout_ms = live.daemon.drain_timeout_ms;
    new.budget = live.budget;
    new.admission = live.admission;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{GroupAuthority, Transport};
    use crate::config::Overrides;
    use std::sync::Mutex;

    struct RecordLevel(Arc<Mutex<Vec<String>>>);
    impl LiveSettings for RecordLevel {
        fn set_log_level(&self, f: &str) -> Result<(), String> {
            self.0.lock().unwrap().push(f.into());
            Ok(())
        }
    }

    fn engine(dir: &std::path::Path, text: &str) -> (Engine, PathBuf, Arc<Mutex<Vec<String>>>) {
        let main = dir.join("kiln.toml");
        std::fs::write(&main, text).unwrap();
        let sources = ConfigSources::new(Some(main.clone()), Overrides::default());
        let loaded = config::load(&sources).unwrap();
        let db = StateDb::open(&dir.join("state")).unwrap();
        let levels = Arc::new(Mutex::new(Vec::new()));
        let e = Engine::new(
            loaded,
            sources,
            db,
            Box::new(GroupAuthority::new("root")),
            Box::new(RecordLevel(levels.clone())),
        )
        .unwrap();
        (e, main, levels)
    }

    #[tokio::test]
    async fn reload_applies_live_keys_and_lists_restart_keys() {
        let t = tempfile::tempdir().unwrap();
        let (e, main, levels) = engine(t.path(), "[daemon]\nlog_level = \"info\"\n");
        e.set_state(DaemonState::Running);
        std::fs::write(
            &main,
            "[daemon]\nlog_level = \"debug\"\nsocket = \"/tmp/other.sock\"\n",
        )
        .unwrap();
        let r = e.reload(&Caller::internal()).await.unwrap();
        assert_eq!(r.applied, vec!["daemon.log_level".to_string()]);
        assert_eq!(r.restart_required, vec!["daemon.socket".to_string()]);
        assert_eq!(levels.lock().unwrap().as_slice(), &["debug".to_string()]);
        let s = e.status();
        assert_eq!(s.log_level, "debug");
        assert_ne!(
            s.socket,
            PathBuf::from("/tmp/other.sock"),
            "socket keeps its running value"
        );
        assert_eq!(s.restart_required, vec!["daemon.socket".to_string()]);
        assert_eq!(s.state, DaemonState::Running);
        let audit = e.db().recent_audit(1).unwrap();
        assert_eq!(audit[0].action, "Reload");
        assert_eq!(audit[0].result, "ok");
    }

    #[tokio::test]
    async fn bad_reload_keeps_running_config_and_is_audited() {
        let t = tempfile::tempdir().unwrap();
        let (e, main, _) = engine(t.path(), "");
        std::fs::write(&main, "[daemon]\nlog_level = 3\n").unwrap();
        let err = e.reload(&Caller::internal()).await.unwrap_err();
        assert!(err.message.contains("running one stays"), "{}", err.message);
        assert_eq!(e.status().log_level, "info");
        assert_eq!(e.db().recent_audit(1).unwrap()[0].result, "InvalidArgument");
    }

    #[tokio::test]
    async fn unauthorised_reload_is_denied_and_audited() {
        let t = tempfile::tempdir().unwrap();
        let (e, _, levels) = engine(t.path(), "");
        let me = nix::unistd::geteuid().as_raw();
        let stranger = Caller {
            transport: Transport::Grpc,
            uid: Some(if me == 65534 { 65533 } else { 65534 }),
            gid: Some(65534),
            pid: Some(7),
            bus_name: None,
        };
        let err = e.reload(&stranger).await.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::PermissionDenied);
        assert!(levels.lock().unwrap().is_empty());
        let row = &e.db().recent_audit(1).unwrap()[0];
        assert_eq!(
            (row.result.as_str(), row.caller_pid),
            ("PermissionDenied", Some(7))
        );
        // A device rescan goes through the same path: denied before it runs, audited.
        let err = e.rescan_devices(&stranger).await.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::PermissionDenied);
        let row = &e.db().recent_audit(1).unwrap()[0];
        assert_eq!(
            (row.action.as_str(), row.result.as_str()),
            ("RescanDevices", "PermissionDenied")
        );
        // Allowed, it reaches the monitor (not started in this test: UNAVAILABLE, audited).
        let err = e.rescan_devices(&Caller::internal()).await.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Unavailable);
        assert_eq!(e.db().recent_audit(1).unwrap()[0].result, "Unavailable");
    }
}
