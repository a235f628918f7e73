//! `kiln-bench fuzz`: malformed and edge-case gRPC requests over the real socket, to every
//! unary method of every service, mixed with valid calls. The bodies are mutations (bit
//! flips, random bytes, truncation, repeats) of empty and typed seed messages, sent as raw
//! protobuf through a pass-through codec, so the server's decoding is exercised as well as
//! its validation. Job submissions, model imports and streams are left out: they would run
//! programs, copy the filesystem or never end. Reports requests, counts by status,
//! crashes (kilnd gone), valid calls that failed, and kilnd's RSS before and after.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::{Buf, BufMut};
use kiln_testkit::Rng;
use kiln_tests::{Kilnd, Start, test_config};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Bytes in, bytes out.
#[derive(Clone, Default)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut v = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

/// Every unary method but job submission (it would run what it is given).
const METHODS: &[&str] = &[
    "/inference.GRPCInferenceService/ModelInfer",
    "/inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelReady",
    "/inference.GRPCInferenceService/ModelStatistics",
    "/inference.GRPCInferenceService/RepositoryIndex",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerMetadata",
    "/inference.GRPCInferenceService/ServerReady",
    "/kiln.v1.Daemon/Reload",
    "/kiln.v1.Daemon/Status",
    "/kiln.v1.Devices/List",
    "/kiln.v1.Devices/Rescan",
    "/kiln.v1.Jobs/Cancel",
    "/kiln.v1.Jobs/Checkpoint",
    "/kiln.v1.Jobs/Get",
    "/kiln.v1.Jobs/List",
    "/kiln.v1.Models/List",
    "/kiln.v1.Models/Stats",
    "/kiln.v1.Storage/ListSnapshots",
    "/kiln.v1.Storage/Prune",
    "/kiln.v1.Storage/Rollback",
    "/kiln.v1.Storage/RollbackModel",
    "/kiln.v1.Storage/Snapshot",
    "/kiln.v1.Storage/Status",
    "/kiln.v1.Vectors/Add",
    "/kiln.v1.Vectors/CreateCollection",
    "/kiln.v1.Vectors/Delete",
    "/kiln.v1.Vectors/DropCollection",
    "/kiln.v1.Vectors/Embed",
    "/kiln.v1.Vectors/EmbedAndAdd",
    "/kiln.v1.Vectors/List",
    "/kiln.v1.Vectors/Search",
    "/kiln.v1.Vectors/SearchText",
    "/kiln.v1.Vectors/Stats",
];

/// Calls that must succeed whatever else is going on (empty requests).
const VALID: &[&str] = &[
    "/inference.GRPCInferenceService/ServerLive",
    "/kiln.v1.Daemon/Status",
    "/kiln.v1.Devices/List",
    "/kiln.v1.Vectors/List",
];

fn seeds() -> Vec<Vec<u8>> {
    use kiln_api::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    let infer = ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; 16]],
        ..Default::default()
    };
    let create = kiln_api::kiln::v1::CreateCollectionRequest {
        name: "c".into(),
        dim: 4,
        ..Default::default()
    };
    vec![Vec::new(), infer.encode_to_vec(), create.encode_to_vec()]
}

fn mutate(rng: &mut Rng, mut v: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(6) {
        let len = v.len();
        match rng.below(6) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(24);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            2 if len > 0 => v.truncate(rng.below(len)),
            3 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0x00, 0x0a, 0x12, 0x1a, 0x7f, 0x80, 0xff][rng.below(7)];
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let piece = v[a..(a + 1 + rng.below(16)).min(len)].to_vec();
                for _ in 0..1 + rng.below(32) {
                    v.extend_from_slice(&piece);
                }
            }
            _ => {
                // A length-delimited field with a huge declared length.
                v.extend_from_slice(&[0x0a, 0xff, 0xff, 0xff, 0x0f]);
            }
        }
    }
    v.truncate(1 << 16);
    v
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

pub struct Report {
    requests: u64,
    by_status: BTreeMap<String, u64>,
    crashes: u64,
    valid_failed: u64,
    rss_start_bytes: u64,
    rss_end_bytes: u64,
    seconds: f64,
}

impl Report {
    pub fn json(&self) -> String {
        serde_json::json!({
            "requests": self.requests,
            "by_status": self.by_status,
            "crashes": self.crashes,
            "valid_failed": self.valid_failed,
            "rss_start_bytes": self.rss_start_bytes,
            "rss_end_bytes": self.rss_end_bytes,
            "seconds": self.seconds,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let mut s = format!(
            "requests {} in {:.1} s; crashes {}; valid calls failed {}; RSS {:.1} → {:.1} MiB\nby status:",
            self.requests,
            self.seconds,
            self.crashes,
            self.valid_failed,
            self.rss_start_bytes as f64 / 1048576.0,
            self.rss_end_bytes as f64 / 1048576.0
        );
        for (k, v) in &self.by_status {
            s.push_str(&format!("\n  {k:<20} {v}"));
        }
        s
    }

    /// Fails the run when kilnd went away or refused a valid call.
    pub fn verdict(&self) -> Result<(), String> {
        if self.crashes > 0 || self.valid_failed > 0 {
            return Err(format!(
                "{} crashes, {} valid calls failed: {}",
                self.crashes,
                self.valid_failed,
                self.json()
            ));
        }
        Ok(())
    }
}

pub fn run(requests: u64, clients: usize) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = dir.path().join("kiln.toml");
    std::fs::write(
        &conf,
        test_config(
            dir.path(),
            "[daemon]\nsocket_group = \"\"\nlog_level = \"error\"\n",
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut kilnd = Kilnd::try_start(Start {
        config: Some(conf),
        ..Default::default()
    })?;
    let pid = kilnd.child.id();
    let rss_start = rss(pid);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let socket = kilnd.socket.clone();
    let start = std::time::Instant::now();
    let (by_status, valid_failed) = rt.block_on(drive(&socket, requests, clients.max(1)))?;
    let seconds = start.elapsed().as_secs_f64();
    let crashes = match kilnd.child.try_wait() {
        Ok(None) => 0,
        _ => 1,
    };
    Ok(Report {
        requests,
        by_status,
        crashes,
        valid_failed,
        rss_start_bytes: rss_start,
        rss_end_bytes: rss(pid),
        seconds,
    })
}

async fn drive(
    socket: &Path,
    requests: u64,
    clients: usize,
) -> Result<(BTreeMap<String, u64>, u64), String> {
    let channel = crate::infer::channel(socket).await?;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = channel.clone();
        let share = requests / clients as u64 + u64::from((c as u64) < requests % clients as u64);
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 1);
            let seeds = seeds();
            let mut grpc = tonic::client::Grpc::new(channel);
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            let mut valid_failed = 0u64;
            for i in 0..share {
                let valid = i % 10 == 0;
                let (path, body) = if valid {
                    (VALID[rng.below(VALID.len())], Vec::new())
                } else {
                    let seed = seeds[rng.below(seeds.len())].clone();
                    (METHODS[rng.below(METHODS.len())], mutate(&mut rng, seed))
                };
                if grpc.ready().await.is_err() {
                    *by.entry("transport-error".into()).or_default() += 1;
                    continue;
                }
                let r = grpc
                    .unary(
                        tonic::Request::new(body),
                        http::uri::PathAndQuery::from_static(path),
                        Raw,
                    )
                    .await;
                let code = match &r {
                    Ok(_) => "Ok".to_string(),
                    Err(s) => format!("{:?}", s.code()),
                };
                if let Err(s) = &r
                    && std::env::var_os("KILN_FUZZ_SHOW").is_some()
                    && !by.contains_key(&code)
                {
                    eprintln!("{code} ({path}): {}", s.message());
                }
                if valid && r.is_err() {
                    valid_failed += 1;
                }
                *by.entry(code).or_default() += 1;
            }
            (by, valid_failed)
        }));
    }
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = 0;
    for t in tasks {
        let (b, f) = t.await.map_err(|e| e.to_string())?;
        for (k, v) in b {
            *by.entry(k).or_default() += v;
        }
        failed += f;
    }
    Ok((by, failed))
}
