//! gRPC adapter for `kiln.v1.Vectors`: wire types to the engine's vector and embedding
//! calls and back. No vector logic here.

use crate::grpc::{caller_of, status_of};
use kiln_api::kiln::v1::vectors_server::Vectors as VectorsService;
use kiln_api::kiln::v1::{self as pb};
use kiln_engine::Engine;
use kiln_engine::vectors::{Collection, Hit};
use tonic::{Request, Response, Status};

pub struct VectorsApi {
    pub engine: Engine,
}

fn opt(s: &str) -> Option<&str> {
    if s.trim().is_empty() { None } else { Some(s) }
}

/// Empty metadata on the wire means none.
fn metadata(m: Vec<String>) -> Option<Vec<String>> {
    if m.is_empty() { None } else { Some(m) }
}

fn info_to_pb(c: Collection) -> pb::CollectionInfo {
    let Collection {
        info: c,
        reservation_bytes,
    } = c;
    pb::CollectionInfo {
        reservation_bytes,
        name: c.name,
        dim: c.dim as u64,
        metric: c.metric.to_string(),
        quantisation: c.quantisation.to_string(),
        count: c.count as u64,
        memory_bytes: c.memory_bytes as u64,
        disk_bytes: c.disk_bytes,
        segments: c.segments as u64,
    }
}

fn hits_to_pb(results: Vec<Vec<Hit>>) -> pb::SearchVectorsResponse {
    pb::SearchVectorsResponse {
        results: results
            .into_iter()
            .map(|hits| pb::VectorHits {
                hits: hits
                    .into_iter()
                    .map(|h| pb::VectorHit {
                        id: h.id,
                        score: h.score,
                        metadata: h.metadata,
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl VectorsService for VectorsApi {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let c = self
            .engine
            .vectors_create(&caller, &r.name, r.dim, &r.metric, &r.quantisation)
            .await
            .map_err(status_of)?;
        Ok(Response::new(info_to_pb(c)))
    }

    async fn drop_collection(
        &self,
        req: Request<pb::DropCollectionRequest>,
    ) -> Result<Response<pb::DropCollectionResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        self.engine
            .vectors_drop(&caller, &r.name)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DropCollectionResponse {}))
    }

    async fn add(
        &self,
        req: Request<pb::AddVectorsRequest>,
    ) -> Result<Response<pb::AddVectorsResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let added = r.ids.len() as u64;
        let count = self
            .engine
            .vectors_add(&caller, &r.name, r.ids, r.vectors, metadata(r.metadata))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AddVectorsResponse {
            added,
            count: count as u64,
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteVectorsRequest>,
    ) -> Result<Response<pb::DeleteVectorsResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let deleted = r.ids.len() as u64;
        let count = self
            .engine
            .vectors_delete(&caller, &r.name, r.ids)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DeleteVectorsResponse {
            deleted,
            count: count as u64,
        }))
    }

    async fn search(
        &self,
        req: Request<pb::SearchVectorsRequest>,
    ) -> Result<Response<pb::SearchVectorsResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let hits = self
            .engine
            .vectors_search(&caller, &r.name, r.queries, r.k)
            .await
            .map_err(status_of)?;
        Ok(Response::new(hits_to_pb(hits)))
    }

    async fn stats(
        &self,
        req: Request<pb::CollectionStatsRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let r = req.into_inner();
        let c = self.engine.vectors_stats(&r.name).map_err(status_of)?;
        Ok(Response::new(info_to_pb(c)))
    }

    async fn list(
        &self,
        _: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let list = self.engine.vectors_list().map_err(status_of)?;
        let st = self.engine.vectors_status().map_err(status_of)?;
        Ok(Response::new(pb::ListCollectionsResponse {
            collections: list.into_iter().map(info_to_pb).collect(),
            threads: st.threads as u64,
            cpus: st.cpus.iter().map(|c| *c as u64).collect(),
            isa: st.isa,
            root: st.root.display().to_string(),
            load_problems: st.load_problems,
        }))
    }

    async fn embed(
        &self,
        req: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let r = req.into_inner();
        let e = self
            .engine
            .embed(r.texts, opt(&r.model))
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::EmbedResponse {
            model: e.model,
            version: e.version,
            dim: e.dim as u64,
            vectors: e.vectors,
        }))
    }

    async fn embed_and_add(
        &self,
        req: Request<pb::EmbedAndAddRequest>,
    ) -> Result<Response<pb::AddVectorsResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let added = r.ids.len() as u64;
        let count = self
            .engine
            .embed_and_add(
                &caller,
                &r.name,
                r.ids,
                r.texts,
                metadata(r.metadata),
                opt(&r.model),
            )
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::AddVectorsResponse {
            added,
            count: count as u64,
        }))
    }

    async fn search_text(
        &self,
        req: Request<pb::SearchTextRequest>,
    ) -> Result<Response<pb::SearchVectorsResponse>, Status> {
        let caller = caller_of(&req);
        let r = req.into_inner();
        let hits = self
            .engine
            .search_text(&caller, &r.name, r.texts, r.k, opt(&r.model))
            .await
            .map_err(status_of)?;
        Ok(Response::new(hits_to_pb(hits)))
    }
}
