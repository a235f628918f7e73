//! Request validation before anything reaches the runtime: inputs against the compiled
//! model's ports (names, datatypes, shapes, element counts, byte sizes, duplicates, missing
//! ones), requested outputs, and the size of the request. Every error is INVALID_ARGUMENT
//! and names the tensor and the expected value. Pure; touches nothing.

use crate::error::EngineError;
use kiln_hal::ports::{Dtype, PortInfo, Tensor, Values, byte_size};

/// One input tensor as it arrived (typed contents, or its bytes in `raw_inputs`).
#[derive(Debug, Clone, PartialEq)]
pub struct InferInput {
    pub name: String,
    /// KServe datatype name (`FP32`, `INT64`, ...).
    pub datatype: String,
    pub shape: Vec<i64>,
    /// Typed contents; `None` when the data travels in `raw_inputs`.
    pub contents: Option<Values>,
}

/// An inference request, transport-free.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferRequest {
    pub model_name: String,
    /// Empty: the highest ready version.
    pub model_version: String,
    pub id: String,
    pub inputs: Vec<InferInput>,
    /// Raw little-endian bytes, one entry per input in `inputs` order (or empty).
    pub raw_inputs: Vec<Vec<u8>>,
    /// Requested outputs; empty means all.
    pub outputs: Vec<String>,
}

/// The outputs of one inference.
#[derive(Debug, Clone, PartialEq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: String,
    /// In model order, filtered by the requested outputs.
    pub outputs: Vec<(String, Tensor)>,
}

fn names(ports: &[PortInfo]) -> String {
    let v: Vec<&str> = ports.iter().map(|p| p.name.as_str()).collect();
    format!("[{}]", v.join(", "))
}

/// Check `req` against the model; return the input tensors in model order and the number of
/// samples (dimension 0 when `batched`, else 1).
pub fn inputs(
    model: &str,
    ports: &[PortInfo],
    outputs: &[PortInfo],
    req: &mut InferRequest,
    max_bytes: usize,
    batched: bool,
) -> Result<(Vec<(String, Tensor)>, u64), EngineError> {
    let inv = EngineError::invalid;
    let raw_total: usize = req.raw_inputs.iter().map(|r| r.len()).sum();
    let typed_total: usize = req
        .inputs
        .iter()
        .filter_map(|i| i.contents.as_ref())
        .map(|v| v.len() * 8)
        .sum();
    if raw_total.saturating_add(typed_total) > max_bytes {
        return Err(inv(format!(
            "request for model {model} carries {} bytes of tensor data, more than the limit of {max_bytes} (daemon.max_message_bytes); split it into smaller requests or raise the limit",
            raw_total.saturating_add(typed_total)
        )));
    }
    if !req.raw_inputs.is_empty() && req.raw_inputs.len() != req.inputs.len() {
        return Err(inv(format!(
            "{} raw_input_contents for {} inputs; send one raw entry per input, in input order, or none",
            req.raw_inputs.len(),
            req.inputs.len()
        )));
    }
    let mut raw = std::mem::take(&mut req.raw_inputs).into_iter();
    let use_raw = raw.len() > 0;
    let mut got: Vec<Option<Tensor>> = vec![None; ports.len()];
    for input in req.inputs.iter_mut() {
        let name = &input.name;
        let data = if use_raw { raw.next() } else { None };
        let Some(idx) = ports.iter().position(|p| p.name == *name) else {
            return Err(inv(format!(
                "unknown input tensor {name:?} for model {model}; its inputs are {}",
                names(ports)
            )));
        };
        let port = &ports[idx];
        if got[idx].is_some() {
            return Err(inv(format!("input tensor {name} is given more than once")));
        }
        let dtype = Dtype::from_kserve(&input.datatype)
            .map_err(|e| inv(format!("input tensor {name}: {e}")))?;
        if dtype != port.dtype {
            return Err(inv(format!(
                "input tensor {name} has datatype {}, expected {}",
                input.datatype, port.dtype
            )));
        }
        if let Some(d) = input.shape.iter().find(|d| **d < 0) {
            return Err(inv(format!(
                "input tensor {name} has shape {:?} with negative dimension {d}; every dimension must be >= 0",
                input.shape
            )));
        }
        if !port.rank_dynamic {
            let fits = input.shape.len() == port.shape.len()
                && input
                    .shape
                    .iter()
                    .zip(&port.shape)
                    .all(|(&g, &w)| w < 0 || g == w);
            if !fits {
                return Err(inv(format!(
                    "input tensor {name} has shape {:?}, expected {:?} (-1 = any size)",
                    input.shape, port.shape
                )));
            }
        }
        let what = format!("input tensor {name}");
        let expected = byte_size(dtype, &input.shape, &what).map_err(|e| inv(e.to_string()))?;
        let tensor = match (data, &input.contents) {
            (Some(_), Some(_)) => {
                return Err(inv(format!(
                    "input tensor {name} has both typed contents and raw_input_contents; send one of them"
                )));
            }
            (Some(bytes), None) => {
                if bytes.len() != expected {
                    return Err(inv(format!(
                        "input tensor {name}: raw_input_contents holds {} bytes, expected {expected} ({} {:?} = {} elements x {} bytes)",
                        bytes.len(),
                        dtype,
                        input.shape,
                        expected / dtype.size(),
                        dtype.size()
                    )));
                }
                Tensor {
                    dtype,
                    shape: input.shape.clone(),
                    data: bytes,
                }
            }
            (None, Some(values)) => Tensor::from_values(dtype, &input.shape, values, &what)
                .map_err(|e| inv(e.to_string()))?,
            (None, None) => {
                return Err(inv(format!(
                    "input tensor {name} has no data: fill its contents ({}) or send raw_input_contents",
                    kiln_hal::ports::contents_field(dtype)
                )));
            }
        };
        got[idx] = Some(tensor);
    }
    for want in &req.outputs {
        if !outputs.iter().any(|o| o.name == *want) {
            return Err(inv(format!(
                "unknown output tensor {want:?} requested from model {model}; its outputs are {}",
                names(outputs)
            )));
        }
    }
    let mut list = Vec::with_capacity(ports.len());
    for (port, t) in ports.iter().zip(got) {
        match t {
            Some(t) => list.push((port.name.clone(), t)),
            None => {
                return Err(inv(format!(
                    "missing input tensor {} ({} {:?}); model {model} needs {}",
                    port.name,
                    port.dtype,
                    port.shape,
                    names(ports)
                )));
            }
        }
    }
    let samples = if batched {
        let first = list.first().and_then(|(_, t)| t.shape.first()).copied();
        if let Some((n, t)) = list.iter().find(|(_, t)| t.shape.first().copied() != first) {
            return Err(inv(format!(
                "input tensor {n} has batch dimension {:?}, expected {:?} like the other inputs",
                t.shape.first(),
                first
            )));
        }
        first.unwrap_or(1).max(0) as u64
    } else {
        1
    };
    Ok((list, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, dtype: Dtype, shape: &[i64]) -> PortInfo {
        PortInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            rank_dynamic: false,
        }
    }

    fn model() -> (Vec<PortInfo>, Vec<PortInfo>) {
        (
            vec![
                port("INPUT0", Dtype::F32, &[-1, 16]),
                port("INPUT1", Dtype::F32, &[-1, 16]),
            ],
            vec![port("OUTPUT0", Dtype::F32, &[-1, 16])],
        )
    }

    fn input(name: &str, dt: &str, shape: &[i64], v: Option<Values>) -> InferInput {
        InferInput {
            name: name.into(),
            datatype: dt.into(),
            shape: shape.to_vec(),
            contents: v,
        }
    }

    fn check(mut r: InferRequest) -> Result<(Vec<(String, Tensor)>, u64), EngineError> {
        let (i, o) = model();
        inputs("add_sub", &i, &o, &mut r, 1 << 20, true)
    }

    fn err(r: InferRequest) -> String {
        let e = check(r).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
        e.message
    }

    fn good() -> InferRequest {
        InferRequest {
            model_name: "add_sub".into(),
            inputs: vec![
                input("INPUT1", "FP32", &[2, 16], None),
                input("INPUT0", "FP32", &[2, 16], None),
            ],
            raw_inputs: vec![vec![0; 128], vec![1; 128]],
            ..Default::default()
        }
    }

    #[test]
    fn valid_raw_request_is_ordered_like_the_model() {
        let (t, samples) = check(good()).unwrap();
        assert_eq!(t[0].0, "INPUT0");
        assert_eq!(t[0].1.data[0], 1);
        assert_eq!(samples, 2);
    }

    #[test]
    fn every_bad_request_class_names_the_tensor_and_expectation() {
        let mut r = good();
        r.inputs[0].datatype = "INT32".into();
        let m = err(r);
        assert!(m.contains("INPUT1") && m.contains("expected FP32"), "{m}");
        let mut r = good();
        r.inputs[0].shape = vec![2, 8];
        let m = err(r);
        assert!(m.contains("INPUT1") && m.contains("[-1, 16]"), "{m}");
        let mut r = good();
        r.raw_inputs[0].pop();
        let m = err(r);
        assert!(m.contains("INPUT1") && m.contains("expected 128"), "{m}");
        let mut r = good();
        r.inputs[0].name = "INPUT9".into();
        let m = err(r);
        assert!(
            m.contains("INPUT9") && m.contains("[INPUT0, INPUT1]"),
            "{m}"
        );
        let mut r = good();
        r.inputs.pop();
        r.raw_inputs.pop();
        let m = err(r);
        assert!(m.contains("missing input tensor INPUT0"), "{m}");
        let mut r = good();
        r.outputs = vec!["OUT".into()];
        let m = err(r);
        assert!(m.contains("OUT") && m.contains("[OUTPUT0]"), "{m}");
        let mut r = good();
        r.raw_inputs.pop();
        assert!(err(r).contains("1 raw_input_contents for 2 inputs"));
        let mut r = good();
        r.inputs[1].name = "INPUT1".into();
        assert!(err(r).contains("more than once"));
        let mut r = good();
        r.raw_inputs = vec![];
        r.inputs[0].contents = Some(Values::Fp32(vec![0.0; 31]));
        r.inputs[1].contents = Some(Values::Fp32(vec![0.0; 32]));
        let m = err(r);
        assert!(m.contains("INPUT1") && m.contains("expected 32"), "{m}");
        let mut r = good();
        r.raw_inputs = vec![];
        r.inputs[1].contents = Some(Values::Fp32(vec![0.0; 32]));
        assert!(err(r).contains("INPUT1 has no data"));
        let mut r = good();
        r.inputs[0].shape = vec![1, 16];
        r.raw_inputs[0].truncate(64);
        assert!(err(r).contains("batch dimension"));
        let (i, o) = model();
        let mut r = good();
        let e = inputs("add_sub", &i, &o, &mut r, 100, false).unwrap_err();
        assert!(
            e.message.contains("daemon.max_message_bytes"),
            "{}",
            e.message
        );
    }
}
