//! The engine's front: the calls every transport makes, each handed to the hub that owns
//! it, and the few that compose hubs (import-and-load). No logic of a hub lives here.

use crate::auth::Caller;
use crate::devices::{Device, Inventory};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::jobs::{JobInfo, JobRequest, ShimCommand};
use crate::models::{
    IndexEntry, InferRequest, InferResponse, LoadOptions, ModelInfo, ModelMetadata, ModelStats,
};
use crate::storage::{ImportOutcome, LoadOutcome, SnapshotInfo, StorageStatus};
use crate::vectors::{Collection, Embeddings, Hit, VectorsStatus};
use kiln_hal::ports::storage::{CmdStat, ModelRollback, PruneReport, RollbackReport};
use std::path::Path;
use tokio::sync::mpsc;

/// Devices.
impl Engine {
    pub fn inventory(&self) -> Inventory {
        self.inner.devices.inventory()
    }

    pub fn devices(&self) -> Vec<Device> {
        self.inner.devices.devices()
    }

    pub fn device(&self, id: &str) -> Result<Device, EngineError> {
        self.inner.devices.device(id)
    }

    pub fn cpu_sets(&self) -> kiln_hal::CpuSets {
        self.inner.devices.cpu_sets()
    }

    /// See [`DeviceHub::rescan`].
    pub async fn rescan_devices(&self, caller: &Caller) -> Result<(), EngineError> {
        self.inner.devices.rescan(caller).await
    }

    /// Start the device monitor thread. Call once, after construction.
    pub fn start_device_monitor(&self) -> Result<(), String> {
        self.inner.devices.start_monitor()
    }

    /// Stop the device monitor thread (shutdown).
    pub fn stop_device_monitor(&self) {
        self.inner.devices.stop_monitor()
    }
}

/// Storage.
impl Engine {
    /// Full storage status (backend, datasets with requested/effective properties and
    /// fallback reasons, pool health, scrub, ARC). Unavailable with the reason when
    /// storage did not open.
    pub async fn storage_status(&self) -> Result<StorageStatus, EngineError> {
        self.inner.storage.storage_status().await
    }

    /// Snapshots of one dataset (`Some("models")`) or all, oldest first.
    pub async fn list_snapshots(&self, ds: Option<&str>) -> Result<Vec<SnapshotInfo>, EngineError> {
        self.inner.storage.list_snapshots(ds).await
    }

    /// Snapshot a dataset. Needs `ManageStorage`.
    pub async fn snapshot(
        &self,
        caller: &Caller,
        ds: &str,
        name: &str,
        keep: bool,
    ) -> Result<SnapshotInfo, EngineError> {
        self.inner.storage.snapshot(caller, ds, name, keep).await
    }

    /// Roll a whole dataset back to a snapshot. Needs `ManageStorage`.
    pub async fn rollback(
        &self,
        caller: &Caller,
        ds: &str,
        name: &str,
        destroy_newer: bool,
    ) -> Result<RollbackReport, EngineError> {
        self.inner
            .storage
            .rollback(caller, ds, name, destroy_newer)
            .await
    }

    /// Restore `models/<name>/` as it was at version `version`. Needs `ManageModels`.
    pub async fn rollback_model(
        &self,
        caller: &Caller,
        name: &str,
        version: u32,
    ) -> Result<ModelRollback, EngineError> {
        self.inner
            .storage
            .rollback_model(caller, name, version)
            .await
    }

    /// Apply the retention grid to one dataset or all four. Needs `ManageStorage`.
    pub async fn prune(
        &self,
        caller: &Caller,
        ds: Option<&str>,
    ) -> Result<Vec<PruneReport>, EngineError> {
        self.inner.storage.prune(caller, ds).await
    }

    /// Import `src` as the next version of model `name` (see
    /// [`crate::storage::StorageHub::import_model`]), then load it when `load`: a failed
    /// load is reported beside the import, which stays.
    pub async fn import_model(
        &self,
        caller: &Caller,
        src: &Path,
        name: &str,
        load: bool,
        progress: impl FnMut(u64, u64) + Send + 'static,
    ) -> Result<ImportOutcome, EngineError> {
        let import = self
            .inner
            .storage
            .import_model(caller, src, name, load, progress)
            .await?;
        let load = if load {
            let opts = crate::models::LoadOptions::default();
            Some(
                match self.inner.models.load_model(caller, name, &opts).await {
                    Ok(v) => LoadOutcome {
                        ok: true,
                        detail: v
                            .iter()
                            .map(|i| format!("v{} on {}", i.version, i.device))
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                    Err(e) => LoadOutcome {
                        ok: false,
                        detail: e.message,
                    },
                },
            )
        } else {
            None
        };
        Ok(ImportOutcome { import, load })
    }

    /// `zfs`/`zpool` call statistics (empty for the dir backend or without storage).
    pub fn storage_command_metrics(&self) -> Vec<CmdStat> {
        self.inner.storage.storage_command_metrics()
    }

    /// History retention, the storage metrics and the scrub schedule. Call once, inside
    /// the runtime.
    pub fn start_storage(&self) {
        self.core().start_history_retention();
        self.inner.storage.start();
    }
}

/// Models.
impl Engine {
    /// Check for the inference runtime, load the repository's models (when configured) and
    /// start polling (control = "poll"). Call once after the device monitor started; kilnd
    /// is not ready until this returns. Never fails: problems are recorded per model and in
    /// component `inference`.
    pub async fn start_models(&self) {
        self.inner.models.start_models().await
    }

    /// Load (or reload) a model: the versions its policy selects. Needs `ManageModels`.
    pub async fn load_model(
        &self,
        caller: &Caller,
        name: &str,
        opts: &LoadOptions,
    ) -> Result<Vec<ModelInfo>, EngineError> {
        self.inner.models.load_model(caller, name, opts).await
    }

    /// Unload every version of a model and return its reservations. Needs `ManageModels`.
    pub async fn unload_model(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        self.inner.models.unload_model(caller, name).await
    }

    pub fn model_ready(&self, name: &str, version: &str) -> bool {
        self.inner.models.model_ready(name, version)
    }

    pub fn model_metadata(&self, name: &str, version: &str) -> Result<ModelMetadata, EngineError> {
        self.inner.models.model_metadata(name, version)
    }

    pub async fn model_infer(&self, req: InferRequest) -> Result<InferResponse, EngineError> {
        self.inner.models.model_infer(req).await
    }

    /// Every model version in the repository (and loaded ones removed from disk since).
    pub fn repository_index(&self, ready_only: bool) -> Result<Vec<IndexEntry>, EngineError> {
        self.inner.models.repository_index(ready_only)
    }

    pub fn model_statistics(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Vec<ModelStats>, EngineError> {
        self.inner.models.model_statistics(name, version)
    }

    /// Everything known about every model version (reads the repository off the runtime).
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>, EngineError> {
        self.inner.models.list_models().await
    }

    /// [`Engine::list_models`] on the calling thread (for callers already off the runtime).
    pub fn models_list(&self) -> Vec<ModelInfo> {
        self.inner.models.models_list()
    }

    pub async fn stop_models(&self) {
        self.inner.models.stop_models().await
    }
}

/// Vectors.
impl Engine {
    /// Open the collections on the embeddings dataset, start the pinned search threads and
    /// reserve each collection's memory. Never fails: problems go to component `vectors`.
    pub async fn start_vectors(&self) {
        self.inner.vectors.start_vectors().await
    }

    pub fn vectors_status(&self) -> Result<VectorsStatus, EngineError> {
        self.inner.vectors.vectors_status()
    }

    /// Create an empty collection. Needs `ManageModels`.
    pub async fn vectors_create(
        &self,
        caller: &Caller,
        name: &str,
        dim: u64,
        metric: &str,
        quantisation: &str,
    ) -> Result<Collection, EngineError> {
        self.inner
            .vectors
            .vectors_create(caller, name, dim, metric, quantisation)
            .await
    }

    /// Add vectors with optional metadata (all-or-nothing, durable on return).
    pub async fn vectors_add(
        &self,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
        vectors: Vec<f32>,
        metadata: Option<Vec<String>>,
    ) -> Result<usize, EngineError> {
        self.inner
            .vectors
            .vectors_add(caller, name, ids, vectors, metadata)
            .await
    }

    pub async fn vectors_delete(
        &self,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
    ) -> Result<usize, EngineError> {
        self.inner.vectors.vectors_delete(caller, name, ids).await
    }

    pub async fn vectors_drop(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        self.inner.vectors.vectors_drop(caller, name).await
    }

    /// Top-`k` per query; needs read access (`org.kiln.read-data`): hits carry metadata.
    pub async fn vectors_search(
        &self,
        caller: &Caller,
        name: &str,
        queries: Vec<f32>,
        k: i64,
    ) -> Result<Vec<Vec<Hit>>, EngineError> {
        self.core().may_read(caller).await?;
        self.inner.vectors.vectors_search(name, queries, k).await
    }

    pub fn vectors_stats(&self, name: &str) -> Result<Collection, EngineError> {
        self.inner.vectors.vectors_stats(name)
    }

    pub fn vectors_list(&self) -> Result<Vec<Collection>, EngineError> {
        self.inner.vectors.vectors_list()
    }

    pub fn vectors_reservation(&self, name: &str) -> u64 {
        self.inner.vectors.vectors_reservation(name)
    }

    pub async fn embed(
        &self,
        texts: Vec<String>,
        model: Option<&str>,
    ) -> Result<Embeddings, EngineError> {
        self.inner.vectors.embed(texts, model).await
    }

    pub async fn embed_and_add(
        &self,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
        texts: Vec<String>,
        metadata: Option<Vec<String>>,
        model: Option<&str>,
    ) -> Result<usize, EngineError> {
        self.inner
            .vectors
            .embed_and_add(caller, name, ids, texts, metadata, model)
            .await
    }

    /// Embed `texts` and search with them; needs read access, like [`Engine::vectors_search`].
    pub async fn search_text(
        &self,
        caller: &Caller,
        name: &str,
        texts: Vec<String>,
        k: i64,
        model: Option<&str>,
    ) -> Result<Vec<Vec<Hit>>, EngineError> {
        self.core().may_read(caller).await?;
        self.inner.vectors.search_text(name, texts, k, model).await
    }
}

/// Jobs.
impl Engine {
    pub fn get_job(&self, id: u64) -> Result<JobInfo, EngineError> {
        self.inner.jobs.get_job(id)
    }

    /// A job as `caller` may see it: needs read access (`org.kiln.read-data`), and
    /// environment values are the owner's and root's.
    pub async fn job_for(&self, caller: &Caller, id: u64) -> Result<JobInfo, EngineError> {
        self.core().may_read(caller).await?;
        self.inner.jobs.job_for(caller, id)
    }

    /// Every job as `caller` may see it (see [`Engine::job_for`]).
    pub async fn jobs_for(&self, caller: &Caller) -> Result<Vec<JobInfo>, EngineError> {
        self.core().may_read(caller).await?;
        self.inner.jobs.jobs_for(caller)
    }

    pub fn list_jobs(&self) -> Result<Vec<JobInfo>, EngineError> {
        self.inner.jobs.list_jobs()
    }

    /// Queue a job; the engine fills in what the request leaves out, the same for every
    /// transport. Needs `ManageJobs`.
    pub async fn submit_job(
        &self,
        caller: &Caller,
        request: JobRequest,
    ) -> Result<JobInfo, EngineError> {
        self.inner.jobs.submit_job(caller, request).await
    }

    /// Cancel a job (its owner or root). Needs `ManageJobs`.
    pub async fn cancel_job(&self, caller: &Caller, id: u64) -> Result<JobInfo, EngineError> {
        self.inner.jobs.cancel_job(caller, id).await
    }

    pub async fn checkpoint_job(
        &self,
        caller: &Caller,
        id: u64,
        label: &str,
    ) -> Result<String, EngineError> {
        self.inner.jobs.checkpoint_job(caller, id, label).await
    }

    /// Pick the launcher, re-adopt jobs left by a previous daemon, requeue waiting ones and
    /// run the scheduler. Call once, inside the runtime.
    pub async fn start_jobs(&self, shim: ShimCommand) {
        let chosen = match self.inner.jobs.given() {
            Some(given) => given,
            None => crate::wiring::job_launchers(&self.config().jobs.launcher, shim).await,
        };
        self.inner.jobs.start_jobs(chosen).await
    }

    /// The job's output: what is there now and, with `follow`, new output until it ends.
    pub fn job_logs(
        &self,
        id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, EngineError>>, EngineError> {
        self.inner.jobs.job_logs(id, follow)
    }
}
