//! A model read from a repository version directory (`model.xml`+`model.bin` or
//! `model.onnx`), its input/output ports, and reshaping to static shapes. Reads model files;
//! talks to OpenVINO through the runtime's core.

use std::path::{Path, PathBuf};

use openvino::{Node, PartialShape};

use crate::error::{OvError, Result};
use crate::types::dtype_of;
use kiln_hal::ports::PortInfo;

/// The files of one model version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    /// `model.xml` or `model.onnx`.
    pub graph: PathBuf,
    /// `model.bin` for IR; `None` for ONNX (weights are inside the graph file).
    pub weights: Option<PathBuf>,
    /// Size on disk of the weights (IR `.bin`, or the whole ONNX file), for budget estimates.
    pub weights_bytes: u64,
}

impl ModelFiles {
    /// Locate the model in a version directory (or accept a direct `.xml`/`.onnx` path).
    /// IR wins when both formats are present.
    pub fn locate(path: &Path) -> Result<ModelFiles> {
        let bad = |reason: String| OvError::ModelFiles {
            path: path.to_path_buf(),
            reason,
        };
        let graph = if path.is_dir() {
            let xml = path.join("model.xml");
            let onnx = path.join("model.onnx");
            if xml.is_file() {
                xml
            } else if onnx.is_file() {
                onnx
            } else {
                return Err(bad(
                    "no model.xml (OpenVINO IR, with model.bin) or model.onnx in this directory; \
                     put the model files into <repository>/<name>/<version>/"
                        .into(),
                ));
            }
        } else if path.is_file() {
            path.to_path_buf()
        } else {
            return Err(bad("does not exist".into()));
        };
        let ext = graph.extension().and_then(|e| e.to_str()).unwrap_or("");
        let size = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.len())
                .map_err(|e| OvError::Io {
                    context: format!("reading size of {}", p.display()),
                    source: e,
                })
        };
        match ext {
            "xml" => {
                let bin = graph.with_extension("bin");
                if !bin.is_file() {
                    return Err(bad(format!(
                        "{} has no weights file {} beside it; copy the .bin produced with the IR",
                        graph.display(),
                        bin.display()
                    )));
                }
                let weights_bytes = size(&bin)?;
                Ok(ModelFiles {
                    graph,
                    weights: Some(bin),
                    weights_bytes,
                })
            }
            "onnx" => {
                let weights_bytes = size(&graph)?;
                Ok(ModelFiles {
                    graph,
                    weights: None,
                    weights_bytes,
                })
            }
            _ => Err(bad(format!(
                "{} is neither an OpenVINO IR (.xml) nor an ONNX (.onnx) file",
                graph.display()
            ))),
        }
    }
}

/// The port of an OpenVINO input or output node.
pub(crate) fn port_from_node(node: &Node, index: usize, what: &str) -> Result<PortInfo> {
    // Outputs are read by index, so an unnamed output gets a stable positional name;
    // inputs are filled by name and must have one.
    let name = match node.get_name() {
        Ok(n) if !n.is_empty() => n,
        _ if what == "output" => format!("output_{index}"),
        Ok(_) | Err(_) => {
            return Err(OvError::Unsupported(format!(
                "{what} {index} has no tensor name; give every input a name when \
                 exporting or converting the model"
            )));
        }
    };
    let ty = node
        .get_element_type()
        .map_err(|e| OvError::runtime(format!("read the type of {what} {name}"), e))?;
    let dtype = dtype_of(ty, &format!("{what} {name}"))?;
    let pshape = node
        .get_partial_shape()
        .map_err(|e| OvError::runtime(format!("read the shape of {what} {name}"), e))?;
    let (shape, rank_dynamic) = partial_shape_dims(&pshape);
    Ok(PortInfo {
        name,
        dtype,
        shape,
        rank_dynamic,
    })
}

fn partial_shape_dims(pshape: &PartialShape) -> (Vec<i64>, bool) {
    // Check the rank first: the binding's dimension accessor assumes a static rank.
    if pshape.get_rank().is_dynamic() {
        return (Vec::new(), true);
    }
    let dims = pshape
        .get_dimensions()
        .iter()
        .map(|d| {
            if !d.is_dynamic() && d.get_min() == d.get_max() {
                d.get_min()
            } else {
                -1
            }
        })
        .collect();
    (dims, false)
}

/// A model read into OpenVINO, not yet compiled.
pub struct Model {
    pub(crate) inner: openvino::Model,
    files: ModelFiles,
    inputs: Vec<PortInfo>,
    outputs: Vec<PortInfo>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("files", &self.files)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

impl Model {
    pub(crate) fn new(inner: openvino::Model, files: ModelFiles) -> Result<Model> {
        let (inputs, outputs) = read_ports(&inner)?;
        Ok(Model {
            inner,
            files,
            inputs,
            outputs,
        })
    }

    /// Files the model was read from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Inputs in model order.
    pub fn inputs(&self) -> &[PortInfo] {
        &self.inputs
    }

    /// Outputs in model order.
    pub fn outputs(&self) -> &[PortInfo] {
        &self.outputs
    }

    /// True when any input or output has a dynamic dimension.
    pub fn is_dynamic(&self) -> bool {
        self.inner.is_dynamic()
    }

    /// Fix input shapes (the NPU needs static shapes). Every dimension must be positive; inputs
    /// not named keep their shape. Output shapes are re-derived.
    pub fn reshape(&mut self, shapes: &[(&str, &[i64])]) -> Result<()> {
        let mut owned = Vec::with_capacity(shapes.len());
        for (name, dims) in shapes {
            let port = self
                .inputs
                .iter()
                .find(|p| p.name == *name)
                .ok_or_else(|| {
                    OvError::InvalidInput(format!(
                        "cannot reshape unknown input {name:?}; the model's inputs are {}",
                        names(&self.inputs)
                    ))
                })?;
            if !port.rank_dynamic && port.shape.len() != dims.len() {
                return Err(OvError::InvalidInput(format!(
                    "reshape of input {name}: {} dimensions given ({dims:?}), the model has {} \
                     ({:?})",
                    dims.len(),
                    port.shape.len(),
                    port.shape
                )));
            }
            if let Some((i, _)) = dims.iter().enumerate().find(|(_, d)| **d <= 0) {
                return Err(OvError::InvalidInput(format!(
                    "reshape of input {name}: dimension {i} of {dims:?} must be a positive size"
                )));
            }
            if let Some((i, (want, have))) = dims
                .iter()
                .zip(&port.shape)
                .enumerate()
                .find(|(_, (want, have))| **have >= 0 && want != have)
            {
                return Err(OvError::InvalidInput(format!(
                    "reshape of input {name}: dimension {i} is fixed at {have} in the model, \
                     {want} requested"
                )));
            }
            let rank = i64::try_from(dims.len())
                .map_err(|_| OvError::InvalidInput(format!("reshape of {name}: too many dims")))?;
            let ps = PartialShape::new_static(rank, dims)
                .map_err(|e| OvError::runtime(format!("build shape {dims:?}"), e))?;
            owned.push((port.name.clone(), ps));
        }
        let pairs: Vec<(&str, &PartialShape)> =
            owned.iter().map(|(n, s)| (n.as_str(), s)).collect();
        self.inner
            .reshape(&pairs)
            .map_err(|e| OvError::runtime("reshape the model", e))?;
        let (inputs, outputs) = read_ports(&self.inner)?;
        self.inputs = inputs;
        self.outputs = outputs;
        Ok(())
    }
}

fn read_ports(model: &openvino::Model) -> Result<(Vec<PortInfo>, Vec<PortInfo>)> {
    let n_in = model
        .get_inputs_len()
        .map_err(|e| OvError::runtime("count model inputs", e))?;
    let n_out = model
        .get_outputs_len()
        .map_err(|e| OvError::runtime("count model outputs", e))?;
    let mut inputs = Vec::with_capacity(n_in);
    for i in 0..n_in {
        let node = model
            .get_input_by_index(i)
            .map_err(|e| OvError::runtime(format!("get input {i}"), e))?;
        inputs.push(port_from_node(&node, i, "input")?);
    }
    let mut outputs = Vec::with_capacity(n_out);
    for i in 0..n_out {
        let node = model
            .get_output_by_index(i)
            .map_err(|e| OvError::runtime(format!("get output {i}"), e))?;
        outputs.push(port_from_node(&node, i, "output")?);
    }
    Ok((inputs, outputs))
}

pub(crate) fn names(ports: &[PortInfo]) -> String {
    let v: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    format!("[{}]", v.join(", "))
}
