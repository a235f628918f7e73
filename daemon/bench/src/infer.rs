//! `kiln-bench infer`: MiniLM (batch 1, sequence 128) in-process through kiln-openvino
//! versus served by kilnd over the gRPC Unix socket, in the same run and with the same
//! compile settings (ratio goal >= 0.95); then a tiny model (add_sub) under concurrent
//! clients: inferences/s, p50 and p99 (goals >= 15k/s and p99 < 1 ms on 2 cores). Starts
//! the kilnd built beside this binary on a temporary repository.

use kiln_api::inference::grpc_inference_service_client::GrpcInferenceServiceClient;
use kiln_api::inference::model_infer_request::InferInputTensor;
use kiln_api::inference::{ModelInferRequest, ModelReadyRequest};
use kiln_api::kiln::v1::ListModelsRequest;
use kiln_api::kiln::v1::models_client::ModelsClient;
use kiln_openvino::{CompileHints, LibrarySearch, PerformanceHint, Runtime, Tensor};
use kiln_tests::{Kilnd, Start, repo_root, test_config};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const SEQ: i64 = 128;
const GOAL_RATIO: f64 = 0.95;
const GOAL_TINY_PER_S: f64 = 15_000.0;
const GOAL_TINY_P99_MS: f64 = 1.0;

pub struct Report {
    minilm_iters: usize,
    /// Inference precision in effect on each side (the same `auto` setting on both).
    minilm_precision: String,
    tiny_precision: String,
    minilm_inprocess_per_s: f64,
    minilm_served_per_s: f64,
    tiny_clients: usize,
    tiny_requests: usize,
    tiny_per_s: f64,
    tiny_p50_ms: f64,
    tiny_p99_ms: f64,
}

impl Report {
    fn ratio(&self) -> f64 {
        self.minilm_served_per_s / self.minilm_inprocess_per_s
    }

    pub fn json(&self) -> String {
        json!({
            "minilm_inprocess_per_s": self.minilm_inprocess_per_s,
            "minilm_served_per_s": self.minilm_served_per_s,
            "minilm_ratio": self.ratio(),
            "minilm_precision": self.minilm_precision,
            "tiny_precision": self.tiny_precision,
            "tiny_per_s": self.tiny_per_s,
            "tiny_p50_ms": self.tiny_p50_ms,
            "tiny_p99_ms": self.tiny_p99_ms,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let mark = |ok: bool| if ok { "meets goal" } else { "below goal" };
        format!(
            "MiniLM batch 1, seq {SEQ}, {} inferences each, at {}:\n  in-process OpenVINO  {:>9.2} /s\n  served by kilnd      {:>9.2} /s\n  ratio                {:>9.3}   (goal >= {GOAL_RATIO}: {})\n\
             add_sub at {}, {} concurrent clients, {} requests:\n  throughput           {:>9.0} /s  (goal >= {GOAL_TINY_PER_S}: {})\n  p50                  {:>9.3} ms\n  p99                  {:>9.3} ms  (goal < {GOAL_TINY_P99_MS}: {})",
            self.minilm_iters,
            self.minilm_precision,
            self.minilm_inprocess_per_s,
            self.minilm_served_per_s,
            self.ratio(),
            mark(self.ratio() >= GOAL_RATIO),
            self.tiny_precision,
            self.tiny_clients,
            self.tiny_requests,
            self.tiny_per_s,
            mark(self.tiny_per_s >= GOAL_TINY_PER_S),
            self.tiny_p50_ms,
            self.tiny_p99_ms,
            mark(self.tiny_p99_ms < GOAL_TINY_P99_MS),
        )
    }
}

fn venv() -> Result<PathBuf, String> {
    kiln_openvino::find_repo_venv(&repo_root())
        .ok_or_else(|| "no .venv with openvino in the checkout; run `scripts/setup.sh run`".into())
}

/// The MiniLM inputs: a 7-token sentence padded to 128.
fn minilm_inputs() -> Result<Vec<(String, Tensor)>, String> {
    let toks = [101i64, 7592, 2088, 2003, 1037, 3231, 102];
    let mut ids = vec![0i64; SEQ as usize];
    ids[..toks.len()].copy_from_slice(&toks);
    let mask: Vec<i64> = ids.iter().map(|&t| i64::from(t != 0)).collect();
    let types = vec![0i64; SEQ as usize];
    let t = |v: &[i64]| Tensor::from_i64(&[1, SEQ], v).map_err(|e| e.to_string());
    Ok(vec![
        ("input_ids".into(), t(&ids)?),
        ("attention_mask".into(), t(&mask)?),
        ("token_type_ids".into(), t(&types)?),
    ])
}

/// In-process inferences/s at the device's own precision (what `precision = "auto"` serves),
/// and that precision.
fn in_process(model_dir: &Path, iters: usize) -> Result<(f64, String), String> {
    let rt = Runtime::load(&LibrarySearch::new(None, vec![venv()?])).map_err(|e| e.to_string())?;
    let model = rt.read_model(model_dir).map_err(|e| e.to_string())?;
    let hints = CompileHints {
        performance: PerformanceHint::Latency,
        ..Default::default()
    };
    let compiled = rt
        .compile(&model, "CPU", &hints)
        .map_err(|e| e.to_string())?;
    let inputs = minilm_inputs()?;
    for _ in 0..3 {
        compiled.infer(&inputs).map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    for _ in 0..iters {
        compiled.infer(&inputs).map_err(|e| e.to_string())?;
    }
    Ok((
        iters as f64 / start.elapsed().as_secs_f64(),
        compiled.precision().to_string(),
    ))
}

/// The precision kilnd serves `model` at (its ready version).
async fn served_precision(socket: &Path, model: &str) -> Result<String, String> {
    let mut c = ModelsClient::new(channel(socket).await?);
    let list = c
        .list(ListModelsRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    list.models
        .into_iter()
        .find(|m| m.name == model && m.state == "READY")
        .map(|m| m.precision)
        .ok_or_else(|| format!("kilnd lists no ready {model}"))
}

/// A gRPC channel to kilnd's socket (kilnctl's connector).
pub(crate) async fn channel(socket: &Path) -> Result<Channel, String> {
    kilnctl::client::connect(socket)
        .await
        .map_err(|f| f.message)
}

fn request(model: &str, inputs: &[(String, Tensor)]) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs: inputs
            .iter()
            .map(|(n, t)| InferInputTensor {
                name: n.clone(),
                datatype: t.dtype.kserve_name().into(),
                shape: t.shape.clone(),
                parameters: Default::default(),
                contents: None,
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, t)| t.data.clone()).collect(),
        ..Default::default()
    }
}

async fn served_minilm(socket: &Path, iters: usize) -> Result<f64, String> {
    let mut c = GrpcInferenceServiceClient::new(channel(socket).await?);
    let req = request("minilm", &minilm_inputs()?);
    for _ in 0..3 {
        c.model_infer(req.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    for _ in 0..iters {
        c.model_infer(req.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(iters as f64 / start.elapsed().as_secs_f64())
}

async fn tiny(
    socket: &Path,
    clients: usize,
    duration: Duration,
) -> Result<(usize, f64, Vec<Duration>), String> {
    let a = Tensor::from_f32(&[1, 16], &[1.0; 16]).map_err(|e| e.to_string())?;
    let req = request(
        "add_sub",
        &[("INPUT0".into(), a.clone()), ("INPUT1".into(), a)],
    );
    let mut tasks = Vec::new();
    let start = Instant::now();
    let end = start + duration;
    for _ in 0..clients {
        let mut c = GrpcInferenceServiceClient::new(channel(socket).await?);
        let req = req.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            // Warm-up.
            for _ in 0..50 {
                c.model_infer(req.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            while Instant::now() < end {
                let t = Instant::now();
                c.model_infer(req.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                lat.push(t.elapsed());
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    Ok((all.len(), all.len() as f64 / elapsed, all))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

pub fn run(iters: usize, clients: usize, seconds: u64) -> Result<Report, String> {
    let minilm = repo_root().join(".dev/models/minilm/1");
    if !minilm.join("model.xml").is_file() {
        return Err(format!(
            "{} is missing; build it with `scripts/setup.sh run`",
            minilm.display()
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let repo = dir.path().join("repo");
    let out = std::process::Command::new(venv()?.join("bin/python"))
        .arg(repo_root().join("scripts/make-tiny-models.py"))
        .arg("--out")
        .arg(&repo)
        .output()
        .map_err(|e| format!("run make-tiny-models.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "make-tiny-models.py: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Same settings on both sides: latency hint for the batch-1 comparison; the tiny model
    // keeps the serving default (throughput hint, a request per core).
    std::fs::create_dir_all(repo.join("minilm")).map_err(|e| e.to_string())?;
    std::os::unix::fs::symlink(&minilm, repo.join("minilm/1")).map_err(|e| e.to_string())?;
    std::fs::write(
        repo.join("minilm/kiln-model.toml"),
        "[model]\nperformance = \"latency\"\nprecision = \"auto\"\n",
    )
    .map_err(|e| e.to_string())?;
    let conf = dir.path().join("kiln.toml");
    let body = format!(
        "[daemon]\nsocket_group = \"\"\nlog_level = \"warn\"\n[models]\nrepository = \"{}\"\n[openvino]\npython_prefixes = [\"{}\"]\n",
        repo.display(),
        venv()?.display()
    );
    std::fs::write(&conf, test_config(dir.path(), &body)).map_err(|e| e.to_string())?;
    let kilnd = Kilnd::try_start(Start {
        config: Some(conf),
        ..Default::default()
    })?;
    let (inprocess, inprocess_precision) = in_process(&minilm, iters)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let socket = kilnd.socket.clone();
    let (served, (n, per_s, lat), minilm_precision, tiny_precision) = rt.block_on(async {
        let mut c = GrpcInferenceServiceClient::new(channel(&socket).await?);
        for m in ["minilm", "add_sub"] {
            let ready = c
                .model_ready(ModelReadyRequest {
                    name: m.into(),
                    version: String::new(),
                })
                .await
                .map_err(|e| e.to_string())?
                .into_inner()
                .ready;
            if !ready {
                return Err(format!(
                    "kilnd did not load {m}; its log:\n{}",
                    kilnd.stderr()
                ));
            }
        }
        let served = served_minilm(&socket, iters).await?;
        let t = tiny(&socket, clients, Duration::from_secs(seconds)).await?;
        let mp = served_precision(&socket, "minilm").await?;
        let tp = served_precision(&socket, "add_sub").await?;
        Ok::<_, String>((served, t, mp, tp))
    })?;
    if minilm_precision != inprocess_precision {
        return Err(format!(
            "MiniLM ran at {inprocess_precision} in-process but kilnd served it at \
             {minilm_precision}: the ratio would compare different work"
        ));
    }
    Ok(Report {
        minilm_iters: iters,
        minilm_precision,
        tiny_precision,
        minilm_inprocess_per_s: inprocess,
        minilm_served_per_s: served,
        tiny_clients: clients,
        tiny_requests: n,
        tiny_per_s: per_s,
        tiny_p50_ms: pct(&lat, 0.50),
        tiny_p99_ms: pct(&lat, 0.99),
    })
}
