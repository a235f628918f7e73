//! kiln-openvino: Kiln's runtime layer over OpenVINO (crate `openvino`, runtime-linked).
//!
//! Finds the C API library (config `[openvino] library` or the pip wheel in a venv), loads it
//! once per process, lists devices, reads IR/ONNX models, reshapes them to static shapes,
//! compiles them with performance/precision hints and runs inference through a pool of infer
//! requests. It touches model files, `/proc/self/statm` and the OpenVINO library; transport,
//! budgets and placement belong to the engine.

mod compiled;
mod discovery;
mod error;
mod memory;
mod model;
mod runtime;
mod types;

pub use compiled::{CompiledModel, calibrate};
pub use discovery::{DEFAULT_PYTHON_PREFIXES, LibrarySearch, find_repo_venv};
pub use error::{ErrorKind, OvError, Result, RuntimeError};
pub use kiln_hal::ports::{Calibration, calibrate_with_shapes};
pub use memory::process_rss_bytes;
mod backend;

pub use backend::OpenVinoBackend;
pub use kiln_hal::ports::{
    Dtype, PerformanceHint, PortInfo, Precision, Tensor, TensorView, Values, byte_size,
    contents_field,
};
pub use model::{Model, ModelFiles};
pub use runtime::{CompileHints, OvDevice, Runtime};
