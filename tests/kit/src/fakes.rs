//! Fake ports: in-memory implementations of the `kiln_hal::ports` traits, for engine hub
//! tests that run without OpenVINO, zfs-fuse or a bus. Each fake records what it was asked
//! and can be told to fail, so a test asserts both the engine's answer and what reached
//! the port. Touches only the directories a test hands it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kiln_hal::ports::{
    Adopted, BackendDevice, CollectionInfo, Dtype, ExitRecord, Hit, IndexOptions, IndexPool,
    InferenceBackend, JobLauncher, JobRecord, LaunchPlan, LoadRequest, LoadedModel, Metric,
    OpenIndex, PortError, PortInfo, Quantisation, RunningJob, StartedInfo, Tensor, VectorIndex,
};

/// The file that makes a directory a fake model: `<name> <DTYPE> <dims,...>` per input,
/// one per line; outputs are named `<input>_out` and hold the input times [`SCALE`].
pub const MODEL_FILE: &str = "fake-model.txt";
/// What a fake model multiplies FP32 inputs by.
pub const SCALE: f32 = 2.0;

/// Writes a fake model version: `dir/<name>/<version>/fake-model.txt` with the given
/// inputs, padded to `weights_bytes` so the first memory estimate is predictable.
pub fn write_model(
    repo: &Path,
    name: &str,
    version: u64,
    inputs: &[(&str, Dtype, &[i64])],
    weights_bytes: usize,
) {
    let dir = repo.join(name).join(version.to_string());
    std::fs::create_dir_all(&dir).expect("create a fake model directory");
    let mut text = String::new();
    for (n, d, s) in inputs {
        let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        text.push_str(&format!("{n} {} {}\n", d.kserve_name(), dims.join(",")));
    }
    if text.len() < weights_bytes {
        text.push_str(&"#".repeat(weights_bytes - text.len()));
    }
    std::fs::write(dir.join(MODEL_FILE), text).expect("write a fake model");
}

fn read_inputs(dir: &Path) -> Result<Vec<PortInfo>, PortError> {
    let text = std::fs::read_to_string(dir.join(MODEL_FILE)).map_err(|e| {
        PortError::not_found(format!("model at {}: no {MODEL_FILE} ({e})", dir.display()))
    })?;
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let line = line.trim_end_matches('#');
        let mut f = line.split(' ');
        let (Some(name), Some(dtype), Some(dims)) = (f.next(), f.next(), f.next()) else {
            return Err(PortError::invalid(format!("bad fake model line {line:?}")));
        };
        let shape = dims
            .split(',')
            .map(|d| d.parse::<i64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PortError::invalid(format!("bad dims {dims:?}: {e}")))?;
        out.push(PortInfo {
            name: name.into(),
            dtype: Dtype::from_kserve(dtype)?,
            shape,
            rank_dynamic: false,
        });
    }
    Ok(out)
}

/// Static shapes a load asked for, per input.
pub type Reshape = Vec<(String, Vec<i64>)>;

/// What a [`FakeBackend`] was asked.
#[derive(Debug, Default)]
pub struct Calls {
    /// `(device, reshape)` of every load that reached the backend.
    pub loads: Mutex<Vec<(String, Reshape)>>,
    /// Inferences run by every model it loaded.
    pub infers: AtomicUsize,
    /// Models loaded and not yet dropped.
    pub live_models: AtomicUsize,
}

/// An inference backend with a configurable device list and failures.
pub struct FakeBackend {
    /// Device names it offers (`CPU`, `NPU`, ...).
    pub devices: Mutex<Vec<String>>,
    /// Devices whose loads fail, with the message.
    pub failing: Mutex<Vec<(String, String)>>,
    /// `Some(why)`: the runtime is missing and every call fails with it.
    pub missing: Mutex<Option<String>>,
    /// Bytes each load reports the process grew by.
    pub memory_delta: Mutex<i64>,
    /// Concurrent inferences each loaded model supports.
    pub pool_size: usize,
    pub calls: Arc<Calls>,
}

impl Default for FakeBackend {
    fn default() -> FakeBackend {
        FakeBackend {
            devices: Mutex::new(vec!["CPU".into()]),
            failing: Mutex::new(Vec::new()),
            missing: Mutex::new(None),
            memory_delta: Mutex::new(0),
            pool_size: 1,
            calls: Arc::default(),
        }
    }
}

impl FakeBackend {
    /// A backend offering these devices.
    pub fn with_devices(devices: &[&str]) -> FakeBackend {
        let b = FakeBackend::default();
        *b.devices.lock().unwrap() = devices.iter().map(|d| d.to_string()).collect();
        b
    }

    /// Makes loads on `device` fail with `message`.
    pub fn fail_loads_on(&self, device: &str, message: &str) {
        self.failing
            .lock()
            .unwrap()
            .push((device.into(), message.into()));
    }

    fn present(&self) -> Result<(), PortError> {
        match &*self.missing.lock().unwrap() {
            Some(why) => Err(PortError::not_found(why.clone())),
            None => Ok(()),
        }
    }
}

impl InferenceBackend for FakeBackend {
    fn platform(&self) -> &str {
        "fake"
    }

    fn name(&self) -> &str {
        "fake"
    }

    fn locate(&self) -> Result<String, PortError> {
        self.present()?;
        Ok("fake runtime found in memory".into())
    }

    fn describe(&self) -> Result<String, PortError> {
        self.present()?;
        Ok("fake runtime 1.0".into())
    }

    fn version(&self) -> Result<String, PortError> {
        self.present()?;
        Ok("1.0".into())
    }

    fn devices(&self) -> Result<Vec<BackendDevice>, PortError> {
        self.present()?;
        Ok(self
            .devices
            .lock()
            .unwrap()
            .iter()
            .map(|n| BackendDevice {
                name: n.clone(),
                full_name: format!("fake {n}"),
                optimization_capabilities: vec!["FP32".into()],
                architecture: String::new(),
                device_type: String::new(),
            })
            .collect())
    }

    fn weights_bytes(&self, dir: &Path) -> Result<u64, PortError> {
        std::fs::metadata(dir.join(MODEL_FILE))
            .map(|m| m.len())
            .map_err(|e| {
                PortError::not_found(format!(
                    "model at {}: no {MODEL_FILE} in this directory ({e})",
                    dir.display()
                ))
            })
    }

    fn inputs(&self, dir: &Path) -> Result<Vec<PortInfo>, PortError> {
        self.present()?;
        read_inputs(dir)
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<Arc<dyn LoadedModel>, PortError> {
        self.present()?;
        self.calls
            .loads
            .lock()
            .unwrap()
            .push((req.device.to_string(), req.reshape.to_vec()));
        if let Some((_, why)) = self
            .failing
            .lock()
            .unwrap()
            .iter()
            .find(|(d, _)| d == req.device)
        {
            return Err(PortError::internal(why.clone()));
        }
        let mut inputs = read_inputs(req.dir)?;
        for (name, shape) in req.reshape {
            if let Some(p) = inputs.iter_mut().find(|p| &p.name == name) {
                p.shape = shape.clone();
            }
        }
        let outputs = inputs
            .iter()
            .map(|p| PortInfo {
                name: format!("{}_out", p.name),
                ..p.clone()
            })
            .collect();
        self.calls.live_models.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(FakeModel {
            inputs,
            outputs,
            pool_size: self.pool_size,
            memory_delta: *self.memory_delta.lock().unwrap(),
            precision: req.hints.precision.map_or("f32", |p| p.as_str()),
            calls: self.calls.clone(),
        }))
    }
}

/// A model a [`FakeBackend`] loaded: FP32 outputs are the inputs times [`SCALE`], other
/// dtypes are echoed.
pub struct FakeModel {
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    pool_size: usize,
    memory_delta: i64,
    precision: &'static str,
    calls: Arc<Calls>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.calls.live_models.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LoadedModel for FakeModel {
    fn infer(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, PortError> {
        self.calls.infers.fetch_add(1, Ordering::SeqCst);
        let mut out = Vec::new();
        for port in &self.inputs {
            let (_, t) = inputs
                .iter()
                .find(|(n, _)| n == &port.name)
                .ok_or_else(|| PortError::invalid(format!("input {} missing", port.name)))?;
            let t = if t.dtype == Dtype::F32 {
                let v: Vec<f32> = t.to_f32()?.iter().map(|x| x * SCALE).collect();
                Tensor::from_f32(&t.shape, &v)?
            } else {
                t.clone()
            };
            out.push((format!("{}_out", port.name), t));
        }
        Ok(out)
    }

    fn pool_size(&self) -> usize {
        self.pool_size
    }

    fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    fn precision(&self) -> &str {
        self.precision
    }

    fn memory_delta_bytes(&self) -> i64 {
        self.memory_delta
    }
}

/// How a [`FakeLauncher`]'s job is doing, shared between the launcher, the job and the
/// test that decides when it ends.
#[derive(Debug, Default)]
pub struct FakeJobState {
    /// `Some`: the job has ended with this record (the test sets it, or a cancel does).
    pub exit: Option<ExitRecord>,
    pub cancelled: bool,
}

/// What a [`FakeLauncher`] was asked.
#[derive(Debug, Default)]
pub struct LaunchCalls {
    /// Every plan it was asked to start, in order.
    pub started: Vec<LaunchPlan>,
    /// Records it was asked to adopt.
    pub adopted: Vec<JobRecord>,
    /// Each started job's state, by job id.
    pub jobs: std::collections::BTreeMap<u64, Arc<Mutex<FakeJobState>>>,
}

/// A job launcher that runs nothing: each start makes a job that runs until the test
/// ends it ([`FakeLauncher::finish`]) or it is cancelled.
#[derive(Default)]
pub struct FakeLauncher {
    pub calls: Mutex<LaunchCalls>,
    /// `Some(kind, message)`: every start fails so.
    pub refuse: Mutex<Option<(kiln_hal::ports::ErrorKind, String)>>,
    /// What adopting any record finds: `None` means it is still running.
    pub adopt_as: Mutex<Option<ExitRecord>>,
}

impl FakeLauncher {
    /// Ends job `id` with `code` (0: success).
    pub fn finish(&self, id: u64, code: i32) {
        let calls = self.calls.lock().unwrap();
        let job = calls.jobs.get(&id).expect("the job was started");
        job.lock().unwrap().exit = Some(ExitRecord {
            code: Some(code),
            signal: None,
            reason: "exited".into(),
            detail: String::new(),
            finished_at: 0,
        });
    }

    /// The plans started so far.
    pub fn started(&self) -> Vec<LaunchPlan> {
        self.calls.lock().unwrap().started.clone()
    }

    fn job(&self, record: JobRecord) -> Box<dyn RunningJob> {
        let state = self
            .calls
            .lock()
            .unwrap()
            .jobs
            .entry(record.job_id)
            .or_default()
            .clone();
        Box::new(FakeJob {
            started: StartedInfo {
                shim_pid: record.shim_pid,
                shim_start_ticks: record.shim_start_ticks,
                pid: record.pid,
                started_at: 0,
                cpus: String::new(),
                memory_limit: "fake".into(),
                cgroup: None,
                cgroup_note: None,
            },
            record,
            state,
        })
    }
}

impl JobLauncher for FakeLauncher {
    fn describe(&self) -> String {
        "fake launcher".into()
    }

    fn start(&self, plan: &LaunchPlan) -> Result<Box<dyn RunningJob>, PortError> {
        if let Some((kind, msg)) = &*self.refuse.lock().unwrap() {
            return Err(PortError::new(*kind, msg.clone()));
        }
        self.calls.lock().unwrap().started.push(plan.clone());
        let mut job = self.job(JobRecord {
            job_id: plan.job_id,
            run_dir: plan.run_dir.clone(),
            shim_pid: 1_000_000 + plan.job_id as i32,
            shim_start_ticks: 1,
            pid: 2_000_000 + plan.job_id as i32,
            checkpoint_dir: plan.checkpoint_dir.clone(),
            unit: None,
        });
        let _ = job.poll();
        Ok(job)
    }

    fn adopt(&self, record: &JobRecord) -> Adopted {
        self.calls.lock().unwrap().adopted.push(record.clone());
        match self.adopt_as.lock().unwrap().clone() {
            Some(exit) => Adopted::Finished(exit),
            None => Adopted::Running(self.job(record.clone())),
        }
    }

    fn started_record(
        &self,
        _job_id: u64,
        _run_dir: &Path,
        _checkpoint_dir: &Path,
    ) -> Option<(JobRecord, StartedInfo)> {
        None
    }

    fn take_checkpoint_request(&self, checkpoint_dir: &Path) -> Option<String> {
        let marker = checkpoint_dir.join(".checkpoint");
        let label = std::fs::read_to_string(&marker).ok()?;
        std::fs::remove_file(&marker).ok()?;
        Some(label.trim().to_string())
    }

    fn memory_used(&self, _started: &StartedInfo) -> Option<u64> {
        Some(4096)
    }
}

struct FakeJob {
    record: JobRecord,
    started: StartedInfo,
    state: Arc<Mutex<FakeJobState>>,
}

impl RunningJob for FakeJob {
    fn record(&self) -> &JobRecord {
        &self.record
    }

    fn started(&self) -> &StartedInfo {
        &self.started
    }

    fn poll(&mut self) -> Option<ExitRecord> {
        self.state.lock().unwrap().exit.clone()
    }

    fn cancel(&mut self) -> Result<(), PortError> {
        let mut st = self.state.lock().unwrap();
        if st.exit.is_some() {
            return Err(PortError::precondition(format!(
                "job {} has already ended",
                self.record.job_id
            )));
        }
        st.cancelled = true;
        st.exit = Some(ExitRecord {
            code: None,
            signal: Some(15),
            reason: "cancelled".into(),
            detail: String::new(),
            finished_at: 0,
        });
        Ok(())
    }
}

/// One collection of a [`FakeIndex`].
#[derive(Debug, Clone)]
struct FakeCollection {
    dim: usize,
    metric: Metric,
    quantisation: Quantisation,
    rows: Vec<(u64, Vec<f32>, Option<String>)>,
}

/// An in-memory vector index: exact inner-product search, 4 bytes per float held, and
/// failures on demand.
#[derive(Default)]
pub struct FakeIndex {
    collections: Mutex<std::collections::BTreeMap<String, FakeCollection>>,
    /// `Some(why)`: opening the index fails so.
    pub open_fails: Mutex<Option<String>>,
    /// `Some(why)`: the next add fails so (an I/O error), changing nothing.
    pub fail_next_add: Mutex<Option<String>>,
    /// Searches that reached the index.
    pub searches: AtomicUsize,
}

impl FakeIndex {
    /// The port's opener over this index (what the wiring hands the engine).
    pub fn opener(self: &Arc<FakeIndex>) -> Arc<OpenIndex> {
        let me = self.clone();
        Arc::new(move |_root: &Path, _opts: IndexOptions| {
            if let Some(why) = me.open_fails.lock().unwrap().clone() {
                return Err(PortError::internal(why));
            }
            Ok(me.clone() as Arc<dyn VectorIndex>)
        })
    }

    fn info(name: &str, c: &FakeCollection) -> CollectionInfo {
        CollectionInfo {
            name: name.into(),
            dim: c.dim,
            metric: c.metric,
            quantisation: c.quantisation,
            count: c.rows.len(),
            memory_bytes: c.rows.len() * c.dim * 4,
            disk_bytes: 0,
            segments: 0,
        }
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut FakeCollection) -> Result<T, PortError>,
    ) -> Result<T, PortError> {
        let mut cs = self.collections.lock().unwrap();
        let c = cs
            .get_mut(name)
            .ok_or_else(|| PortError::not_found(format!("unknown collection `{name}`")))?;
        f(c)
    }
}

impl VectorIndex for FakeIndex {
    fn create(
        &self,
        name: &str,
        dim: usize,
        metric: Metric,
        quantisation: Quantisation,
    ) -> Result<CollectionInfo, PortError> {
        let mut cs = self.collections.lock().unwrap();
        if cs.contains_key(name) {
            return Err(PortError::exists(format!(
                "collection `{name}` already exists"
            )));
        }
        let c = FakeCollection {
            dim,
            metric,
            quantisation,
            rows: Vec::new(),
        };
        let info = FakeIndex::info(name, &c);
        cs.insert(name.into(), c);
        Ok(info)
    }

    fn add(
        &self,
        name: &str,
        ids: &[u64],
        vectors: &[f32],
        metadata: Option<Vec<String>>,
    ) -> Result<usize, PortError> {
        if let Some(why) = self.fail_next_add.lock().unwrap().take() {
            return Err(PortError::internal(why));
        }
        self.with(name, |c| {
            if vectors.len() != ids.len() * c.dim {
                return Err(PortError::invalid(format!(
                    "{} floats for {} ids of dimension {}",
                    vectors.len(),
                    ids.len(),
                    c.dim
                )));
            }
            for (i, id) in ids.iter().enumerate() {
                let meta = metadata.as_ref().and_then(|m| m.get(i).cloned());
                let v = vectors[i * c.dim..(i + 1) * c.dim].to_vec();
                c.rows.push((*id, v, meta));
            }
            Ok(c.rows.len())
        })
    }

    fn delete(&self, name: &str, ids: &[u64]) -> Result<usize, PortError> {
        self.with(name, |c| {
            if let Some(id) = ids.iter().find(|id| !c.rows.iter().any(|r| r.0 == **id)) {
                return Err(PortError::not_found(format!("unknown id {id}")));
            }
            c.rows.retain(|r| !ids.contains(&r.0));
            Ok(c.rows.len())
        })
    }

    fn drop_collection(&self, name: &str) -> Result<(), PortError> {
        self.collections
            .lock()
            .unwrap()
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| PortError::not_found(format!("unknown collection `{name}`")))
    }

    fn search(&self, name: &str, queries: &[f32], k: i64) -> Result<Vec<Vec<Hit>>, PortError> {
        self.searches.fetch_add(1, Ordering::SeqCst);
        self.with(name, |c| {
            let k = usize::try_from(k).map_err(|_| PortError::invalid("k must be at least 1"))?;
            Ok(queries
                .chunks(c.dim)
                .map(|q| {
                    let mut hits: Vec<Hit> = c
                        .rows
                        .iter()
                        .map(|(id, v, m)| Hit {
                            id: *id,
                            score: v.iter().zip(q).map(|(a, b)| a * b).sum(),
                            metadata: m.clone(),
                        })
                        .collect();
                    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
                    hits.truncate(k);
                    hits
                })
                .collect())
        })
    }

    fn stats(&self, name: &str) -> Result<CollectionInfo, PortError> {
        self.with(name, |c| Ok(FakeIndex::info(name, c)))
    }

    fn list(&self) -> Vec<CollectionInfo> {
        self.collections
            .lock()
            .unwrap()
            .iter()
            .map(|(n, c)| FakeIndex::info(n, c))
            .collect()
    }

    fn memory_bytes(&self, name: &str) -> Result<usize, PortError> {
        Ok(self.stats(name)?.memory_bytes)
    }

    fn estimate_add_bytes(
        &self,
        name: &str,
        count: usize,
        metadata_bytes: usize,
    ) -> Result<usize, PortError> {
        self.with(name, |c| Ok(count * c.dim * 4 + metadata_bytes))
    }

    fn load_problems(&self) -> Vec<String> {
        Vec::new()
    }

    fn pool(&self) -> IndexPool {
        IndexPool {
            threads: 1,
            cpus: vec![0],
            isa: "scalar".into(),
        }
    }

    fn root(&self) -> std::path::PathBuf {
        "/fake/collections".into()
    }
}
