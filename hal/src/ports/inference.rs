//! The inference port: what the engine needs of a backend that runs models (OpenVINO in
//! process today, an NCS2 worker next). A backend lists the devices it can run on, reads a
//! model directory and loads it onto one device; a [`LoadedModel`] runs inferences until it
//! is dropped (dropping it is the unload). Placement, budgets, batching and calibration are
//! the engine's. Pure traits and data; touches nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::PortError;
use super::tensor::{Dtype, Tensor};

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortInfo {
    /// Tensor name (what KServe clients send).
    pub name: String,
    pub dtype: Dtype,
    /// Dimensions, -1 where dynamic (bounded ranges count as dynamic). Empty when the rank
    /// itself is dynamic.
    pub shape: Vec<i64>,
    /// True when even the number of dimensions is unknown.
    pub rank_dynamic: bool,
}

impl PortInfo {
    /// True when every dimension is known.
    pub fn is_static(&self) -> bool {
        !self.rank_dynamic && self.shape.iter().all(|&d| d >= 0)
    }
}

/// A device a backend can run models on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendDevice {
    /// The backend's device name: `CPU`, `GPU`, `GPU.0`, `NPU`, ...
    pub name: String,
    /// Marketing name, e.g. `Intel(R) Arc(TM) Graphics (iGPU)`.
    pub full_name: String,
    /// What it is optimised for, e.g. `["FP32", "INT8", "EXPORT_IMPORT"]`.
    pub optimization_capabilities: Vec<String>,
    /// Architecture (e.g. `intel64`), empty if unknown.
    pub architecture: String,
    /// `integrated` / `discrete`, empty if the device does not say.
    pub device_type: String,
}

/// Latency or throughput first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerformanceHint {
    /// Lowest latency per request (few streams).
    #[default]
    Latency,
    /// Highest throughput with many parallel requests.
    Throughput,
    /// Throughput across several devices.
    CumulativeThroughput,
}

/// Inference precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Full f32: exact comparisons (CPUs with AMX/AVX512-BF16 otherwise pick bf16).
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadHints {
    pub performance: PerformanceHint,
    /// `None` keeps the device default.
    pub precision: Option<Precision>,
    /// Requests the backend should size itself for; `None` keeps its default.
    pub num_requests: Option<u32>,
    /// Concurrent inferences to support; `None` lets the backend choose.
    pub pool_size: Option<usize>,
    /// Backend-specific properties, e.g. `("NUM_STREAMS", "2")`.
    pub properties: Vec<(String, String)>,
}

/// What to load, where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadRequest<'a> {
    /// The version directory holding the model files.
    pub dir: &'a Path,
    /// One of the names [`InferenceBackend::devices`] returned.
    pub device: &'a str,
    /// Static shapes to give dynamic inputs before loading (devices that need them).
    pub reshape: &'a [(String, Vec<i64>)],
    pub hints: &'a LoadHints,
}

/// A backend that runs models. Calls may block (load, device queries): run them on
/// blocking threads.
pub trait InferenceBackend: Send + Sync {
    /// `platform` in KServe model metadata, e.g. `openvino`.
    fn platform(&self) -> &str;
    /// What messages call it, e.g. `OpenVINO`.
    fn name(&self) -> &str;
    /// Where the backend's runtime is, without loading it (cheap; for status at start).
    fn locate(&self) -> Result<String, PortError>;
    /// Loads the runtime if needed and says which one it is ("OpenVINO 2025.4 from …").
    fn describe(&self) -> Result<String, PortError>;
    /// The runtime's version.
    fn version(&self) -> Result<String, PortError>;
    /// Devices the backend can run on now.
    fn devices(&self) -> Result<Vec<BackendDevice>, PortError>;
    /// Checks that `dir` holds a model this backend reads, and returns its weights' size
    /// in bytes (the first memory estimate). Reads no graph.
    fn weights_bytes(&self, dir: &Path) -> Result<u64, PortError>;
    /// The inputs of the model in `dir`, as stored (reads the graph).
    fn inputs(&self, dir: &Path) -> Result<Vec<PortInfo>, PortError>;
    /// Loads the model onto a device.
    fn load(&self, request: &LoadRequest<'_>) -> Result<Arc<dyn LoadedModel>, PortError>;
}

/// A model loaded on one device. Dropping the last handle unloads it.
pub trait LoadedModel: Send + Sync {
    /// Runs one inference on named inputs; outputs come in model order. Blocks; safe to
    /// call from up to [`LoadedModel::pool_size`] threads at once.
    fn infer(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, PortError>;
    /// Concurrent inferences it supports.
    fn pool_size(&self) -> usize;
    fn inputs(&self) -> &[PortInfo];
    fn outputs(&self) -> &[PortInfo];
    /// The precision it runs at (`f32`, `bf16`, ...).
    fn precision(&self) -> &str;
    /// How much the process grew while loading it (bytes, may be negative).
    fn memory_delta_bytes(&self) -> i64;
}

/// Result of a calibration run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Inferences completed per second across the whole pool.
    pub per_second: f64,
    /// Inferences timed (a warm-up run is excluded).
    pub iterations: u64,
    /// Wall time of the timed part.
    pub elapsed: Duration,
}

/// Measures throughput on all-zero inputs of the given shapes, running as many threads as
/// the model supports concurrent inferences (a warm-up run is not timed).
pub fn calibrate_with_shapes(
    model: &dyn LoadedModel,
    shapes: &[(&str, &[i64])],
    iterations: u32,
) -> Result<Calibration, PortError> {
    if iterations == 0 {
        return Err(PortError::invalid(
            "calibration needs at least one iteration",
        ));
    }
    let mut inputs = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let port = model
            .inputs()
            .iter()
            .find(|p| p.name == *name)
            .ok_or_else(|| {
                PortError::invalid(format!(
                    "calibration shape for unknown input {name:?}; inputs are {}",
                    model
                        .inputs()
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        inputs.push((port.name.clone(), Tensor::zeros(port.dtype, shape)?));
    }
    // Warm-up (first inference allocates and may JIT).
    model.infer(&inputs)?;
    let done = AtomicU64::new(0);
    let total = u64::from(iterations);
    let threads = model.pool_size().min(iterations as usize).max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<(), PortError> {
                    while done.fetch_add(1, Ordering::Relaxed) < total {
                        model.infer(&inputs)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join()
                .unwrap_or_else(|_| Err(PortError::internal("calibration: a worker panicked")))
        })
    })?;
    let elapsed = start.elapsed();
    Ok(Calibration {
        per_second: total as f64 / elapsed.as_secs_f64().max(1e-9),
        iterations: total,
        elapsed,
    })
}
