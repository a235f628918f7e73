//! The inference port over OpenVINO in process: finds the runtime without loading it, loads
//! it on first use (once per process), and loads models as [`CompiledModel`]s. Touches the
//! OpenVINO library and model files.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kiln_hal::ports::{
    BackendDevice, InferenceBackend, LoadRequest, LoadedModel, PortError, PortInfo, Tensor,
};

use crate::compiled::CompiledModel;
use crate::discovery::LibrarySearch;
use crate::model::ModelFiles;
use crate::runtime::Runtime;

/// OpenVINO as an [`InferenceBackend`].
pub struct OpenVinoBackend {
    search: LibrarySearch,
    runtime: Mutex<Option<Arc<Runtime>>>,
}

impl OpenVinoBackend {
    /// A backend that looks for the runtime where `search` says; nothing is loaded yet.
    pub fn new(search: LibrarySearch) -> OpenVinoBackend {
        OpenVinoBackend {
            search,
            runtime: Mutex::new(None),
        }
    }

    /// The runtime, loaded on first use (blocks).
    pub fn runtime(&self) -> Result<Arc<Runtime>, PortError> {
        let mut g = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = &*g {
            return Ok(rt.clone());
        }
        let rt = Arc::new(Runtime::load(&self.search)?);
        *g = Some(rt.clone());
        Ok(rt)
    }
}

impl InferenceBackend for OpenVinoBackend {
    fn platform(&self) -> &str {
        "openvino"
    }

    fn name(&self) -> &str {
        "OpenVINO"
    }

    fn locate(&self) -> Result<String, PortError> {
        Ok(self.search.find()?.display().to_string())
    }

    fn describe(&self) -> Result<String, PortError> {
        let rt = self.runtime()?;
        Ok(format!(
            "OpenVINO {} from {}",
            rt.version(),
            rt.library_path().display()
        ))
    }

    fn version(&self) -> Result<String, PortError> {
        Ok(self.runtime()?.version().to_string())
    }

    fn devices(&self) -> Result<Vec<BackendDevice>, PortError> {
        Ok(self.runtime()?.devices()?)
    }

    fn weights_bytes(&self, dir: &Path) -> Result<u64, PortError> {
        Ok(ModelFiles::locate(dir)?.weights_bytes)
    }

    fn inputs(&self, dir: &Path) -> Result<Vec<PortInfo>, PortError> {
        Ok(self.runtime()?.read_model(dir)?.inputs().to_vec())
    }

    fn load(&self, req: &LoadRequest<'_>) -> Result<Arc<dyn LoadedModel>, PortError> {
        let rt = self.runtime()?;
        let mut model = rt.read_model(req.dir)?;
        if !req.reshape.is_empty() {
            let refs: Vec<(&str, &[i64])> = req
                .reshape
                .iter()
                .map(|(n, s)| (n.as_str(), s.as_slice()))
                .collect();
            model.reshape(&refs)?;
        }
        Ok(Arc::new(rt.compile(&model, req.device, req.hints)?))
    }
}

impl LoadedModel for CompiledModel {
    fn infer(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Tensor)>, PortError> {
        Ok(CompiledModel::infer(self, inputs)?)
    }

    fn pool_size(&self) -> usize {
        CompiledModel::pool_size(self)
    }

    fn inputs(&self) -> &[PortInfo] {
        CompiledModel::inputs(self)
    }

    fn outputs(&self) -> &[PortInfo] {
        CompiledModel::outputs(self)
    }

    fn precision(&self) -> &str {
        CompiledModel::precision(self)
    }

    fn memory_delta_bytes(&self) -> i64 {
        CompiledModel::memory_delta_bytes(self)
    }
}
