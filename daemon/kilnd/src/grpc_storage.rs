//! gRPC adapter for `kiln.v1.Storage`: wire types to engine storage calls and back.
//! Model import streams progress (throttled) and then the result. No storage logic here.

use crate::grpc::{caller_of, status_of};
use kiln_api::kiln::v1::storage_server::Storage as StorageService;
use kiln_api::kiln::v1::{self as pb, import_model_event::Event};
use kiln_engine::Engine;
use std::path::PathBuf;
use std::pin::Pin;
use tonic::{Request, Response, Status};

pub struct StorageApi {
    pub engine: Engine,
}

/// An optional dataset from the wire: empty means all.
fn opt(s: &str) -> Option<&str> {
    if s.is_empty() { None } else { Some(s) }
}

pub fn snapshot_to_pb(s: &kiln_engine::storage::SnapshotInfo) -> pb::StorageSnapshot {
    pb::StorageSnapshot {
        dataset: s.dataset.name().into(),
        name: s.name.clone(),
        created: s.created,
        keep: s.keep,
        held: s.held,
        managed: s.managed,
        used_bytes: s.used_bytes.map(|b| b as i64).unwrap_or(-1),
    }
}

pub fn status_to_pb(s: &kiln_engine::storage::StorageStatus) -> pb::StorageStatusResponse {
    pb::StorageStatusResponse {
        backend: s.backend.as_str().into(),
        description: s.description.clone(),
        location: s.location.clone(),
        datasets: s
            .datasets
            .iter()
            .map(|d| pb::StorageDataset {
                dataset: d.dataset.name().into(),
                name: d.name.clone(),
                mountpoint: d.mountpoint.display().to_string(),
                present: d.present,
                properties: d
                    .properties
                    .iter()
                    .map(|p| pb::StorageProperty {
                        property: p.property.clone(),
                        requested: p.requested.clone(),
                        effective: p.effective.clone(),
                        reason: p.reason.clone().unwrap_or_default(),
                    })
                    .collect(),
                used_bytes: d.used_bytes,
                available_bytes: d.available_bytes,
                snapshots: d.snapshots as u32,
            })
            .collect(),
        pool_health: s
            .pool
            .as_ref()
            .map(|p| p.health.clone())
            .unwrap_or_default(),
        scrub_state: s
            .pool
            .as_ref()
            .map(|p| p.scrub.state.clone())
            .unwrap_or_default(),
        fallbacks: s.last_ensure.fallbacks.clone(),
        json: serde_json::to_string(s).unwrap_or_default(),
    }
}

type ImportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ImportModelEvent, Status>> + Send>>;

#[tonic::async_trait]
impl StorageService for StorageApi {
    async fn status(
        &self,
        _: Request<pb::StorageStatusRequest>,
    ) -> Result<Response<pb::StorageStatusResponse>, Status> {
        let s = self.engine.storage_status().await.map_err(status_of)?;
        Ok(Response::new(status_to_pb(&s)))
    }

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let snaps = self
            .engine
            .list_snapshots(opt(&r.dataset))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: snaps.iter().map(snapshot_to_pb).collect(),
        }))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::StorageSnapshot>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let s = self
            .engine
            .snapshot(&caller, &r.dataset, &r.name, r.keep)
            .await
            .map_err(status_of)?;
        Ok(Response::new(snapshot_to_pb(&s)))
    }

    async fn rollback(
        &self,
        req: Request<pb::RollbackRequest>,
    ) -> Result<Response<pb::RollbackResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .rollback(&caller, &r.dataset, &r.name, r.destroy_newer)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RollbackResponse {
            dataset: out.dataset.name().into(),
            snapshot: out.snapshot,
            destroyed: out.destroyed,
        }))
    }

    async fn prune(
        &self,
        req: Request<pb::PruneRequest>,
    ) -> Result<Response<pb::PruneResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let reports = self
            .engine
            .prune(&caller, opt(&r.dataset))
            .await
            .map_err(status_of)?;
        let removed = reports
            .iter()
            .flat_map(|p| {
                let d = p.dataset.map(|d| d.name()).unwrap_or("?");
                p.removed.iter().map(move |n| format!("{d}@{n}"))
            })
            .collect();
        Ok(Response::new(pb::PruneResponse {
            json: serde_json::to_string(&reports).unwrap_or_default(),
            removed,
        }))
    }

    type ImportModelStream = ImportStream;

    async fn import_model(
        &self,
        req: Request<pb::ImportModelRequest>,
    ) -> Result<Response<Self::ImportModelStream>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ImportModelEvent, Status>>(16);
        let engine = self.engine.clone();
        tokio::spawn(async move {
            let ptx = tx.clone();
            // The engine calls this at its progress rate (PROGRESS_EVERY).
            let progress = move |done: u64, total: u64| {
                // A full channel (slow client) skips this update; the next one follows.
                let _ = ptx.try_send(Ok(pb::ImportModelEvent {
                    event: Some(Event::Progress(pb::ImportModelProgress {
                        done_bytes: done,
                        total_bytes: total,
                    })),
                }));
            };
            let out = engine
                .import_model(&caller, &PathBuf::from(&r.path), &r.name, r.load, progress)
                .await;
            let msg = match out {
                Ok(o) => Ok(pb::ImportModelEvent {
                    event: Some(Event::Result(pb::ImportModelResult {
                        name: o.import.name,
                        version: o.import.version,
                        snapshot: o.import.snapshot,
                        path: o.import.path.display().to_string(),
                        files: o.import.files,
                        bytes: o.import.bytes,
                        load_requested: o.load.is_some(),
                        loaded: o.load.as_ref().is_some_and(|l| l.ok),
                        load_detail: o.load.map(|l| l.detail).unwrap_or_default(),
                    })),
                }),
                Err(e) => Err(status_of(e)),
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn rollback_model(
        &self,
        req: Request<pb::RollbackModelRequest>,
    ) -> Result<Response<pb::RollbackModelResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let out = self
            .engine
            .rollback_model(&caller, &r.name, r.version)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::RollbackModelResponse {
            name: out.name,
            version: out.version,
            snapshot: out.snapshot,
            versions: out.versions,
            removed_versions: out.removed_versions,
            bytes: out.bytes,
        }))
    }
}
