//! KServe v2 adapter (`inference.GRPCInferenceService`) and `kiln.v1.Models`: translates
//! wire types to the engine's model calls and back (typed contents and raw bytes; FP16/BF16
//! travel raw only). No decisions here: the engine validates, places and serves.

use crate::grpc::{caller_of, status_of};
use kiln_api::inference::grpc_inference_service_server::GrpcInferenceService;
use kiln_api::inference::model_infer_response::InferOutputTensor;
use kiln_api::inference::*;
use kiln_api::kiln::v1 as pb;
use kiln_api::kiln::v1::models_server::Models;
use kiln_engine::Engine;
use kiln_engine::models::{self as m, InferInput, LoadOptions};
use kiln_engine::models::{Dtype, Tensor, Values, contents_field};
use tonic::{Request, Response, Status};

pub struct InferenceApi {
    pub engine: Engine,
}

/// The typed contents of one input, `None` when every field is empty (data travels raw).
fn values_of(dtype: &str, c: InferTensorContents) -> Option<Values> {
    let fields = [
        ("bool_contents", !c.bool_contents.is_empty()),
        ("int_contents", !c.int_contents.is_empty()),
        ("int64_contents", !c.int64_contents.is_empty()),
        ("uint_contents", !c.uint_contents.is_empty()),
        ("uint64_contents", !c.uint64_contents.is_empty()),
        ("fp32_contents", !c.fp32_contents.is_empty()),
        ("fp64_contents", !c.fp64_contents.is_empty()),
    ];
    // The field matching the datatype if it is filled, else the first filled one (the
    // engine then names the mismatch).
    let want = Dtype::from_kserve(dtype).map(contents_field).unwrap_or("");
    let pick = fields
        .iter()
        .find(|(f, filled)| *filled && *f == want)
        .or_else(|| fields.iter().find(|(_, filled)| *filled))?
        .0;
    Some(match pick {
        "bool_contents" => Values::Bool(c.bool_contents),
        "int_contents" => Values::Int(c.int_contents),
        "int64_contents" => Values::Int64(c.int64_contents),
        "uint_contents" => Values::Uint(c.uint_contents),
        "uint64_contents" => Values::Uint64(c.uint64_contents),
        "fp32_contents" => Values::Fp32(c.fp32_contents),
        _ => Values::Fp64(c.fp64_contents),
    })
}

fn contents_of(v: Values) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match v {
        Values::Bool(x) => c.bool_contents = x,
        Values::Int(x) => c.int_contents = x,
        Values::Int64(x) => c.int64_contents = x,
        Values::Uint(x) => c.uint_contents = x,
        Values::Uint64(x) => c.uint64_contents = x,
        Values::Fp32(x) => c.fp32_contents = x,
        Values::Fp64(x) => c.fp64_contents = x,
    }
    c
}

fn wants_typed(p: &std::collections::HashMap<String, InferParameter>) -> bool {
    matches!(
        p.get("binary_data")
            .and_then(|p| p.parameter_choice.as_ref()),
        Some(infer_parameter::ParameterChoice::BoolParam(false))
    )
}

fn dur(d: m::Durations) -> StatisticDuration {
    StatisticDuration {
        count: d.count,
        ns: d.ns,
    }
}

fn meta(t: &m::TensorMeta) -> model_metadata_response::TensorMetadata {
    model_metadata_response::TensorMetadata {
        name: t.name.clone(),
        datatype: t.datatype.clone(),
        shape: t.shape.clone(),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceApi {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse {
            live: self.engine.is_live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.engine.is_ready(),
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let md = self.engine.server_metadata();
        Ok(Response::new(ServerMetadataResponse {
            name: md.name,
            version: md.version,
            extensions: md.extensions,
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(ModelReadyResponse {
            ready: self.engine.model_ready(&r.name, &r.version),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let md = self
            .engine
            .model_metadata(&r.name, &r.version)
            .map_err(status_of)?;
        Ok(Response::new(ModelMetadataResponse {
            name: md.name,
            versions: md.versions,
            platform: md.platform,
            inputs: md.inputs.iter().map(meta).collect(),
            outputs: md.outputs.iter().map(meta).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let r = req.into_inner();
        let typed = !r.outputs.is_empty() && r.outputs.iter().any(|o| wants_typed(&o.parameters));
        let request = infer_request_of(r);
        let resp = self.engine.model_infer(request).await.map_err(status_of)?;
        // Raw for every output (what Triton sends), typed when asked with binary_data=false
        // and every output has a typed field.
        let typed = typed
            && resp
                .outputs
                .iter()
                .all(|(_, t)| !matches!(t.dtype, Dtype::F16 | Dtype::Bf16));
        let mut outputs = Vec::with_capacity(resp.outputs.len());
        let mut raw = Vec::new();
        for (name, t) in resp.outputs {
            let Tensor { dtype, shape, data } = t;
            let contents = if typed {
                let v = Tensor {
                    dtype,
                    shape: shape.clone(),
                    data,
                }
                .to_values()
                .map_err(|e| Status::internal(e.to_string()))?;
                Some(contents_of(v))
            } else {
                raw.push(data);
                None
            };
            outputs.push(InferOutputTensor {
                name,
                datatype: dtype.kserve_name().into(),
                shape,
                parameters: Default::default(),
                contents,
            });
        }
        Ok(Response::new(ModelInferResponse {
            model_name: resp.model_name,
            model_version: resp.model_version,
            id: resp.id,
            parameters: Default::default(),
            outputs,
            raw_output_contents: raw,
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let stats = self
            .engine
            .model_statistics(&r.name, &r.version)
            .map_err(status_of)?;
        Ok(Response::new(ModelStatisticsResponse {
            model_stats: stats
                .into_iter()
                .map(|s| ModelStatistics {
                    name: s.name,
                    version: s.version.to_string(),
                    last_inference: s.last_inference_ms,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: Some(InferStatistics {
                        success: Some(dur(s.success)),
                        fail: Some(dur(s.fail)),
                        queue: Some(dur(s.queue)),
                        compute_input: Some(dur(s.compute_input)),
                        compute_infer: Some(dur(s.compute_infer)),
                        compute_output: Some(dur(s.compute_output)),
                        cache_hit: Some(StatisticDuration::default()),
                        cache_miss: Some(StatisticDuration::default()),
                    }),
                    batch_stats: s
                        .batch_stats
                        .into_iter()
                        .map(|b| InferBatchStatistics {
                            batch_size: b.batch_size,
                            compute_input: Some(dur(b.compute_input)),
                            compute_infer: Some(dur(b.compute_infer)),
                            compute_output: Some(dur(b.compute_output)),
                        })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        let idx = self.engine.repository_index(r.ready).map_err(status_of)?;
        Ok(Response::new(RepositoryIndexResponse {
            models: idx
                .into_iter()
                .map(|e| repository_index_response::ModelIndex {
                    name: e.name,
                    version: e.version,
                    state: e.state.as_str().into(),
                    reason: e.reason,
                })
                .collect(),
        }))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let mut opts = LoadOptions::default();
        for (k, v) in &r.parameters {
            match (k.as_str(), &v.parameter_choice) {
                ("device", Some(model_repository_parameter::ParameterChoice::StringParam(d))) => {
                    opts.device = Some(d.clone())
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "unsupported load parameter {k:?}; kilnd accepts `device` (a string such as CPU, GPU or NPU); model settings live in kiln-model.toml"
                    )));
                }
            }
        }
        self.engine
            .load_model(&caller, &r.model_name, &opts)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        self.engine
            .unload_model(&caller, &r.model_name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// `kiln.v1.Models`.
pub struct ModelsApi {
    pub engine: Engine,
}

fn tensors(v: &[m::TensorMeta]) -> Vec<pb::ModelTensor> {
    v.iter()
        .map(|t| pb::ModelTensor {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
        })
        .collect()
}

#[tonic::async_trait]
impl Models for ModelsApi {
    async fn list(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let list = self.engine.list_models().await.map_err(status_of)?;
        Ok(Response::new(pb::ListModelsResponse {
            models: list
                .into_iter()
                .map(|i| pb::ModelEntry {
                    name: i.name,
                    version: i.version,
                    state: i.state.as_str().into(),
                    reason: i.reason,
                    path: i.path.display().to_string(),
                    platform: i.platform,
                    kind: i.kind,
                    device: i.device,
                    fallback_reason: i.fallback_reason,
                    reservation_bytes: i.reservation_bytes,
                    calibrated_per_s: i.calibrated_per_s,
                    max_batch: i.max_batch as u32,
                    max_queue_delay_us: i.max_queue_delay_us,
                    pool_size: i.pool_size as u32,
                    precision: i.precision,
                    inputs: tensors(&i.inputs),
                    outputs: tensors(&i.outputs),
                })
                .collect(),
        }))
    }

    async fn stats(
        &self,
        req: Request<pb::ModelStatsRequest>,
    ) -> Result<Response<pb::ModelStatsResponse>, Status> {
        let r = req.into_inner();
        let stats = self
            .engine
            .model_statistics(&r.name, &r.version)
            .map_err(status_of)?;
        Ok(Response::new(pb::ModelStatsResponse {
            stats: stats
                .into_iter()
                .map(|s| pb::ModelStatsEntry {
                    name: s.name,
                    version: s.version,
                    device: s.device,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    success_count: s.success.count,
                    success_ns: s.success.ns,
                    fail_count: s.fail.count,
                    queue_ns: s.queue.ns,
                    compute_infer_ns: s.compute_infer.ns,
                    p50_us: s.p50_us,
                    p95_us: s.p95_us,
                    p99_us: s.p99_us,
                    last_inference_ms: s.last_inference_ms,
                })
                .collect(),
        }))
    }
}

/// The engine's request for a KServe `ModelInferRequest` (typed contents by datatype).
pub fn infer_request_of(r: ModelInferRequest) -> m::InferRequest {
    m::InferRequest {
        model_name: r.model_name,
        model_version: r.model_version,
        id: r.id,
        inputs: r
            .inputs
            .into_iter()
            .map(|i| InferInput {
                contents: i.contents.and_then(|c| values_of(&i.datatype, c)),
                name: i.name,
                datatype: i.datatype,
                shape: i.shape,
            })
            .collect(),
        raw_inputs: r.raw_input_contents,
        outputs: r.outputs.into_iter().map(|o| o.name).collect(),
    }
}
