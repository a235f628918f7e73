//! The loaded OpenVINO runtime: loads the C API library found by discovery, lists devices,
//! reads and compiles models. Owns the process-wide OpenVINO core; dlopen()s one library.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

use openvino::{Core, DeviceType, PropertyKey, RwPropertyKey};

use crate::compiled::CompiledModel;
use crate::discovery::LibrarySearch;
use crate::error::{OvError, Result};
use crate::memory::process_rss_bytes;
use crate::model::{Model, ModelFiles};
use crate::types::hint_value;
use kiln_hal::ports::{BackendDevice, LoadHints};

/// C API functions this driver calls; checked before loading so an old or partial library
/// gives one clear error instead of a panic at first use.
const REQUIRED_SYMBOLS: &[&str] = &[
    "ov_get_openvino_version",
    "ov_version_free",
    "ov_get_last_err_msg",
    "ov_core_create",
    "ov_core_free",
    "ov_core_get_available_devices",
    "ov_available_devices_free",
    "ov_core_get_property",
    "ov_core_set_property",
    "ov_core_read_model",
    "ov_core_compile_model",
    "ov_model_free",
    "ov_model_inputs_size",
    "ov_model_outputs_size",
    "ov_model_const_input_by_index",
    "ov_model_const_output_by_index",
    "ov_model_is_dynamic",
    "ov_model_reshape",
    "ov_port_get_any_name",
    "ov_port_get_element_type",
    "ov_port_get_partial_shape",
    "ov_partial_shape_create_static",
    "ov_partial_shape_free",
    "ov_rank_is_dynamic",
    "ov_dimension_is_dynamic",
    "ov_compiled_model_create_infer_request",
    "ov_compiled_model_inputs_size",
    "ov_compiled_model_outputs_size",
    "ov_compiled_model_input_by_index",
    "ov_compiled_model_output_by_index",
    "ov_compiled_model_get_property",
    "ov_compiled_model_free",
    "ov_infer_request_get_input_tensor_by_index",
    "ov_infer_request_get_output_tensor_by_index",
    "ov_infer_request_get_tensor",
    "ov_infer_request_infer",
    "ov_infer_request_free",
    "ov_tensor_data",
    "ov_tensor_get_byte_size",
    "ov_tensor_get_element_type",
    "ov_tensor_get_shape",
    "ov_tensor_set_shape",
    "ov_tensor_free",
    "ov_shape_free",
];

/// Properties the OpenVINO core handles for any device (not listed by the plugins).
const CORE_PROPERTIES: &[&str] = &["CACHE_DIR", "CACHE_MODE", "ENABLE_MMAP"];

/// The library loaded into this process (OpenVINO can only be loaded once).
static LOADED: OnceLock<PathBuf> = OnceLock::new();
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// A device OpenVINO reports (the inference port's device).
pub type OvDevice = BackendDevice;

/// Compile options (the inference port's load hints).
pub type CompileHints = LoadHints;

struct CoreState {
    core: Core,
}

/// The OpenVINO runtime: one per process, shareable across threads.
pub struct Runtime {
    state: Mutex<CoreState>,
    library: PathBuf,
    version: String,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .field("version", &self.version)
            .finish()
    }
}

impl Runtime {
    /// Find and load the OpenVINO C API library, then create a core.
    pub fn load(search: &LibrarySearch) -> Result<Runtime> {
        let path = search.find()?;
        load_library(&path)?;
        let core = Core::new().map_err(|e| OvError::LibraryUnusable {
            path: path.clone(),
            reason: format!("creating the OpenVINO core failed: {e}"),
        })?;
        let version = openvino::version().build_number;
        Ok(Runtime {
            state: Mutex::new(CoreState { core }),
            library: path,
            version,
        })
    }

    /// The library in use.
    pub fn library_path(&self) -> &Path {
        &self.library
    }

    /// OpenVINO build number, e.g. `2026.4.1-22982-e213a147257-releases/2026/4`.
    pub fn version(&self) -> &str {
        &self.version
    }

    fn lock(&self) -> MutexGuard<'_, CoreState> {
        // A panic while holding the lock leaves the core usable: take it back.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Devices OpenVINO can use, with their full names and capabilities.
    pub fn devices(&self) -> Result<Vec<OvDevice>> {
        let state = self.lock();
        let names: Vec<String> = state
            .core
            .available_devices()
            .map_err(|e| OvError::runtime("list devices", e))?
            .iter()
            .map(|d| d.as_ref().to_string())
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let dev = DeviceType::from(name.as_str());
            let full_name = state
                .core
                .get_property(&dev, &PropertyKey::DeviceFullName)
                .unwrap_or_default();
            let optimization_capabilities = state
                .core
                .get_property(&dev, &PropertyKey::DeviceCapabilities)
                .map(|s| parse_list(&s))
                .unwrap_or_default();
            let text = |key: &str| {
                state
                    .core
                    .get_property(&dev, &PropertyKey::Other(key.to_string().into()))
                    .unwrap_or_default()
            };
            let architecture = text("DEVICE_ARCHITECTURE");
            let device_type = text("DEVICE_TYPE").to_ascii_lowercase();
            out.push(OvDevice {
                name,
                full_name,
                optimization_capabilities,
                architecture,
                device_type,
            });
        }
        Ok(out)
    }

    /// Refuse device names OpenVINO does not know, listing the ones it has. Virtual devices
    /// (AUTO, HETERO, MULTI, BATCH) are accepted as long as their prefix is known.
    fn check_device_known(&self, device: &str) -> Result<()> {
        const VIRTUAL: [&str; 4] = ["AUTO", "HETERO", "MULTI", "BATCH"];
        let base = device.split([':', '.']).next().unwrap_or(device);
        if VIRTUAL.contains(&base) {
            return Ok(());
        }
        let available: Vec<String> = self
            .lock()
            .core
            .available_devices()
            .map_err(|e| OvError::runtime("list devices", e))?
            .iter()
            .map(|d| d.as_ref().to_string())
            .collect();
        // `GPU` and `GPU.0` both name the first GPU whichever form OpenVINO lists.
        let known = available.iter().any(|a| a.split('.').next() == Some(base));
        if known {
            Ok(())
        } else {
            Err(OvError::InvalidInput(format!(
                "OpenVINO has no device {device:?}; available here: {} (plus AUTO, HETERO, MULTI)",
                available.join(", ")
            )))
        }
    }

    /// Read any device property as a string (e.g. `DEVICE_ARCHITECTURE`).
    pub fn device_property(&self, device: &str, key: &str) -> Result<String> {
        check_device_name(device)?;
        check_c_string(key, "property name")?;
        let state = self.lock();
        state
            .core
            .get_property(
                &DeviceType::from(device),
                &PropertyKey::Other(key.to_string().into()),
            )
            .map_err(|e| OvError::runtime(format!("read {key} of device {device}"), e))
    }

    /// Read a model from a version directory (`model.xml`+`model.bin` or `model.onnx`) or a
    /// direct path to one of those files.
    pub fn read_model(&self, path: &Path) -> Result<Model> {
        let files = ModelFiles::locate(path)?;
        let graph = path_str(&files.graph)?;
        let weights = match &files.weights {
            Some(w) => path_str(w)?,
            None => String::new(),
        };
        let inner = {
            let mut state = self.lock();
            state
                .core
                .read_model_from_file(&graph, &weights)
                .map_err(|e| OvError::ModelFiles {
                    path: files.graph.clone(),
                    reason: format!("OpenVINO could not read it: {e}"),
                })?
        };
        Model::new(inner, files)
    }

    /// Compile a model for a device (`CPU`, `GPU`, `GPU.0`, `NPU`, `AUTO`, ...), measuring the
    /// process RSS around compilation, and build its pool of infer requests.
    pub fn compile(
        &self,
        model: &Model,
        device: &str,
        hints: &CompileHints,
    ) -> Result<CompiledModel> {
        check_device_name(device)?;
        if hints.pool_size == Some(0) {
            return Err(OvError::InvalidInput(
                "pool_size must be at least 1 (or unset to use the device's optimal number)".into(),
            ));
        }
        self.check_device_known(device)?;
        let mut props: Vec<(String, String)> = vec![(
            "PERFORMANCE_HINT".to_string(),
            hint_value(hints.performance).to_string(),
        )];
        if let Some(p) = hints.precision {
            props.push(("INFERENCE_PRECISION_HINT".into(), p.as_str().into()));
        }
        if let Some(n) = hints.num_requests {
            props.push(("PERFORMANCE_HINT_NUM_REQUESTS".into(), n.to_string()));
        }
        for (k, v) in &hints.properties {
            if k.is_empty() || props.iter().any(|(have, _)| have == k) {
                return Err(OvError::InvalidInput(format!(
                    "compile property {k:?} is empty or given twice (performance, precision and \
                     num_requests hints already set PERFORMANCE_HINT, INFERENCE_PRECISION_HINT \
                     and PERFORMANCE_HINT_NUM_REQUESTS)"
                )));
            }
            check_c_string(k, "property name")?;
            check_c_string(v, "property value")?;
            props.push((k.clone(), v.clone()));
        }
        // A fresh core per compile: its properties apply to this compile only, and compiles of
        // different models can run in parallel. The compiled model keeps its plugin alive.
        let mut core = Core::new().map_err(|e| OvError::runtime("create an OpenVINO core", e))?;
        let dev = DeviceType::from(device);
        if !hints.properties.is_empty() {
            // Unknown keys would only fail deep inside compile: name them here.
            let supported = core
                .get_property(&dev, &PropertyKey::SupportedProperties)
                .map(|s| parse_list(&s))
                .unwrap_or_default();
            if let Some((k, _)) = hints.properties.iter().find(|(k, _)| {
                !supported.is_empty()
                    && !supported.contains(k)
                    && !CORE_PROPERTIES.contains(&k.as_str())
            }) {
                return Err(OvError::Unsupported(format!(
                    "device {device} does not support compile property {k}; it supports {}",
                    supported.join(", ")
                )));
            }
        }
        for (k, v) in &props {
            core.set_property(&dev, &RwPropertyKey::Other(k.clone().into()), v)
                .map_err(|e| {
                    OvError::Unsupported(format!("device {device} rejected {k}={v}: {e}"))
                })?;
        }
        let before = process_rss_bytes().ok();
        let compiled = core
            .compile_model(&model.inner, DeviceType::from(device))
            .map_err(|e| OvError::runtime(format!("compile the model for {device}"), e))?;
        let after = process_rss_bytes().ok();
        drop(core);
        let delta = match (before, after) {
            (Some(b), Some(a)) => a as i64 - b as i64,
            _ => 0,
        };
        CompiledModel::new(compiled, device, hints.pool_size, delta)
    }
}

fn load_library(path: &Path) -> Result<()> {
    let _guard = LOAD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(loaded) = LOADED.get() {
        if loaded == path {
            return Ok(());
        }
        return Err(OvError::LibraryUnusable {
            path: path.to_path_buf(),
            reason: format!(
                "this process already loaded OpenVINO from {}; restart to switch libraries",
                loaded.display()
            ),
        });
    }
    let unusable = |reason: String| OvError::LibraryUnusable {
        path: path.to_path_buf(),
        reason,
    };
    // SAFETY: loading OpenVINO runs its initialisers, which are sound to run once per process.
    let lib = unsafe { libloading::Library::new(path) }
        .map_err(|e| unusable(format!("dlopen failed: {e}")))?;
    let missing: Vec<&str> = REQUIRED_SYMBOLS
        .iter()
        .copied()
        // SAFETY: only the presence of the symbol is checked; it is not called here.
        .filter(|s| unsafe { lib.get::<unsafe extern "C" fn()>(s.as_bytes()) }.is_err())
        .collect();
    if !missing.is_empty() {
        return Err(unusable(format!(
            "it lacks C API functions {missing:?} (too old or not the C API library)"
        )));
    }
    // The binding checks the version (>= 2025.1); guard against a panic on odd version strings.
    let owned = path.to_path_buf();
    let res = std::panic::catch_unwind(move || openvino_sys::library::load_from(owned))
        .map_err(|_| unusable("its version string could not be parsed".into()))?;
    res.map_err(unusable)?;
    // Keep our handle too: the library must never be unloaded while the process runs.
    std::mem::forget(lib);
    let _ = LOADED.set(path.to_path_buf());
    Ok(())
}

fn parse_list(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

fn path_str(p: &Path) -> Result<String> {
    let s = p.to_str().ok_or_else(|| OvError::ModelFiles {
        path: p.to_path_buf(),
        reason: "path is not valid UTF-8; rename it".into(),
    })?;
    check_c_string(s, "path")?;
    Ok(s.to_string())
}

pub(crate) fn check_c_string(s: &str, what: &str) -> Result<()> {
    if s.contains('\0') {
        return Err(OvError::InvalidInput(format!(
            "{what} {s:?} contains a NUL byte"
        )));
    }
    Ok(())
}

fn check_device_name(device: &str) -> Result<()> {
    let ok = !device.is_empty()
        && device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | ',' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(OvError::InvalidInput(format!(
            "invalid device name {device:?}; use an OpenVINO device such as CPU, GPU, GPU.0, NPU \
             or AUTO"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_lists_split_on_whitespace() {
        assert_eq!(parse_list("FP32 INT8  BIN"), vec!["FP32", "INT8", "BIN"]);
    }

    #[test]
    fn device_names_are_checked() {
        assert!(check_device_name("GPU.0").is_ok());
        assert!(check_device_name("HETERO:GPU,CPU").is_ok());
        let err = check_device_name("CPU\0").unwrap_err().to_string();
        assert!(err.contains("invalid device name"), "{err}");
        assert!(check_device_name("").is_err());
    }
}
