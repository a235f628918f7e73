//! The models hub: the repository (`<repo>/<name>/<version>/`), version policy, model
//! control (explicit load/unload, or polling for new version folders), the registry of
//! loaded models, placement with calibration, UMA reservations, validation, the per-model
//! scheduler (dynamic batching) and statistics. The backend runs only on blocking threads
//! (`spawn_blocking` for loads, the scheduler's workers for inference). Depends on the
//! core, the storage hub (the default repository) and the device hub (placement messages);
//! models run through the inference port.

pub mod placement;
mod prom;
pub mod repo;
pub mod sched;
pub mod stats;
pub mod validate;

#[cfg(test)]
mod tests;

/// The tensor vocabulary transports encode.
pub use kiln_hal::ports::{Dtype, Tensor, Values, contents_field};
pub use repo::{ModelSettings, PrecisionSetting, VersionPolicy};
pub use stats::{BatchStat, Durations, ModelStats};
pub use validate::{InferInput, InferRequest, InferResponse};

use crate::auth::{Action, Caller};
use crate::budget::{Reservation, gib};
use crate::core::{ComponentState, Core};
use crate::devices::DeviceHub;
use crate::error::EngineError;
use crate::storage::StorageHub;
use kiln_hal::ports::{
    ErrorKind as PortKind, InferenceBackend, LoadHints, LoadRequest, LoadedModel, PerformanceHint,
    PortError, PortInfo,
};
use sched::{Batching, Scheduler};
use serde::Serialize;
use stats::Stats;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Fixed part of a model's first estimate (request pool, compiled graph, plugin state).
const MODEL_OVERHEAD_BYTES: u64 = 4 << 20;
/// Weights are counted this many times in the first estimate (weights + compiled copy).
const WEIGHTS_FACTOR: u64 = 2;

/// KServe model states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ModelState {
    #[serde(rename = "READY")]
    Ready,
    #[serde(rename = "LOADING")]
    Loading,
    #[serde(rename = "UNLOADING")]
    Unloading,
    #[serde(rename = "UNAVAILABLE")]
    Unavailable,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Ready => "READY",
            ModelState::Loading => "LOADING",
            ModelState::Unloading => "UNLOADING",
            ModelState::Unavailable => "UNAVAILABLE",
        }
    }
}

/// A tensor's name, KServe datatype and shape (-1 = any size).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

fn metas(ports: &[PortInfo]) -> Vec<TensorMeta> {
    ports
        .iter()
        .map(|p| TensorMeta {
            name: p.name.clone(),
            datatype: p.dtype.kserve_name().into(),
            shape: p.shape.clone(),
        })
        .collect()
}

/// What ModelMetadata reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: ModelState,
    pub reason: String,
}

/// Everything known about one model version (for `kilnctl models list`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: u64,
    pub state: ModelState,
    pub reason: String,
    pub path: PathBuf,
    pub platform: String,
    pub kind: String,
    pub device: String,
    /// Why the model is not on its preferred device, empty when it is.
    pub fallback_reason: String,
    pub reservation_bytes: u64,
    /// Measured inferences/s on `device` (calibration), 0 if not measured.
    pub calibrated_per_s: f64,
    pub max_batch: usize,
    pub max_queue_delay_us: u64,
    pub pool_size: usize,
    pub precision: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
}

/// Options of a load call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Place on this device (`CPU`, `GPU`, `NPU`, `AUTO`); falls back to CPU with a reason.
    pub device: Option<String>,
}

/// A compiled, serving model version.
pub(crate) struct Loaded {
    info: Mutex<ModelInfo>,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    batched: bool,
    stats: Arc<Stats>,
    sched: Scheduler,
    reservation: Mutex<Option<Reservation>>,
}

#[derive(Clone)]
struct Slot {
    state: ModelState,
    reason: String,
    loaded: Option<Arc<Loaded>>,
}

type Table = BTreeMap<String, BTreeMap<u64, Slot>>;

/// The engine's model registry.
pub struct ModelsHub {
    core: Arc<Core>,
    /// The default repository is the storage models dataset.
    storage: Arc<StorageHub>,
    /// Named in placement messages (what the HAL sees when the backend does not).
    devices: Arc<DeviceHub>,
    backend: Arc<dyn InferenceBackend>,
    /// The backend's runtime loaded once (component `inference` says which).
    backend_ready: std::sync::atomic::AtomicBool,
    table: RwLock<Table>,
    ops: tokio::sync::Mutex<()>,
    poll: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// `daemon.max_message_bytes` (a restart key), kept off the config lock on the hot path.
    max_bytes: std::sync::atomic::AtomicUsize,
}

impl ModelsHub {
    pub(crate) fn new(
        core: Arc<Core>,
        storage: Arc<StorageHub>,
        devices: Arc<DeviceHub>,
        backend: Arc<dyn InferenceBackend>,
    ) -> ModelsHub {
        ModelsHub {
            core,
            storage,
            devices,
            backend,
            backend_ready: std::sync::atomic::AtomicBool::new(false),
            table: RwLock::new(BTreeMap::new()),
            ops: tokio::sync::Mutex::new(()),
            poll: Mutex::new(None),
            max_bytes: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set(
        &self,
        name: &str,
        version: u64,
        state: ModelState,
        reason: &str,
        loaded: Option<Arc<Loaded>>,
    ) {
        self.table_mut().entry(name.into()).or_default().insert(
            version,
            Slot {
                state,
                reason: reason.into(),
                loaded,
            },
        );
    }
}

/// A backend error; missing model files and what a device cannot do are preconditions of
/// serving, not missing resources of the request.
fn port_err(e: PortError) -> EngineError {
    match e.kind() {
        PortKind::NotFound | PortKind::Unsupported => EngineError::precondition(e.message),
        _ => EngineError::from(e),
    }
}

fn join_err(e: tokio::task::JoinError) -> EngineError {
    EngineError::internal(format!("a model task failed: {e}"))
}

/// Inputs of a blocking load.
struct LoadJob {
    name: String,
    version: u64,
    dir: PathBuf,
    settings: ModelSettings,
    device: Option<String>,
    hal: Vec<String>,
}

impl ModelsHub {
    fn repository(&self) -> Result<PathBuf, EngineError> {
        // Unset: the storage models dataset (where `kilnctl models import` puts them).
        let models_ds = self
            .storage
            .port()
            .ok()
            .map(|s| s.dataset_path(kiln_hal::ports::storage::Dataset::Models));
        self.core.config().models.repository.or(models_ds).ok_or_else(|| {
            EngineError::not_found(
                "no model repository is configured; set [models] repository in kiln.toml or start kilnd with --model-repository DIR",
            )
        })
    }

    /// The inference backend with its runtime loaded (blocking: call from a blocking
    /// thread). The first success reports the runtime and its devices as component
    /// `inference`; a failure disables serving with the backend's reason.
    fn backend_blocking(&self) -> Result<Arc<dyn InferenceBackend>, EngineError> {
        use std::sync::atomic::Ordering;
        let hub = self;
        let backend = hub.backend.clone();
        if hub.backend_ready.load(Ordering::Acquire) {
            return Ok(backend);
        }
        match backend.describe() {
            Ok(what) => {
                let devs = backend
                    .devices()
                    .map(|d| {
                        d.iter()
                            .map(|d| format!("{} ({})", d.name, d.full_name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                self.core.set_component(
                    "inference",
                    ComponentState::Ok,
                    format!("{what}; devices: {devs}"),
                );
                hub.backend_ready.store(true, Ordering::Release);
                Ok(backend)
            }
            Err(e) => {
                let msg = e.to_string();
                self.core
                    .set_component("inference", ComponentState::Disabled, msg.clone());
                Err(EngineError::unavailable(format!(
                    "model serving is disabled: {msg}"
                )))
            }
        }
    }

    /// Check for OpenVINO, load the repository's models (when configured) and start polling
    /// (control = "poll"). Call once after the device monitor started; kilnd is not ready
    /// until this returns. Never fails: problems are recorded per model and in component
    /// `inference`.
    pub async fn start_models(self: &Arc<Self>) {
        self.core
            .metrics()
            .register_collector(Box::new(prom::ModelsCollector {
                hub: std::sync::Arc::downgrade(self),
            }));
        let cfg = self.core.config();
        match self.backend.locate() {
            Ok(p) => self.core.set_component(
                "inference",
                ComponentState::Ok,
                format!("{p} (loaded with the first model)"),
            ),
            Err(e) => {
                tracing::warn!("model serving disabled: {e}");
                self.core
                    .set_component("inference", ComponentState::Disabled, e.to_string());
            }
        }
        let Ok(repo) = self.repository() else {
            return;
        };
        if cfg.models.load_at_start || cfg.models.control == "poll" {
            self.sync_repository(true).await;
        } else if let Ok(found) = repo::scan(&repo, &*self.backend) {
            for m in found {
                for v in m.versions {
                    self.set(
                        &m.name,
                        v.version,
                        ModelState::Unavailable,
                        "not loaded (explicit model control)",
                        None,
                    );
                }
            }
        }
        if cfg.models.control == "poll" {
            let weak = Arc::downgrade(self);
            let every = Duration::from_millis(cfg.models.poll_interval_ms);
            let task = tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(hub) = weak.upgrade() else { return };
                    hub.sync_repository(false).await;
                }
            });
            *self.poll.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
    }

    /// Bring loaded versions in line with the repository and the version policies: load
    /// what is wanted and not ready, unload what disappeared. `initial` also records models
    /// that opt out of loading at start.
    async fn sync_repository(self: &Arc<Self>, initial: bool) {
        let Ok(repo) = self.repository() else { return };
        let found = match tokio::task::spawn_blocking({
            let (repo, backend) = (repo.clone(), self.backend.clone());
            move || repo::scan(&repo, &*backend)
        })
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::warn!("{e}");
                self.core
                    .set_component("inference", ComponentState::Degraded, e);
                return;
            }
            Err(e) => {
                tracing::warn!("repository scan failed: {e}");
                return;
            }
        };
        let policy = self.default_policy();
        for m in &found {
            let settings = repo::settings(&m.dir, None).unwrap_or_default();
            if !settings.load_at_start {
                if initial {
                    for v in &m.versions {
                        self.set(
                            &m.name,
                            v.version,
                            ModelState::Unavailable,
                            "not loaded (load_at_start = false)",
                            None,
                        );
                    }
                }
                continue;
            }
            let all: Vec<u64> = m.versions.iter().map(|v| v.version).collect();
            let wanted = settings
                .version_policy
                .clone()
                .unwrap_or(policy.clone())
                .select(&all);
            let (ready, failed): (Vec<u64>, Vec<u64>) = {
                let t = self.table();
                let slots = t.get(&m.name);
                let ready = slots
                    .map(|s| {
                        s.iter()
                            .filter(|(_, s)| s.state == ModelState::Ready)
                            .map(|(v, _)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                let failed = slots
                    .map(|s| {
                        s.iter()
                            .filter(|(_, s)| {
                                s.state == ModelState::Unavailable
                                    && !s.reason.starts_with("not loaded")
                                    && s.reason != "unloaded"
                            })
                            .map(|(v, _)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                (ready, failed)
            };
            // Poll: retry nothing that already failed unless the versions changed.
            if !initial && ready == wanted {
                continue;
            }
            if !initial
                && wanted
                    .iter()
                    .all(|v| ready.contains(v) || failed.contains(v))
                && ready.iter().all(|v| wanted.contains(v))
            {
                continue;
            }
            if let Err(e) = self.load_authorized(&m.name, &LoadOptions::default()).await {
                tracing::warn!(model = %m.name, "{}", e.message);
            }
        }
        // Models removed from disk.
        let gone: Vec<String> = self
            .table()
            .iter()
            .filter(|(n, slots)| {
                !found.iter().any(|m| &m.name == *n) && slots.values().any(|s| s.loaded.is_some())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            tracing::info!(model = %n, "model directory removed from the repository; unloading");
            let _ = self.unload_authorized(&n).await;
        }
    }

    fn default_policy(&self) -> VersionPolicy {
        VersionPolicy::parse(&self.core.config().models.version_policy)
            .unwrap_or(VersionPolicy::Latest(1))
    }

    /// Load (or reload) a model: the versions its policy selects. Needs `ManageModels`.
    pub async fn load_model(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        opts: &LoadOptions,
    ) -> Result<Vec<ModelInfo>, EngineError> {
        let args = format!(
            "model={name} device={}",
            opts.device.as_deref().unwrap_or("auto")
        );
        self.core
            .authorised(
                caller,
                Action::ManageModels,
                "LoadModel",
                &args,
                || self.load_authorized(name, opts),
                |v: &Vec<ModelInfo>| {
                    v.iter()
                        .map(|i| {
                            format!(
                                "v{} on {} ({} reserved)",
                                i.version,
                                i.device,
                                gib(i.reservation_bytes)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            )
            .await
    }

    /// Unload every version of a model and return its reservations. Needs `ManageModels`.
    pub async fn unload_model(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        self.core
            .authorised(
                caller,
                Action::ManageModels,
                "UnloadModel",
                &format!("model={name}"),
                || self.unload_authorized(name),
                |_| String::new(),
            )
            .await
    }

    async fn load_authorized(
        self: &Arc<Self>,
        name: &str,
        opts: &LoadOptions,
    ) -> Result<Vec<ModelInfo>, EngineError> {
        repo::check_name(name).map_err(EngineError::invalid)?;
        let repo = self.repository()?;
        let _op = self.ops.lock().await;
        let found = {
            let (repo, n) = (repo.clone(), name.to_string());
            let backend = self.backend.clone();
            tokio::task::spawn_blocking(move || repo::scan_model(&repo, &n, &*backend))
                .await
                .map_err(join_err)?
        };
        let Some(found) = found else {
            return Err(EngineError::not_found(format!(
                "no model {name:?} in repository {}; `kilnctl models list` shows what is there",
                repo.display()
            )));
        };
        if let Some(p) = &found.problem {
            for v in &found.versions {
                self.set(name, v.version, ModelState::Unavailable, p, None);
            }
            return Err(EngineError::precondition(format!("model {name}: {p}")));
        }
        let settings = repo::settings(&found.dir, None).map_err(EngineError::precondition)?;
        let policy = settings
            .version_policy
            .clone()
            .unwrap_or_else(|| self.default_policy());
        let all: Vec<u64> = found.versions.iter().map(|v| v.version).collect();
        let wanted = policy.select(&all);
        if wanted.is_empty() {
            return Err(EngineError::not_found(format!(
                "model {name}: no version matches the version policy {policy:?} (versions on disk: {all:?})"
            )));
        }
        // Versions no longer selected are unloaded first, so their memory is free.
        let stale: Vec<u64> = self
            .table()
            .get(name)
            .map(|s| {
                s.iter()
                    .filter(|(v, s)| s.loaded.is_some() && !wanted.contains(v))
                    .map(|(v, _)| *v)
                    .collect()
            })
            .unwrap_or_default();
        for v in stale {
            self.unload_version(name, v).await;
        }
        for v in &found.versions {
            if !wanted.contains(&v.version) {
                self.set(
                    name,
                    v.version,
                    ModelState::Unavailable,
                    "not selected by the version policy",
                    None,
                );
            }
        }
        let rt = {
            let e = self.clone();
            // OpenVINO sizes its CPU thread pools from the loading thread's affinity.
            tokio::task::spawn_blocking(move || {
                e.core.threads().on_compute(|| e.backend_blocking())
            })
            .await
            .map_err(join_err)??
        };
        let hal: Vec<String> = self
            .devices
            .devices()
            .iter()
            .map(|d| {
                format!(
                    "{} {} ({})",
                    format!("{:?}", d.kind).to_uppercase(),
                    d.id,
                    d.identity.name
                )
            })
            .collect();
        let mut out = Vec::new();
        let mut first_err = None;
        for fv in found
            .versions
            .iter()
            .filter(|v| wanted.contains(&v.version))
        {
            let v = fv.version;
            if let Some(p) = &fv.problem {
                self.set(name, v, ModelState::Unavailable, p, None);
                first_err.get_or_insert(EngineError::precondition(format!(
                    "model {name} version {v}: {p}"
                )));
                continue;
            }
            // A reload replaces a ready version: unload it first so the budget sees its memory.
            let was_ready = self
                .table()
                .get(name)
                .and_then(|s| s.get(&v))
                .is_some_and(|s| s.loaded.is_some());
            if was_ready {
                self.unload_version(name, v).await;
            }
            self.set(name, v, ModelState::Loading, "", None);
            let settings = match repo::settings(&found.dir, Some(v)) {
                Ok(mut s) => {
                    s.precision
                        .get_or_insert(self.core.config().models.precision);
                    s
                }
                Err(e) => {
                    self.set(name, v, ModelState::Unavailable, &e, None);
                    first_err.get_or_insert(EngineError::precondition(e));
                    continue;
                }
            };
            let job = LoadJob {
                name: name.to_string(),
                version: v,
                dir: fv.dir.clone(),
                settings,
                device: opts.device.clone(),
                hal: hal.clone(),
            };
            let e2 = self.clone();
            let rt2 = rt.clone();
            let res = tokio::task::spawn_blocking(move || {
                e2.core.threads().on_compute(|| e2.build(&*rt2, job))
            })
            .await
            .map_err(join_err)
            .and_then(|r| r);
            match res {
                Ok(loaded) => {
                    let info = loaded
                        .info
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    tracing::info!(
                        model = name, version = v, device = %info.device,
                        reserved = %gib(info.reservation_bytes),
                        calibrated_per_s = info.calibrated_per_s,
                        fallback = %info.fallback_reason,
                        "model ready"
                    );
                    self.set(
                        name,
                        v,
                        ModelState::Ready,
                        &info.fallback_reason,
                        Some(Arc::new(loaded)),
                    );
                    out.push(info);
                }
                Err(e) => {
                    tracing::warn!(model = name, version = v, "load failed: {}", e.message);
                    self.set(name, v, ModelState::Unavailable, &e.message, None);
                    first_err.get_or_insert(e);
                }
            }
        }
        self.refresh_component();
        match (out.is_empty(), first_err) {
            (true, Some(e)) => Err(e),
            _ => Ok(out),
        }
    }

    fn refresh_component(&self) {
        let hub = self;
        if hub.backend_ready.load(std::sync::atomic::Ordering::Acquire) {
            let rt = &hub.backend;
            let t = self.table();
            let ready = t
                .values()
                .flat_map(|s| s.values())
                .filter(|s| s.state == ModelState::Ready)
                .count();
            let failed = t
                .values()
                .flat_map(|s| s.values())
                .filter(|s| {
                    s.state == ModelState::Unavailable
                        && !s.reason.is_empty()
                        && !s.reason.starts_with("not ")
                        && s.reason != "unloaded"
                })
                .count();
            let devs = rt
                .devices()
                .map(|d| {
                    d.iter()
                        .map(|d| d.name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let state = if failed > 0 {
                ComponentState::Degraded
            } else {
                ComponentState::Ok
            };
            self.core.set_component(
                "inference",
                state,
                format!(
                    "{} ({devs}); {ready} model versions ready, {failed} failed (`kilnctl models list`)",
                    rt.describe().unwrap_or_default()
                ),
            );
        }
    }

    /// Reserve, read, place, compile, correct the reservation, calibrate, start workers.
    fn build(&self, rt: &dyn InferenceBackend, job: LoadJob) -> Result<Loaded, EngineError> {
        let LoadJob {
            name,
            version,
            dir,
            settings,
            device,
            hal,
        } = job;
        let weights_bytes = rt.weights_bytes(&dir).map_err(port_err)?;
        let owner = format!("model {name} v{version}");
        let estimate = weights_bytes.saturating_mul(WEIGHTS_FACTOR) + MODEL_OVERHEAD_BYTES;
        let mut reservation = self.core.budget().reserve(&owner, estimate).map_err(|e| {
            EngineError::exhausted(format!(
                "model {name} version {version} not loaded (weights {} → estimate {}): {}",
                gib(weights_bytes),
                gib(estimate),
                e
            ))
        })?;
        let devices = rt.devices().map_err(port_err)?;
        let (order, auto) = placement::candidates(device.as_deref(), &settings, &devices);
        let mut tried: Vec<(String, Option<f64>)> =
            order.iter().map(|d| (d.clone(), None)).collect();
        for (d, m) in tried.iter_mut() {
            *m = placement::stored(self.core.db(), &name, version, d, weights_bytes)
                .map(|m| m.per_second);
        }
        if auto {
            // Measured devices first, best first; unmeasured ones get measured below.
            tried.sort_by(|a, b| b.1.unwrap_or(f64::MAX).total_cmp(&a.1.unwrap_or(f64::MAX)));
        }
        let hints = LoadHints {
            performance: if settings.throughput {
                PerformanceHint::Throughput
            } else {
                PerformanceHint::Latency
            },
            precision: settings.precision.unwrap_or_default().hint(),
            pool_size: settings.instances,
            ..Default::default()
        };
        let mut reasons: Vec<String> = Vec::new();
        let mut best: Option<(Arc<dyn LoadedModel>, String, f64)> = None;
        for (dev, measured) in &tried {
            if !placement::listed(dev, &devices) {
                let kind = dev.split('.').next().unwrap_or(dev);
                let seen: Vec<&String> = hal.iter().filter(|h| h.starts_with(kind)).collect();
                let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
                let name = rt.name();
                reasons.push(format!(
                    "{dev}: {name} does not report this device ({name} devices: {}){}",
                    names.join(", "),
                    if seen.is_empty() {
                        "; the HAL sees none either".to_string()
                    } else {
                        format!(
                            "; the HAL sees {} — install its driver and user-space runtime",
                            seen.iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ));
                continue;
            }
            let compiled = (|| -> Result<Arc<dyn LoadedModel>, String> {
                let reshape = if dev.starts_with("NPU") {
                    let inputs = rt.inputs(&dir).map_err(|e| e.to_string())?;
                    placement::static_shapes(&inputs, &settings, dev)?
                } else {
                    Vec::new()
                };
                let mut hints = hints.clone();
                if dev == "CPU" {
                    // The CPU plugin would otherwise pin its threads (and the worker that
                    // calls it) by its own reading of the machine; they keep the compute
                    // CPUs they inherit from the worker and the compiling thread instead.
                    hints
                        .properties
                        .push(("ENABLE_CPU_PINNING".into(), "NO".into()));
                }
                rt.load(&LoadRequest {
                    dir: &dir,
                    device: dev,
                    reshape: &reshape,
                    hints: &hints,
                })
                .map_err(|e| e.to_string())
            })();
            let compiled = match compiled {
                Ok(c) => c,
                Err(e) => {
                    reasons.push(format!("{dev}: {e}"));
                    continue;
                }
            };
            let per_s = match measured {
                Some(m) => *m,
                None => self.calibrate(&*compiled, &name, version, dev, weights_bytes, &settings),
            };
            let better = best.as_ref().is_none_or(|(_, _, b)| per_s > *b);
            if better {
                best = Some((compiled, dev.clone(), per_s));
            }
            // Explicit/preferred placement takes the first device that works; automatic
            // placement compiles every unmeasured device once to measure it.
            if !auto || tried.iter().all(|(_, m)| m.is_some()) {
                break;
            }
        }
        let Some((compiled, dev, per_s)) = best else {
            return Err(EngineError::precondition(format!(
                "model {name} version {version} cannot run on any device: {}",
                reasons.join("; ")
            )));
        };
        let fallback = if dev != order[0] && !auto {
            let r = format!(
                "placed on {dev} instead of {}: {}",
                order[0],
                reasons.join("; ")
            );
            tracing::warn!(model = %name, version, "{r}");
            r
        } else {
            String::new()
        };
        // Correct the estimate with what compiling really cost.
        let measured = u64::try_from(compiled.memory_delta_bytes())
            .unwrap_or(0)
            .max(weights_bytes);
        reservation.resize(measured).map_err(|e| {
            EngineError::exhausted(format!(
                "model {name} version {version} not loaded: compiling it took {} (estimate {}): {}",
                gib(measured),
                gib(estimate),
                e
            ))
        })?;
        let mut max_batch = settings.max_batch;
        let mut notes = fallback.clone();
        if max_batch > 1 {
            let dyn0 = |p: &PortInfo| !p.rank_dynamic && p.shape.first() == Some(&-1);
            if !(compiled.inputs().iter().all(dyn0) && compiled.outputs().iter().all(dyn0)) {
                let r = format!(
                    "batching off: every input and output needs a dynamic first dimension (inputs {:?})",
                    compiled
                        .inputs()
                        .iter()
                        .map(|p| p.shape.clone())
                        .collect::<Vec<_>>()
                );
                tracing::warn!(model = %name, version, "{r}");
                if !notes.is_empty() {
                    notes.push_str("; ");
                }
                notes.push_str(&r);
                max_batch = 1;
            }
        }
        let stats = Arc::new(Stats::new(&name, version, &dev, compiled.precision()));
        let sched = Scheduler::start(
            &owner,
            Arc::new(compiled.clone()),
            stats.clone(),
            self.core.budget().clone(),
            Batching {
                max_batch,
                max_queue_delay: Duration::from_micros(settings.max_queue_delay_us),
                max_queue: settings.max_queue,
            },
            self.core.threads(),
        )
        .map_err(EngineError::internal)?;
        let info = ModelInfo {
            name: name.clone(),
            version,
            state: ModelState::Ready,
            reason: notes,
            path: dir.clone(),
            platform: rt.platform().into(),
            kind: settings.kind.clone(),
            device: dev,
            fallback_reason: fallback,
            reservation_bytes: reservation.bytes(),
            calibrated_per_s: per_s.max(0.0),
            max_batch,
            max_queue_delay_us: settings.max_queue_delay_us,
            pool_size: compiled.pool_size(),
            precision: compiled.precision().to_string(),
            inputs: metas(compiled.inputs()),
            outputs: metas(compiled.outputs()),
        };
        Ok(Loaded {
            info: Mutex::new(info),
            inputs: compiled.inputs().to_vec(),
            outputs: compiled.outputs().to_vec(),
            batched: max_batch > 1,
            stats,
            sched,
            reservation: Mutex::new(Some(reservation)),
        })
    }

    /// Short throughput measurement, stored for next time. -1 when it cannot be measured.
    fn calibrate(
        &self,
        compiled: &dyn LoadedModel,
        name: &str,
        version: u64,
        dev: &str,
        weights_bytes: u64,
        settings: &ModelSettings,
    ) -> f64 {
        let Some(shapes) = placement::calibration_shapes(compiled.inputs(), settings) else {
            return -1.0;
        };
        let refs: Vec<(&str, &[i64])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        let first = kiln_hal::ports::calibrate_with_shapes(compiled, &refs, 2);
        let result = match first {
            // Fast models get a longer run (about 0.2 s) for a stable figure.
            Ok(c) if c.per_second > 200.0 => {
                let n = (c.per_second * 0.2).clamp(50.0, 5000.0) as u32;
                kiln_hal::ports::calibrate_with_shapes(compiled, &refs, n)
            }
            other => other,
        };
        match result {
            Ok(c) => {
                placement::store(
                    self.core.db(),
                    name,
                    version,
                    dev,
                    weights_bytes,
                    c.per_second,
                );
                c.per_second
            }
            Err(e) => {
                tracing::warn!(
                    model = name,
                    version,
                    device = dev,
                    "calibration failed: {e}"
                );
                -1.0
            }
        }
    }

    async fn unload_version(&self, name: &str, version: u64) {
        let loaded = {
            let mut t = self.table_mut();
            let Some(slot) = t.get_mut(name).and_then(|s| s.get_mut(&version)) else {
                return;
            };
            slot.state = ModelState::Unloading;
            slot.loaded.take()
        };
        if let Some(l) = loaded {
            // Return the memory now; the workers finish queued requests, then stop.
            l.reservation
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let _ = tokio::task::spawn_blocking(move || l.sched.shutdown()).await;
        }
        self.set(name, version, ModelState::Unavailable, "unloaded", None);
        tracing::info!(model = name, version, "model unloaded");
    }

    async fn unload_authorized(&self, name: &str) -> Result<(), EngineError> {
        repo::check_name(name).map_err(EngineError::invalid)?;
        let _op = self.ops.lock().await;
        let versions: Vec<u64> = match self.table().get(name) {
            Some(s) => s.keys().copied().collect(),
            None => {
                let on_disk = self
                    .repository()
                    .ok()
                    .and_then(|r| repo::scan_model(&r, name, &*self.backend));
                if on_disk.is_none() {
                    return Err(EngineError::not_found(format!(
                        "no model {name:?} is loaded or in the repository"
                    )));
                }
                Vec::new()
            }
        };
        for v in versions {
            self.unload_version(name, v).await;
        }
        self.refresh_component();
        Ok(())
    }

    /// The loaded version a request addresses: NOT_FOUND for unknown names/versions,
    /// UNAVAILABLE when known but not ready.
    fn resolve(&self, name: &str, version: &str) -> Result<(u64, Arc<Loaded>), EngineError> {
        self.resolve_inner(name, version).map_err(|e| {
            // A missing runtime explains every "not available".
            if e.kind == crate::ErrorKind::Unavailable {
                self.disabled_error().unwrap_or(e)
            } else {
                e
            }
        })
    }

    fn resolve_inner(&self, name: &str, version: &str) -> Result<(u64, Arc<Loaded>), EngineError> {
        let t = self.table();
        let Some(slots) = t.get(name) else {
            drop(t);
            if let Some(e) = self.disabled_error() {
                return Err(e);
            }
            let in_repo = self.repository().ok().and_then(|r| {
                repo::check_name(name)
                    .ok()
                    .and_then(|_| repo::scan_model(&r, name, &*self.backend))
            });
            return Err(match in_repo {
                Some(_) => EngineError::unavailable(format!(
                    "model {name} is in the repository but not loaded; load it with `kilnctl models load {name}`"
                )),
                None => EngineError::not_found(format!(
                    "unknown model {name:?}; `kilnctl models list` shows the repository"
                )),
            });
        };
        if version.is_empty() {
            return slots
                .iter()
                .rev()
                .find_map(|(v, s)| s.loaded.clone().map(|l| (*v, l)))
                .ok_or_else(|| {
                    let why = slots.values().next_back().map(|s| s.reason.clone()).unwrap_or_default();
                    EngineError::unavailable(format!(
                        "model {name} has no ready version ({why}); load it with `kilnctl models load {name}`"
                    ))
                });
        }
        let v: u64 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
            EngineError::not_found(format!(
                "model {name} has no version {version:?}; versions are positive integers"
            ))
        })?;
        match slots.get(&v) {
            None => Err(EngineError::not_found(format!(
                "model {name} has no version {v}; known versions: {:?}",
                slots.keys().collect::<Vec<_>>()
            ))),
            Some(s) => match &s.loaded {
                Some(l) => Ok((v, l.clone())),
                None => Err(EngineError::unavailable(format!(
                    "model {name} version {v} is {} ({}); load it with `kilnctl models load {name}`",
                    s.state.as_str(),
                    s.reason
                ))),
            },
        }
    }

    /// UNAVAILABLE with the discovery text when OpenVINO is missing.
    fn disabled_error(&self) -> Option<EngineError> {
        let c = self.core.component("inference")?;
        (c.state == ComponentState::Disabled)
            .then(|| EngineError::unavailable(format!("model serving is disabled: {}", c.detail)))
    }

    pub fn model_ready(&self, name: &str, version: &str) -> bool {
        self.resolve(name, version).is_ok()
    }

    pub fn model_metadata(&self, name: &str, version: &str) -> Result<ModelMetadata, EngineError> {
        let (_, l) = self.resolve(name, version)?;
        let versions = self
            .table()
            .get(name)
            .map(|s| {
                s.iter()
                    .filter(|(_, s)| s.loaded.is_some())
                    .map(|(v, _)| v.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let info = l.info.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ModelMetadata {
            name: name.into(),
            versions,
            platform: info.platform.clone(),
            inputs: info.inputs.clone(),
            outputs: info.outputs.clone(),
        })
    }

    /// Validate, queue on the model's scheduler, wait for the outputs.
    pub async fn model_infer(&self, mut req: InferRequest) -> Result<InferResponse, EngineError> {
        let (v, l) = self.resolve(&req.model_name, &req.model_version)?;
        let max = match self.max_bytes.load(std::sync::atomic::Ordering::Relaxed) {
            0 => {
                let m = self.core.config().daemon.max_message_bytes;
                self.max_bytes
                    .store(m, std::sync::atomic::Ordering::Relaxed);
                m
            }
            m => m,
        };
        let (inputs, samples) = match validate::inputs(
            &req.model_name.clone(),
            &l.inputs,
            &l.outputs,
            &mut req,
            max,
            l.batched,
        ) {
            Ok(x) => x,
            Err(e) => {
                let z = Duration::ZERO;
                l.stats.request(false, 0, z, (z, z, z), z);
                return Err(e);
            }
        };
        let rx = l.sched.submit(inputs, samples).map_err(|e| match e {
            sched::Refused::Closed => EngineError::unavailable(format!(
                "model {} version {v} is being unloaded",
                req.model_name
            )),
            sched::Refused::Full { depth } => EngineError::exhausted(format!(
                "model {} version {v} has {depth} requests waiting, its limit \
                 (`[batching] max_queue` in its kiln-model.toml); retry later",
                req.model_name
            )),
        })?;
        let outs = rx
            .await
            .map_err(|_| {
                EngineError::unavailable(format!(
                    "model {} version {v} was unloaded during the request",
                    req.model_name
                ))
            })?
            .map_err(port_err)?;
        let outputs = if req.outputs.is_empty() {
            outs
        } else {
            outs.into_iter()
                .filter(|(n, _)| req.outputs.contains(n))
                .collect()
        };
        Ok(InferResponse {
            model_name: req.model_name,
            model_version: v.to_string(),
            id: req.id,
            outputs,
        })
    }

    /// Every model version in the repository (and loaded ones removed from disk since).
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexEntry>, EngineError> {
        let repo = self.repository()?;
        let found = repo::scan(&repo, &*self.backend).map_err(EngineError::unavailable)?;
        let t = self.table();
        let mut out = Vec::new();
        let mut push = |name: &str, v: u64, problem: Option<&String>| {
            let slot = t.get(name).and_then(|s| s.get(&v));
            let (state, reason) = match slot {
                Some(s) => (s.state, s.reason.clone()),
                None => (
                    ModelState::Unavailable,
                    problem.cloned().unwrap_or_else(|| "not loaded".into()),
                ),
            };
            if !ready_only || state == ModelState::Ready {
                out.push(IndexEntry {
                    name: name.into(),
                    version: v.to_string(),
                    state,
                    reason,
                });
            }
        };
        for m in &found {
            for fv in &m.versions {
                push(
                    &m.name,
                    fv.version,
                    fv.problem.as_ref().or(m.problem.as_ref()),
                );
            }
        }
        for (name, slots) in t.iter() {
            for (v, s) in slots {
                let on_disk = found
                    .iter()
                    .any(|m| &m.name == name && m.versions.iter().any(|f| f.version == *v));
                if !on_disk && s.loaded.is_some() {
                    out.push(IndexEntry {
                        name: name.clone(),
                        version: v.to_string(),
                        state: s.state,
                        reason: "removed from the repository; still loaded".into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Statistics of loaded versions: all (empty name), one model, or one version.
    pub fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<ModelStats>, EngineError> {
        if name.is_empty() {
            let t = self.table();
            return Ok(t
                .values()
                .flat_map(|s| s.values())
                .filter_map(|s| s.loaded.as_ref().map(|l| l.stats.snapshot()))
                .collect());
        }
        if version.is_empty() {
            self.resolve(name, "")?;
            let t = self.table();
            return Ok(t
                .get(name)
                .map(|s| {
                    s.values()
                        .filter_map(|s| s.loaded.as_ref().map(|l| l.stats.snapshot()))
                        .collect()
                })
                .unwrap_or_default());
        }
        let (_, l) = self.resolve(name, version)?;
        Ok(vec![l.stats.snapshot()])
    }

    /// Every known model version with placement, reservation and calibration. Scans the
    /// repository directory, so it runs on a blocking thread: every transport calls this.
    pub async fn list_models(self: &Arc<Self>) -> Result<Vec<ModelInfo>, EngineError> {
        let engine = self.clone();
        tokio::task::spawn_blocking(move || engine.models_list())
            .await
            .map_err(|e| EngineError::internal(format!("model listing failed: {e}")))
    }

    /// [`ModelsHub::list_models`] on the calling thread (for callers already off the runtime).
    pub fn models_list(&self) -> Vec<ModelInfo> {
        let mut out = Vec::new();
        let found = self
            .repository()
            .ok()
            .and_then(|r| repo::scan(&r, &*self.backend).ok())
            .unwrap_or_default();
        let t = self.table();
        let mut names: Vec<String> = found.iter().map(|m| m.name.clone()).collect();
        names.extend(t.keys().cloned());
        names.sort();
        names.dedup();
        for name in names {
            let fm = found.iter().find(|m| m.name == name);
            let mut versions: Vec<u64> = fm
                .map(|m| m.versions.iter().map(|v| v.version).collect())
                .unwrap_or_default();
            if let Some(s) = t.get(&name) {
                versions.extend(s.keys().copied());
            }
            versions.sort_unstable();
            versions.dedup();
            for v in versions {
                let slot = t.get(&name).and_then(|s| s.get(&v));
                if let Some(l) = slot.and_then(|s| s.loaded.as_ref()) {
                    let mut i = l.info.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    i.reservation_bytes = l
                        .reservation
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .as_ref()
                        .map_or(0, |r| r.bytes());
                    out.push(i);
                    continue;
                }
                let fv = fm.and_then(|m| m.versions.iter().find(|f| f.version == v));
                let (state, reason) = match slot {
                    Some(s) => (s.state, s.reason.clone()),
                    None => (
                        ModelState::Unavailable,
                        fv.and_then(|f| f.problem.clone())
                            .or_else(|| fm.and_then(|m| m.problem.clone()))
                            .unwrap_or_else(|| "not loaded".into()),
                    ),
                };
                out.push(ModelInfo {
                    name: name.clone(),
                    version: v,
                    state,
                    reason,
                    path: fv.map(|f| f.dir.clone()).unwrap_or_default(),
                    platform: self.backend.platform().into(),
                    kind: String::new(),
                    device: String::new(),
                    fallback_reason: String::new(),
                    reservation_bytes: 0,
                    calibrated_per_s: 0.0,
                    max_batch: 0,
                    max_queue_delay_us: 0,
                    pool_size: 0,
                    precision: String::new(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                });
            }
        }
        out
    }

    /// Stop polling and unload everything (daemon shutdown).
    pub async fn stop_models(&self) {
        if let Some(t) = self.poll.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        let names: Vec<String> = self.table().keys().cloned().collect();
        for n in names {
            let _ = self.unload_authorized(&n).await;
        }
    }
}
