//! gRPC adapter for `kiln.v1.Jobs`: wire specs to the engine's `JobRequest`, engine job calls,
//! `JobInfo` back to the wire; logs and watch as server streams. No job logic here.

use crate::grpc::{caller_of, status_of};
use kiln_api::kiln::v1::jobs_server::Jobs;
use kiln_api::kiln::v1::{self as pb};
use kiln_engine::Engine;
use kiln_engine::events::Event;
use kiln_engine::jobs::{CpusRequest, JobInfo, JobRequest, JobSpec, redacted_for};
use std::pin::Pin;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

pub struct JobsApi {
    pub engine: Engine,
}

/// A wire spec as the engine's request: proto3's empty strings and zeros mean "unset".
fn request_from_pb(p: pb::JobSpec) -> JobRequest {
    let some = |s: String| (!s.is_empty()).then_some(s);
    JobRequest {
        name: some(p.name),
        argv: p.argv,
        workdir: some(p.workdir).map(Into::into),
        env: p.env.into_iter().collect(),
        device: some(p.device),
        memory_bytes: Some(p.memory_bytes),
        cpus: Some(CpusRequest::Parts {
            kind: some(p.cpu_kind),
            count: Some(p.cpu_count),
        }),
        priority: Some(p.priority),
        max_runtime_s: Some(p.max_runtime_s),
        placement: some(p.placement),
        training: Some(p.training),
    }
}

pub fn spec_to_pb(s: &JobSpec) -> pb::JobSpec {
    pb::JobSpec {
        name: s.name.clone(),
        argv: s.argv.clone(),
        workdir: s
            .workdir
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        env: s.env.clone().into_iter().collect(),
        device: s.device.as_str().into(),
        memory_bytes: s.memory_bytes,
        cpu_kind: kiln_engine::jobs::cpu_kind_name(s.cpus.kind).into(),
        cpu_count: s.cpus.count,
        priority: s.priority,
        max_runtime_s: s.max_runtime_s,
        placement: s.placement.as_str().into(),
        training: s.training,
    }
}

pub fn job_to_pb(j: &JobInfo) -> pb::Job {
    pb::Job {
        id: j.id,
        name: j.name.clone(),
        state: j.state.as_str().into(),
        detail: j.detail.clone(),
        spec: Some(spec_to_pb(&j.spec)),
        submitted_at: j.submitted_at.clone(),
        started_at: j.started_at.clone().unwrap_or_default(),
        finished_at: j.finished_at.clone().unwrap_or_default(),
        pid: j.pid.unwrap_or(0),
        cpus: j.cpus.clone(),
        memory_limit: j.memory_limit.clone(),
        memory_used_bytes: j.memory_used_bytes.map(|b| b as i64).unwrap_or(-1),
        progress: j.progress.clone(),
        has_exit_code: j.exit_code.is_some(),
        exit_code: j.exit_code.unwrap_or(0),
        signal: j.signal.unwrap_or(0),
        log_path: j.log_path.clone(),
        checkpoint_dir: j.checkpoint_dir.clone(),
        checkpoints: j
            .checkpoints
            .iter()
            .map(|c| pb::Checkpoint {
                seq: c.seq,
                snapshot: c.snapshot.clone(),
                label: c.label.clone(),
                created_at: c.created_at.clone(),
            })
            .collect(),
        unit: j.unit.clone().unwrap_or_default(),
        json: serde_json::to_string(j).unwrap_or_default(),
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for JobsApi {
    async fn submit(
        &self,
        req: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&req);
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("no job spec: set SubmitJobRequest.spec"))?;
        let j = self
            .engine
            .submit_job(&caller, request_from_pb(spec))
            .await
            .map_err(status_of)?;
        Ok(Response::new(job_to_pb(&j)))
    }

    async fn get(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&req);
        let j = self
            .engine
            .job_for(&caller, req.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(job_to_pb(&j)))
    }

    async fn list(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let jobs = self
            .engine
            .jobs_for(&caller_of(&req))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
        }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&req);
        let j = self
            .engine
            .cancel_job(&caller, req.into_inner().id)
            .await
            .map_err(status_of)?;
        Ok(Response::new(job_to_pb(&j)))
    }

    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointJobRequest>,
    ) -> Result<Response<pb::CheckpointJobResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let snapshot = self
            .engine
            .checkpoint_job(&caller, r.id, &r.label)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::CheckpointJobResponse { snapshot }))
    }

    type LogsStream = Stream<pb::JobLogChunk>;

    async fn logs(
        &self,
        req: Request<pb::JobLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = req.into_inner();
        let rx = self.engine.job_logs(r.id, r.follow).map_err(status_of)?;
        let s = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|c| c.map(|data| pb::JobLogChunk { data }).map_err(status_of));
        Ok(Response::new(Box::pin(s)))
    }

    type WatchStream = Stream<pb::Job>;

    async fn watch(
        &self,
        req: Request<pb::WatchJobsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller_of(&req);
        let only = req.into_inner().id;
        let s = self
            .engine
            .events()
            .into_stream()
            .filter_map(move |e| match e {
                Event::Job(j) if only == 0 || j.id == only => {
                    Some(Ok(job_to_pb(&redacted_for(&caller, *j))))
                }
                Event::Missed { count } => {
                    Some(Err(Status::data_loss(Event::missed_message(count))))
                }
                _ => None,
            });
        Ok(Response::new(Box::pin(s)))
    }
}
