//! A model compiled for one device plus a pool of infer requests, sized from the device's
//! `OPTIMAL_NUMBER_OF_INFER_REQUESTS`, so any number of threads can infer concurrently.
//! Validates every input before it reaches OpenVINO. Calls OpenVINO only.

use std::sync::{Condvar, Mutex};

use openvino::{InferRequest, PropertyKey, RwPropertyKey};
use openvino_sys::{ov_shape_t, ov_status_e, ov_tensor_set_shape, ov_tensor_t};

use crate::error::{OvError, Result};
use crate::model::{names, port_from_node};
use crate::types::dtype_of;
use kiln_hal::ports::{Calibration, PortInfo, Tensor, TensorView, calibrate_with_shapes};

/// A compiled model with its request pool. `Send + Sync`: share it behind an `Arc`.
pub struct CompiledModel {
    // Field order matters: requests are dropped before the compiled model.
    pool: Mutex<Vec<InferRequest>>,
    available: Condvar,
    inner: Mutex<openvino::CompiledModel>,
    device: String,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
    pool_size: usize,
    optimal_requests: u32,
    precision: String,
    performance_hint: String,
    memory_delta_bytes: i64,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("device", &self.device)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("pool_size", &self.pool_size)
            .field("optimal_requests", &self.optimal_requests)
            .field("precision", &self.precision)
            .field("performance_hint", &self.performance_hint)
            .field("memory_delta_bytes", &self.memory_delta_bytes)
            .finish()
    }
}

impl CompiledModel {
    pub(crate) fn new(
        mut inner: openvino::CompiledModel,
        device: &str,
        pool_size: Option<usize>,
        memory_delta_bytes: i64,
    ) -> Result<CompiledModel> {
        let (inputs, outputs) = compiled_ports(&inner)?;
        let optimal_requests = inner
            .get_property(&PropertyKey::OptimalNumberOfInferRequests)
            .map_err(|e| OvError::runtime("read OPTIMAL_NUMBER_OF_INFER_REQUESTS", e))?
            .trim()
            .parse::<u32>()
            .unwrap_or(1)
            .max(1);
        let read = |inner: &openvino::CompiledModel, key: RwPropertyKey| {
            inner
                .get_property(&key.into())
                .map(|s| s.into_owned())
                .unwrap_or_default()
        };
        let precision = read(&inner, RwPropertyKey::HintInferencePrecision);
        let performance_hint = read(&inner, RwPropertyKey::HintPerformanceMode);
        let pool_size = pool_size.unwrap_or(optimal_requests as usize);
        let mut pool = Vec::with_capacity(pool_size);
        for i in 0..pool_size {
            pool.push(
                inner
                    .create_infer_request()
                    .map_err(|e| OvError::runtime(format!("create infer request {i}"), e))?,
            );
        }
        Ok(CompiledModel {
            pool: Mutex::new(pool),
            available: Condvar::new(),
            inner: Mutex::new(inner),
            device: device.to_string(),
            inputs,
            outputs,
            pool_size,
            optimal_requests,
            precision,
            performance_hint,
            memory_delta_bytes,
        })
    }

    /// Device it was compiled for.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Inputs (as compiled: shapes reflect any reshape).
    pub fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    /// Outputs.
    pub fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    /// `OPTIMAL_NUMBER_OF_INFER_REQUESTS` reported by the device.
    pub fn optimal_requests(&self) -> u32 {
        self.optimal_requests
    }

    /// Number of pooled infer requests (= concurrent inferences).
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// `INFERENCE_PRECISION_HINT` in effect (e.g. `f32`), empty if the device does not say.
    pub fn precision(&self) -> &str {
        &self.precision
    }

    /// `PERFORMANCE_HINT` in effect.
    pub fn performance_hint(&self) -> &str {
        &self.performance_hint
    }

    /// Process RSS after compile minus before (bytes; can be negative or include unrelated
    /// allocations by other threads). Use it to correct a weights-based reservation.
    pub fn memory_delta_bytes(&self) -> i64 {
        self.memory_delta_bytes
    }

    /// Read any property of the compiled model.
    pub fn property(&self, key: &str) -> Result<String> {
        crate::runtime::check_c_string(key, "property name")?;
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .get_property(&PropertyKey::Other(key.to_string().into()))
            .map(|s| s.into_owned())
            .map_err(|e| OvError::runtime(format!("read {key}"), e))
    }

    /// Validate inputs against the model: every input present once, known names, dtypes,
    /// ranks, fixed dimensions and byte sizes. Errors name the tensor and the expected value.
    pub fn validate(&self, inputs: &[(&str, TensorView<'_>)]) -> Result<()> {
        for (i, (name, view)) in inputs.iter().enumerate() {
            let port = self
                .inputs
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| {
                    OvError::InvalidInput(format!(
                        "unknown input tensor {name:?}; the model's inputs are {}",
                        names(&self.inputs)
                    ))
                })?;
            if inputs[..i].iter().any(|(n, _)| n == name) {
                return Err(OvError::InvalidInput(format!(
                    "input tensor {name} is given more than once"
                )));
            }
            if view.dtype != port.dtype {
                return Err(OvError::InvalidInput(format!(
                    "input tensor {name} has datatype {}, expected {}",
                    view.dtype, port.dtype
                )));
            }
            if !port.rank_dynamic {
                let fits = view.shape.len() == port.shape.len()
                    && view
                        .shape
                        .iter()
                        .zip(&port.shape)
                        .all(|(&got, &want)| want < 0 || got == want);
                if !fits {
                    return Err(OvError::InvalidInput(format!(
                        "input tensor {name} has shape {:?}, expected {:?} (-1 = any size)",
                        view.shape, port.shape
                    )));
                }
            }
            view.check(&format!("input tensor {name}"))?;
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|p| !inputs.iter().any(|(n, _)| *n == p.name))
        {
            return Err(OvError::InvalidInput(format!(
                "missing input tensor {} ({} {:?}); the model needs {}",
                missing.name,
                missing.dtype,
                missing.shape,
                names(&self.inputs)
            )));
        }
        Ok(())
    }

    /// Run one inference on owned tensors. Blocks while every pooled request is busy.
    pub fn infer<S: AsRef<str>>(&self, inputs: &[(S, Tensor)]) -> Result<Vec<(String, Tensor)>> {
        let views: Vec<(&str, TensorView<'_>)> =
            inputs.iter().map(|(n, t)| (n.as_ref(), t.view())).collect();
        self.infer_views(&views)
    }

    /// Run one inference on borrowed tensors (no copy before OpenVINO's input buffers).
    /// Returns every output in model order.
    pub fn infer_views(&self, inputs: &[(&str, TensorView<'_>)]) -> Result<Vec<(String, Tensor)>> {
        self.validate(inputs)?;
        let mut lease = self.lease();
        let req = lease.request();
        for (name, view) in inputs {
            let tensor = req
                .get_tensor(name)
                .map_err(|e| OvError::runtime(format!("get input tensor {name}"), e))?;
            let shape = ov_shape_t {
                rank: view.shape.len() as i64,
                dims: view.shape.as_ptr().cast_mut(),
            };
            // SAFETY: the tensor handle is live; OpenVINO copies the dims out of `shape`.
            let status = unsafe {
                ov_tensor_set_shape(tensor.as_c_ptr().cast_mut() as *mut ov_tensor_t, shape)
            };
            if status != ov_status_e::OK {
                return Err(OvError::runtime(
                    format!("set shape {:?} on input {name}", view.shape),
                    openvino::get_last_error_message().unwrap_or_else(|| format!("{status:?}")),
                ));
            }
            let mut tensor = tensor;
            let dst = tensor
                .get_raw_data_mut()
                .map_err(|e| OvError::runtime(format!("map input tensor {name}"), e))?;
            if dst.len() != view.data.len() {
                return Err(OvError::runtime(
                    format!("fill input {name}"),
                    format!("buffer has {} bytes, data {}", dst.len(), view.data.len()),
                ));
            }
            dst.copy_from_slice(view.data);
        }
        req.infer().map_err(|e| OvError::runtime("infer", e))?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for (i, port) in self.outputs.iter().enumerate() {
            let t = req
                .get_output_tensor_by_index(i)
                .map_err(|e| OvError::runtime(format!("get output {}", port.name), e))?;
            let ty = t
                .get_element_type()
                .map_err(|e| OvError::runtime(format!("read type of output {}", port.name), e))?;
            let dtype = dtype_of(ty, &format!("output {}", port.name))?;
            let shape = t
                .get_shape()
                .map_err(|e| OvError::runtime(format!("read shape of output {}", port.name), e))?
                .get_dimensions()
                .to_vec();
            let data = t
                .get_raw_data()
                .map_err(|e| OvError::runtime(format!("read output {}", port.name), e))?
                .to_vec();
            out.push((port.name.clone(), Tensor { dtype, shape, data }));
        }
        Ok(out)
    }

    fn lease(&self) -> Lease<'_> {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(req) = pool.pop() {
                return Lease {
                    owner: self,
                    req: Some(req),
                };
            }
            pool = self.available.wait(pool).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A request borrowed from the pool; returned on drop, also on error paths.
struct Lease<'a> {
    owner: &'a CompiledModel,
    req: Option<InferRequest>,
}

impl Lease<'_> {
    fn request(&mut self) -> &mut InferRequest {
        // Always Some until drop.
        self.req
            .as_mut()
            .expect("lease holds a request until dropped")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(req) = self.req.take() {
            let mut pool = self.owner.pool.lock().unwrap_or_else(|p| p.into_inner());
            pool.push(req);
            drop(pool);
            self.owner.available.notify_one();
        }
    }
}

fn compiled_ports(inner: &openvino::CompiledModel) -> Result<(Vec<PortInfo>, Vec<PortInfo>)> {
    let n_in = inner
        .get_input_size()
        .map_err(|e| OvError::runtime("count compiled inputs", e))?;
    let n_out = inner
        .get_output_size()
        .map_err(|e| OvError::runtime("count compiled outputs", e))?;
    let mut inputs = Vec::with_capacity(n_in);
    for i in 0..n_in {
        let node = inner
            .get_input_by_index(i)
            .map_err(|e| OvError::runtime(format!("get compiled input {i}"), e))?;
        inputs.push(port_from_node(&node, i, "input")?);
    }
    let mut outputs = Vec::with_capacity(n_out);
    for i in 0..n_out {
        let node = inner
            .get_output_by_index(i)
            .map_err(|e| OvError::runtime(format!("get compiled output {i}"), e))?;
        outputs.push(port_from_node(&node, i, "output")?);
    }
    Ok((inputs, outputs))
}

/// Measure throughput on all-zero inputs of the model's static input shapes, running as many
/// threads as the pool has requests.
pub fn calibrate(compiled: &CompiledModel, iterations: u32) -> Result<Calibration> {
    let shapes: Vec<(&str, &[i64])> = compiled
        .inputs()
        .iter()
        .map(|p| (p.name.as_str(), p.shape.as_slice()))
        .collect();
    if let Some(p) = compiled.inputs().iter().find(|p| !p.is_static()) {
        return Err(OvError::Unsupported(format!(
            "cannot calibrate: input {} has dynamic shape {:?}; reshape the model to a static \
             shape before compiling, or use calibrate_with_shapes",
            p.name, p.shape
        )));
    }
    Ok(calibrate_with_shapes(compiled, &shapes, iterations)?)
}
