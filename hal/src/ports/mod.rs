//! Ports: the traits drivers implement and the engine calls, and the vocabulary they share
//! (tensors, dtypes, the port error). The engine names only these; which driver stands
//! behind a port is decided in one place (the engine's wiring). Pure traits and data;
//! touches nothing.

pub mod error;
pub mod inference;
pub mod jobs;
pub mod storage;
pub mod tensor;
pub mod vectors;

pub use error::{ErrorKind, PortError};
pub use inference::{
    BackendDevice, Calibration, InferenceBackend, LoadHints, LoadRequest, LoadedModel,
    PerformanceHint, PortInfo, Precision, calibrate_with_shapes,
};
pub use jobs::{Adopted, ExitRecord, JobLauncher, JobRecord, LaunchPlan, RunningJob, StartedInfo};
pub use tensor::{Dtype, Tensor, TensorView, Values, byte_size, contents_field};
pub use vectors::{
    CollectionInfo, Hit, IndexOptions, IndexPool, Metric, OpenIndex, Quantisation, VectorIndex,
};
