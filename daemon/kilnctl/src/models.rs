//! `kilnctl models list|load|unload|stats`, `kilnctl infer` and `kilnctl embed`: model
//! serving from the command line. Loading, unloading and inference use the KServe v2
//! service (what any client uses); the listing and percentiles come from `kiln.v1.Models`.
//! `embed` tokenises on this side with the model's `tokenizer.json`.

use crate::client::{Failure, connect};
use kiln_api::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_api::inference::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use kiln_api::inference::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ModelRepositoryParameter,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest, model_repository_parameter,
};
use kiln_api::kiln::v1::daemon_client::DaemonClient;
use kiln_api::kiln::v1::models_client::ModelsClient;
use kiln_api::kiln::v1::{ListModelsRequest, ModelEntry, ModelStatsRequest, StatusRequest};
use serde_json::{Value, json};
use std::path::Path;

/// `kilnctl models list|load|unload|stats` (import and rollback live in storage.rs).
pub async fn run(socket: &Path, cmd: &crate::cli::ModelsCommand) -> Result<String, Failure> {
    use crate::cli::ModelsCommand as M;
    match cmd {
        M::List { json } => list(socket, *json).await,
        M::Load { name, device, json } => load(socket, name, device.as_deref(), *json).await,
        M::Unload { name, json } => unload(socket, name, *json).await,
        M::Stats {
            name,
            version,
            json,
        } => stats(socket, name.as_deref(), version.as_deref(), *json).await,
        other => Err(usage(format!(
            "{other:?} is handled by the storage commands"
        ))),
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        message: msg.into(),
        code: 1,
    }
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn entry_json(m: &ModelEntry) -> Value {
    let t = |v: &[kiln_api::kiln::v1::ModelTensor]| {
        v.iter()
            .map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape}))
            .collect::<Vec<_>>()
    };
    json!({
        "name": m.name, "version": m.version, "state": m.state, "reason": m.reason,
        "path": m.path, "platform": m.platform, "kind": m.kind, "device": m.device,
        "fallback_reason": m.fallback_reason, "reservation_bytes": m.reservation_bytes,
        "calibrated_per_s": m.calibrated_per_s, "max_batch": m.max_batch,
        "max_queue_delay_us": m.max_queue_delay_us, "pool_size": m.pool_size,
        "precision": m.precision, "inputs": t(&m.inputs), "outputs": t(&m.outputs),
    })
}

async fn entries(socket: &Path) -> Result<Vec<ModelEntry>, Failure> {
    let mut c = ModelsClient::new(connect(socket).await?);
    Ok(c.list(ListModelsRequest {}).await?.into_inner().models)
}

/// `kilnctl models list`: every version with state, device, reservation; plus the budget.
pub async fn list(socket: &Path, as_json: bool) -> Result<String, Failure> {
    let models = entries(socket).await?;
    let mut d = DaemonClient::new(connect(socket).await?);
    let budget = d.status(StatusRequest {}).await?.into_inner().budget;
    if as_json {
        let b = budget.map(|b| {
            json!({
                "budget_bytes": b.budget_bytes, "reserved_bytes": b.reserved_bytes,
                "free_bytes": b.free_bytes,
                "reservations": b.reservations.iter().map(|r| json!({"id": r.id, "owner": r.owner, "bytes": r.bytes})).collect::<Vec<_>>(),
            })
        });
        let v = json!({"models": models.iter().map(entry_json).collect::<Vec<_>>(), "budget": b});
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut out = format!(
        "{:<16} {:>3} {:<11} {:<6} {:<5} {:>9} {:>10}  {}\n",
        "MODEL", "VER", "STATE", "DEVICE", "PREC", "RESERVED", "CALIB/S", "NOTE"
    );
    for m in &models {
        let note = if m.fallback_reason.is_empty() {
            m.reason.clone()
        } else {
            m.fallback_reason.clone()
        };
        out.push_str(&format!(
            "{:<16} {:>3} {:<11} {:<6} {:<5} {:>9} {:>10}  {}\n",
            m.name,
            m.version,
            m.state,
            if m.device.is_empty() { "-" } else { &m.device },
            if m.precision.is_empty() {
                "-"
            } else {
                &m.precision
            },
            if m.reservation_bytes == 0 {
                "-".into()
            } else {
                gib(m.reservation_bytes)
            },
            if m.calibrated_per_s > 0.0 {
                format!("{:.0}", m.calibrated_per_s)
            } else {
                "-".into()
            },
            note
        ));
    }
    if let Some(b) = budget {
        out.push_str(&format!(
            "\nUMA budget {}: {} reserved, {} free\n",
            gib(b.budget_bytes),
            gib(b.reserved_bytes),
            gib(b.free_bytes)
        ));
    }
    Ok(out)
}

/// `kilnctl models load NAME [--device D]`.
pub async fn load(
    socket: &Path,
    name: &str,
    device: Option<&str>,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = GrpcInferenceServiceClient::new(connect(socket).await?);
    let mut parameters = std::collections::HashMap::new();
    if let Some(d) = device {
        parameters.insert(
            "device".to_string(),
            ModelRepositoryParameter {
                parameter_choice: Some(model_repository_parameter::ParameterChoice::StringParam(
                    d.to_string(),
                )),
            },
        );
    }
    c.repository_model_load(RepositoryModelLoadRequest {
        repository_name: String::new(),
        model_name: name.to_string(),
        parameters,
    })
    .await?;
    let loaded: Vec<ModelEntry> = entries(socket)
        .await?
        .into_iter()
        .filter(|m| m.name == name && m.state == "READY")
        .collect();
    if as_json {
        let v: Vec<Value> = loaded.iter().map(entry_json).collect();
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut out = String::new();
    for m in &loaded {
        out.push_str(&format!(
            "loaded {} version {} on {} ({} reserved, {:.0} inferences/s measured)\n",
            m.name,
            m.version,
            m.device,
            gib(m.reservation_bytes),
            m.calibrated_per_s
        ));
        if !m.fallback_reason.is_empty() {
            out.push_str(&format!("  note: {}\n", m.fallback_reason));
        }
    }
    Ok(out)
}

/// `kilnctl models unload NAME`.
pub async fn unload(socket: &Path, name: &str, as_json: bool) -> Result<String, Failure> {
    let mut c = GrpcInferenceServiceClient::new(connect(socket).await?);
    c.repository_model_unload(RepositoryModelUnloadRequest {
        repository_name: String::new(),
        model_name: name.to_string(),
        parameters: Default::default(),
    })
    .await?;
    Ok(if as_json {
        json!({"unloaded": name}).to_string()
    } else {
        format!("unloaded {name}\n")
    })
}

/// `kilnctl models stats [NAME] [--version V]`.
pub async fn stats(
    socket: &Path,
    name: Option<&str>,
    version: Option<&str>,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = ModelsClient::new(connect(socket).await?);
    let s = c
        .stats(ModelStatsRequest {
            name: name.unwrap_or("").into(),
            version: version.unwrap_or("").into(),
        })
        .await?
        .into_inner()
        .stats;
    if as_json {
        let v: Vec<Value> = s
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "version": s.version, "device": s.device,
                    "inference_count": s.inference_count, "execution_count": s.execution_count,
                    "success_count": s.success_count, "fail_count": s.fail_count,
                    "avg_queue_us": s.queue_ns.checked_div(s.success_count).unwrap_or(0) / 1000,
                    "avg_compute_us": s.compute_infer_ns.checked_div(s.success_count).unwrap_or(0) / 1000,
                    "p50_us": s.p50_us, "p95_us": s.p95_us, "p99_us": s.p99_us,
                    "last_inference_ms": s.last_inference_ms,
                })
            })
            .collect();
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut out = format!(
        "{:<16} {:>3} {:<6} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8}\n",
        "MODEL", "VER", "DEVICE", "REQUESTS", "FAILED", "SAMPLES", "P50 us", "P95 us", "P99 us"
    );
    for s in &s {
        out.push_str(&format!(
            "{:<16} {:>3} {:<6} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8}\n",
            s.name,
            s.version,
            s.device,
            s.success_count,
            s.fail_count,
            s.inference_count,
            s.p50_us,
            s.p95_us,
            s.p99_us
        ));
    }
    Ok(out)
}

/// Flatten a nested JSON array of numbers/bools; returns the values and the nesting shape.
fn flatten(v: &Value, what: &str) -> Result<(Vec<f64>, Vec<i64>), Failure> {
    fn walk(
        v: &Value,
        depth: usize,
        shape: &mut Vec<i64>,
        out: &mut Vec<f64>,
    ) -> Result<(), String> {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len() as i64);
                } else if shape[depth] != items.len() as i64 {
                    return Err(format!(
                        "ragged array: dimension {depth} has {} and {} elements",
                        shape[depth],
                        items.len()
                    ));
                }
                items
                    .iter()
                    .try_for_each(|i| walk(i, depth + 1, shape, out))
            }
            Value::Number(n) => {
                out.push(n.as_f64().unwrap_or(0.0));
                Ok(())
            }
            Value::Bool(b) => {
                out.push(if *b { 1.0 } else { 0.0 });
                Ok(())
            }
            other => Err(format!("{other} is not a number")),
        }
    }
    let mut shape = Vec::new();
    let mut out = Vec::new();
    walk(v, 0, &mut shape, &mut out).map_err(|e| usage(format!("--input {what}: {e}")))?;
    Ok((out, shape))
}

fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = (man | 0x80_0000) >> (1 - e + 13);
        return sign | m as u16;
    }
    let mut h = sign | ((e as u16) << 10) | (man >> 13) as u16;
    if man & 0x1000 != 0 {
        h += 1; // round half up (carries into the exponent correctly)
    }
    h
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Typed contents (or raw bytes for FP16/BF16) for `values` of `datatype`.
fn encode(
    datatype: &str,
    values: &[f64],
    what: &str,
) -> Result<(Option<InferTensorContents>, Option<Vec<u8>>), Failure> {
    let mut c = InferTensorContents::default();
    match datatype {
        "BOOL" => c.bool_contents = values.iter().map(|v| *v != 0.0).collect(),
        "INT8" | "INT16" | "INT32" => c.int_contents = values.iter().map(|v| *v as i32).collect(),
        "INT64" => c.int64_contents = values.iter().map(|v| *v as i64).collect(),
        "UINT8" | "UINT16" | "UINT32" => {
            c.uint_contents = values.iter().map(|v| *v as u32).collect()
        }
        "UINT64" => c.uint64_contents = values.iter().map(|v| *v as u64).collect(),
        "FP32" => c.fp32_contents = values.iter().map(|v| *v as f32).collect(),
        "FP64" => c.fp64_contents = values.to_vec(),
        "FP16" => {
            let raw = values
                .iter()
                .flat_map(|v| f32_to_f16(*v as f32).to_le_bytes())
                .collect();
            return Ok((None, Some(raw)));
        }
        "BF16" => {
            let raw = values
                .iter()
                .flat_map(|v| (((*v as f32).to_bits() + 0x8000) >> 16).to_le_bytes()[..2].to_vec())
                .collect();
            return Ok((None, Some(raw)));
        }
        other => {
            return Err(usage(format!(
                "--input {what}: the model expects datatype {other}, which kilnctl cannot send"
            )));
        }
    }
    Ok((Some(c), None))
}

/// Raw little-endian output bytes as JSON numbers.
fn decode(datatype: &str, raw: &[u8]) -> Vec<Value> {
    fn chunks<const N: usize>(raw: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        raw.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    match datatype {
        "BOOL" => raw.iter().map(|b| json!(*b != 0)).collect(),
        "UINT8" => raw.iter().map(|b| json!(*b)).collect(),
        "INT8" => raw.iter().map(|b| json!(*b as i8)).collect(),
        "UINT16" => chunks::<2>(raw)
            .map(|a| json!(u16::from_le_bytes(a)))
            .collect(),
        "INT16" => chunks::<2>(raw)
            .map(|a| json!(i16::from_le_bytes(a)))
            .collect(),
        "UINT32" => chunks::<4>(raw)
            .map(|a| json!(u32::from_le_bytes(a)))
            .collect(),
        "INT32" => chunks::<4>(raw)
            .map(|a| json!(i32::from_le_bytes(a)))
            .collect(),
        "UINT64" => chunks::<8>(raw)
            .map(|a| json!(u64::from_le_bytes(a)))
            .collect(),
        "INT64" => chunks::<8>(raw)
            .map(|a| json!(i64::from_le_bytes(a)))
            .collect(),
        "FP16" => chunks::<2>(raw)
            .map(|a| json!(f16_to_f32(u16::from_le_bytes(a))))
            .collect(),
        "BF16" => chunks::<2>(raw)
            .map(|a| json!(f32::from_bits(u32::from(u16::from_le_bytes(a)) << 16)))
            .collect(),
        "FP32" => chunks::<4>(raw)
            .map(|a| json!(f32::from_le_bytes(a)))
            .collect(),
        "FP64" => chunks::<8>(raw)
            .map(|a| json!(f64::from_le_bytes(a)))
            .collect(),
        _ => Vec::new(),
    }
}

struct Output {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    data: Vec<Value>,
}

/// One inference with raw or typed inputs; outputs come back raw and are decoded here.
async fn run_infer(
    socket: &Path,
    model: &str,
    version: &str,
    inputs: Vec<(String, String, Vec<i64>, Vec<f64>)>,
    outputs: &[&str],
) -> Result<(String, Vec<Output>), Failure> {
    let mut c = GrpcInferenceServiceClient::new(connect(socket).await?);
    let mut tensors = Vec::new();
    let mut raw = Vec::new();
    let mut any_raw = false;
    let mut encoded = Vec::new();
    for (name, dt, shape, values) in &inputs {
        let (typed, bytes) = encode(dt, values, name)?;
        any_raw |= bytes.is_some();
        encoded.push((name, dt, shape, typed, bytes, values));
    }
    for (name, dt, shape, typed, bytes, values) in encoded {
        // One raw input means every input travels raw.
        let contents = if any_raw {
            let b = match bytes {
                Some(b) => b,
                None => raw_of(dt, values),
            };
            raw.push(b);
            None
        } else {
            typed
        };
        tensors.push(InferInputTensor {
            name: name.clone(),
            datatype: dt.clone(),
            shape: shape.clone(),
            parameters: Default::default(),
            contents,
        });
    }
    let r = c
        .model_infer(ModelInferRequest {
            model_name: model.into(),
            model_version: version.into(),
            id: String::new(),
            parameters: Default::default(),
            inputs: tensors,
            outputs: outputs
                .iter()
                .map(|o| InferRequestedOutputTensor {
                    name: o.to_string(),
                    parameters: Default::default(),
                })
                .collect(),
            raw_input_contents: raw,
        })
        .await?
        .into_inner();
    let outs = r
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| Output {
            name: o.name.clone(),
            datatype: o.datatype.clone(),
            shape: o.shape.clone(),
            data: r
                .raw_output_contents
                .get(i)
                .map(|b| decode(&o.datatype, b))
                .unwrap_or_default(),
        })
        .collect();
    Ok((r.model_version, outs))
}

fn raw_of(dt: &str, v: &[f64]) -> Vec<u8> {
    match dt {
        "BOOL" | "UINT8" => v.iter().map(|x| *x as u8).collect(),
        "INT8" => v.iter().map(|x| *x as i8 as u8).collect(),
        "INT16" => v.iter().flat_map(|x| (*x as i16).to_le_bytes()).collect(),
        "UINT16" => v.iter().flat_map(|x| (*x as u16).to_le_bytes()).collect(),
        "INT32" => v.iter().flat_map(|x| (*x as i32).to_le_bytes()).collect(),
        "UINT32" => v.iter().flat_map(|x| (*x as u32).to_le_bytes()).collect(),
        "INT64" => v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
        "UINT64" => v.iter().flat_map(|x| (*x as u64).to_le_bytes()).collect(),
        "FP64" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        _ => v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect(),
    }
}

/// `kilnctl infer MODEL --input NAME=<json array> [--shape NAME=d1,d2]`.
pub async fn infer(
    socket: &Path,
    model: &str,
    version: Option<&str>,
    inputs: &[String],
    shapes: &[String],
    as_json: bool,
) -> Result<String, Failure> {
    if inputs.is_empty() {
        return Err(usage(
            "give at least one --input NAME=<json array>, e.g. --input INPUT0='[[1,2,3]]'",
        ));
    }
    let mut c = GrpcInferenceServiceClient::new(connect(socket).await?);
    let md = c
        .model_metadata(ModelMetadataRequest {
            name: model.into(),
            version: version.unwrap_or("").into(),
        })
        .await?
        .into_inner();
    let mut shape_of = std::collections::HashMap::new();
    for s in shapes {
        let (n, dims) = s
            .split_once('=')
            .ok_or_else(|| usage(format!("--shape {s:?}: expected NAME=d1,d2,...")))?;
        let dims: Result<Vec<i64>, _> = dims.split(',').map(|d| d.trim().parse::<i64>()).collect();
        let dims =
            dims.map_err(|_| usage(format!("--shape {s:?}: dimensions must be integers")))?;
        shape_of.insert(n.to_string(), dims);
    }
    let mut list = Vec::new();
    for i in inputs {
        let (name, text) = i
            .split_once('=')
            .ok_or_else(|| usage(format!("--input {i:?}: expected NAME=<json array>")))?;
        let meta = md.inputs.iter().find(|t| t.name == name).ok_or_else(|| {
            let names: Vec<&str> = md.inputs.iter().map(|t| t.name.as_str()).collect();
            usage(format!(
                "model {model} has no input {name:?}; its inputs are {names:?}"
            ))
        })?;
        let v: Value = serde_json::from_str(text)
            .map_err(|e| usage(format!("--input {name}: not JSON ({e})")))?;
        let (values, nested) = flatten(&v, name)?;
        let shape = shape_of.remove(name).unwrap_or(nested);
        list.push((name.to_string(), meta.datatype.clone(), shape, values));
    }
    if let Some(n) = shape_of.keys().next() {
        return Err(usage(format!("--shape {n}: no --input {n} given")));
    }
    let (v, outs) = run_infer(socket, model, version.unwrap_or(""), list, &[]).await?;
    if as_json {
        let o: Vec<Value> = outs
            .iter()
            .map(|o| json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": o.data}))
            .collect();
        return Ok(serde_json::to_string_pretty(
            &json!({"model": model, "version": v, "outputs": o}),
        )
        .unwrap_or_default());
    }
    let mut out = format!("model {model} version {v}\n");
    for o in &outs {
        out.push_str(&format!(
            "{} {} {:?}: {}\n",
            o.name,
            o.datatype,
            o.shape,
            serde_json::to_string(&o.data).unwrap_or_default()
        ));
    }
    Ok(out)
}

/// `kilnctl embed TEXT... [--model minilm]`: tokenise here, infer in kilnd.
pub async fn embed(
    socket: &Path,
    texts: &[String],
    model: &str,
    as_json: bool,
) -> Result<String, Failure> {
    if texts.is_empty() {
        return Err(usage("give at least one text to embed"));
    }
    let list = entries(socket).await?;
    let m = list
        .iter()
        .filter(|m| m.name == model && m.state == "READY")
        .max_by_key(|m| m.version)
        .ok_or_else(|| usage(format!("model {model} is not loaded; `kilnctl models load {model}` first (see `kilnctl models list`)")))?;
    let tok_path = Path::new(&m.path).join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| {
        usage(format!(
            "cannot read the tokenizer {}: {e}; embedding models need tokenizer.json beside the model files (and kilnctl must be able to read it)",
            tok_path.display()
        ))
    })?;
    let enc = tok
        .encode_batch(texts.to_vec(), true)
        .map_err(|e| usage(format!("tokenising failed: {e}")))?;
    let len = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
    let n = enc.len() as i64;
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut types = Vec::new();
    for e in &enc {
        let pad = len - e.get_ids().len();
        ids.extend(
            e.get_ids()
                .iter()
                .map(|x| f64::from(*x))
                .chain(std::iter::repeat_n(0.0, pad)),
        );
        mask.extend(
            e.get_attention_mask()
                .iter()
                .map(|x| f64::from(*x))
                .chain(std::iter::repeat_n(0.0, pad)),
        );
        types.extend(
            e.get_type_ids()
                .iter()
                .map(|x| f64::from(*x))
                .chain(std::iter::repeat_n(0.0, pad)),
        );
    }
    let shape = vec![n, len as i64];
    let mut inputs = Vec::new();
    for (name, vals) in [
        ("input_ids", ids),
        ("attention_mask", mask),
        ("token_type_ids", types),
    ] {
        if m.inputs.iter().any(|t| t.name == name) {
            let dt = m
                .inputs
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.datatype.clone())
                .unwrap_or_default();
            inputs.push((name.to_string(), dt, shape.clone(), vals));
        }
    }
    let out_name = m
        .outputs
        .iter()
        .find(|o| o.name == "sentence_embedding")
        .or_else(|| m.outputs.first())
        .map(|o| o.name.clone())
        .ok_or_else(|| usage(format!("model {model} has no outputs")))?;
    let (_, outs) = run_infer(socket, model, &m.version.to_string(), inputs, &[&out_name]).await?;
    let o = outs
        .first()
        .ok_or_else(|| usage("the model returned no output"))?;
    let dim = o.shape.last().copied().unwrap_or(0).max(1) as usize;
    let vecs: Vec<Vec<f64>> = o
        .data
        .chunks(dim)
        .map(|c| c.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect())
        .collect();
    if as_json {
        return Ok(serde_json::to_string(
            &json!({"model": model, "version": m.version, "dimensions": dim, "embeddings": vecs}),
        )
        .unwrap_or_default());
    }
    let mut out = String::new();
    for (t, v) in texts.iter().zip(&vecs) {
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
        out.push_str(&format!(
            "{t:?}: [{} ...] ({dim} dims, norm {norm:.3})\n",
            head.join(", ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_give_values_and_shape() {
        let (v, s) = flatten(&json!([[1, 2, 3], [4, 5, 6]]), "x").unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let e = flatten(&json!([[1, 2], [3]]), "x").unwrap_err();
        assert!(e.message.contains("ragged"), "{}", e.message);
        assert!(flatten(&json!(["a"]), "x").is_err());
    }

    #[test]
    fn half_precision_round_trips() {
        for x in [0.0f32, 1.0, -2.5, 0.333_251_95, 65504.0, 6.1e-5, 1e-7] {
            let back = f16_to_f32(f32_to_f16(x));
            assert!((back - x).abs() <= x.abs() * 1e-3 + 6e-8, "{x} -> {back}");
        }
        assert!(f16_to_f32(f32_to_f16(1e6)).is_infinite());
    }
}
