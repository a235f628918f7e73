//! The vectors hub: the collections of the vector index port, opened at start under
//! `<embeddings dataset>/collections` with search threads pinned to the performance CPUs
//! (the AVX-512 ones when only some report it), one UMA `Reservation` per collection kept
//! equal to its memory, and the embedding path (texts → the daemon tokenises with the
//! model's `tokenizer.json` → a loaded embedding model → vectors). Mutations authorise with
//! `Action::ManageModels` (collections are model data; no new polkit action) and write an
//! audit row. Blocking work (disk, search, tokenising) runs on `spawn_blocking`. Depends on
//! the core, the storage hub (the embeddings dataset) and the models hub (the embedder).

use crate::auth::{Action, Caller};
use crate::budget::{Reservation, gib};
/// `[vectors]` of kiln.toml.
pub use crate::config::VectorsConfig;
use crate::core::{ComponentState, Core};
use crate::error::EngineError;
use crate::models::ModelsHub;
use crate::models::{InferInput, InferRequest, ModelState};
use crate::storage::StorageHub;
pub use kiln_hal::ports::{CollectionInfo, Hit};
use kiln_hal::ports::{Dtype, Values};

/// A collection as every transport shows it: the store's figures and its UMA reservation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Collection {
    #[serde(flatten)]
    pub info: CollectionInfo,
    pub reservation_bytes: u64,
}
use kiln_hal::ports::{IndexOptions, Metric, Quantisation, VectorIndex};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Tokens an embedding input may have when kiln-model.toml sets no `max_sequence_length`:
/// a fixed sequence dimension of `input_ids` if the model has one, else BERT's 512.
const DEFAULT_MAX_TOKENS: usize = 512;

fn token_limit(inputs: &[crate::models::TensorMeta]) -> usize {
    inputs
        .iter()
        .find(|t| t.name == "input_ids")
        .and_then(|t| t.shape.get(1).copied())
        .filter(|d| *d > 0)
        .map_or(DEFAULT_MAX_TOKENS, |d| d as usize)
}

/// Refuse a search whose answer would exceed `max_hits` before anything is allocated.
fn check_hits(queries: usize, k: i64, count: u64, max_hits: usize) -> Result<(), EngineError> {
    let per_query = u64::try_from(k.max(0)).unwrap_or(0).min(count);
    let hits = (queries as u64).saturating_mul(per_query);
    if hits > max_hits as u64 {
        return Err(EngineError::invalid(format!(
            "{queries} queries × {per_query} hits = {hits} hits is above the limit of {max_hits} \
             (`[vectors] max_hits`): ask for a smaller k or fewer queries per call"
        )));
    }
    Ok(())
}

/// The open store and the reservations of its collections.
struct Service {
    store: Arc<dyn VectorIndex>,
    /// One per collection, owner `vectors collection NAME`, equal to its memory.
    reservations: Mutex<HashMap<String, Reservation>>,
    /// Mutations one at a time, so a reservation always matches its collection.
    ops: tokio::sync::Mutex<()>,
}

/// The engine's vector state; `Err` holds why vectors are unavailable.
pub struct VectorsHub {
    core: Arc<Core>,
    /// The embeddings dataset holds the collections.
    storage: Arc<StorageHub>,
    /// Embedding models run there.
    models: Arc<ModelsHub>,
    /// Opens the index (the port's implementation, from the wiring).
    open: Arc<kiln_hal::ports::OpenIndex>,
    service: RwLock<Result<Arc<Service>, String>>,
    tokenizers: Mutex<HashMap<PathBuf, Arc<tokenizers::Tokenizer>>>,
}

impl VectorsHub {
    pub(crate) fn new(
        core: Arc<Core>,
        storage: Arc<StorageHub>,
        models: Arc<ModelsHub>,
        open: Arc<kiln_hal::ports::OpenIndex>,
    ) -> VectorsHub {
        VectorsHub {
            core,
            storage,
            models,
            open,
            service: RwLock::new(Err("vector search is starting; retry in a moment".into())),
            tokenizers: Mutex::new(HashMap::new()),
        }
    }
}

/// Search threads, their CPUs and ISA, and collections that failed to load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VectorsStatus {
    pub root: PathBuf,
    pub threads: usize,
    pub cpus: Vec<usize>,
    pub isa: String,
    pub load_problems: Vec<String>,
}

/// Embeddings of some texts: `vectors` holds `texts × dim` floats, row-major.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Embeddings {
    pub model: String,
    pub version: u64,
    pub dim: usize,
    pub vectors: Vec<f32>,
}

fn join_err(e: tokio::task::JoinError) -> EngineError {
    EngineError::internal(format!("a vector task failed: {e}"))
}

fn owner(name: &str) -> String {
    format!("vectors collection {name}")
}

fn parse_metric(s: &str) -> Result<Metric, EngineError> {
    if s.trim().is_empty() {
        return Ok(Metric::InnerProduct);
    }
    s.parse::<Metric>()
        .map_err(|e| EngineError::invalid(format!("metric: {e}")))
}

fn parse_quantisation(s: &str) -> Result<Quantisation, EngineError> {
    if s.trim().is_empty() {
        return Ok(Quantisation::None);
    }
    s.parse::<Quantisation>()
        .map_err(|e| EngineError::invalid(format!("quantisation: {e}")))
}

impl VectorsHub {
    fn vectors_service(&self) -> Result<Arc<Service>, EngineError> {
        self.service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map_err(|e| EngineError::unavailable(format!("vector search is unavailable: {e}")))
    }

    /// Open the collections on the embeddings dataset (loading every one), start the pinned
    /// search threads and reserve each collection's memory. Never fails: problems go to
    /// component `vectors` and the vector calls answer UNAVAILABLE with the reason.
    pub async fn start_vectors(&self) {
        let storage = match self.storage.port() {
            Ok(s) => s,
            Err(e) => {
                let msg = format!(
                    "no embeddings dataset ({}); fix [storage] and restart kilnd",
                    e.message
                );
                self.set_vectors_unavailable(msg);
                return;
            }
        };
        let cfg = self.core.config().vectors;
        let root = storage
            .dataset_path(kiln_hal::ports::storage::Dataset::Embeddings)
            .join("collections");
        let placement = self.core.threads();
        let (cpus, default_threads, note) = (
            placement.compute.clone(),
            placement.compute_cores,
            placement.compute_note.clone(),
        );
        let threads = if cfg.threads == 0 {
            default_threads
        } else {
            cfg.threads
        };
        let opts = IndexOptions {
            threads,
            cpus: cpus.clone(),
            compact_after_segments: cfg.compact_after_segments,
        };
        let r = {
            let root = root.clone();
            let open = self.open.clone();
            tokio::task::spawn_blocking(move || open(&root, opts)).await
        };
        let store = match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.set_vectors_unavailable(format!(
                    "cannot open the collections at {}: {e}",
                    root.display()
                ));
                return;
            }
            Err(e) => {
                self.set_vectors_unavailable(format!("opening the collections failed: {e}"));
                return;
            }
        };
        let mut problems: Vec<String> = store.load_problems();
        let mut reservations = HashMap::new();
        for c in store.list() {
            match self
                .core
                .budget()
                .reserve(&owner(&c.name), c.memory_bytes as u64)
            {
                Ok(r) => {
                    reservations.insert(c.name.clone(), r);
                }
                Err(e) => problems.push(format!(
                    "collection `{}` is loaded but its memory is not reserved: {}",
                    c.name, e
                )),
            }
        }
        let pool = store.pool();
        let detail = format!(
            "{} collections under {}; {} search threads pinned to {note} {:?}, {}{}",
            store.list().len(),
            root.display(),
            pool.threads,
            pool.cpus,
            pool.isa,
            if problems.is_empty() {
                String::new()
            } else {
                format!("; problems: {}", problems.join("; "))
            }
        );
        for p in &problems {
            tracing::warn!("vectors: {p}");
        }
        let state = if problems.is_empty() {
            ComponentState::Ok
        } else {
            ComponentState::Degraded
        };
        self.core.set_component("vectors", state, detail);
        *self.service.write().unwrap_or_else(|p| p.into_inner()) = Ok(Arc::new(Service {
            store,
            reservations: Mutex::new(reservations),
            ops: tokio::sync::Mutex::new(()),
        }));
    }

    fn set_vectors_unavailable(&self, why: String) {
        tracing::warn!("vector search disabled: {why}");
        self.core
            .set_component("vectors", ComponentState::Disabled, why.clone());
        *self.service.write().unwrap_or_else(|p| p.into_inner()) = Err(why);
    }

    /// Pool and load problems of the vector service.
    pub fn vectors_status(&self) -> Result<VectorsStatus, EngineError> {
        let s = self.vectors_service()?;
        let p = s.store.pool();
        Ok(VectorsStatus {
            root: s.store.root(),
            threads: p.threads,
            cpus: p.cpus,
            isa: p.isa,
            load_problems: s.store.load_problems(),
        })
    }

    /// A vector mutation through the engine's one authorise → act → audit path; `f` returns
    /// the result and the audit detail.
    async fn vectors_mutation<T, F, Fut>(
        &self,
        caller: &Caller,
        action: &str,
        args: String,
        f: F,
    ) -> Result<T, EngineError>
    where
        F: FnOnce(Arc<Service>) -> Fut,
        Fut: std::future::Future<Output = Result<(T, String), EngineError>>,
    {
        let result = self
            .core
            .authorised(
                caller,
                Action::ManageModels,
                action,
                &args,
                || async { f(self.vectors_service()?).await },
                |(_, detail): &(T, String)| detail.clone(),
            )
            .await;
        if let Err(e) = &result {
            tracing::info!(caller = %caller.describe(), action, error = %e, "vector call refused");
        }
        result.map(|(t, _)| t)
    }

    /// Create an empty collection (`metric`: ip|cosine|l2, empty = ip; `quantisation`:
    /// none|int8, empty = none). Needs `ManageModels`.
    pub async fn vectors_create(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        dim: u64,
        metric: &str,
        quantisation: &str,
    ) -> Result<Collection, EngineError> {
        let args =
            format!("collection={name} dim={dim} metric={metric} quantisation={quantisation}");
        let engine = self.clone();
        let (name, metric, quantisation) = (
            name.to_string(),
            metric.to_string(),
            quantisation.to_string(),
        );
        self.vectors_mutation(caller, "VectorsCreate", args, move |s| async move {
            let metric = parse_metric(&metric)?;
            let quantisation = parse_quantisation(&quantisation)?;
            let dim = usize::try_from(dim).unwrap_or(usize::MAX);
            let _g = s.ops.lock().await;
            // Reserve first (0 bytes; refused only under memory pressure), then create.
            let r = engine.core.budget().reserve(&owner(&name), 0)?;
            let store = s.store.clone();
            let n = name.clone();
            let info =
                tokio::task::spawn_blocking(move || store.create(&n, dim, metric, quantisation))
                    .await
                    .map_err(join_err)?
                    .map_err(EngineError::from)?;
            s.reservations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name, r);
            let d = format!(
                "dim={} metric={} quantisation={}",
                info.dim, info.metric, info.quantisation
            );
            Ok((
                Collection {
                    info,
                    reservation_bytes: 0,
                },
                d,
            ))
        })
        .await
    }

    /// Add vectors (`ids.len() × dim` floats, row-major) with optional metadata (one per
    /// id). All-or-nothing, durable on return; the collection's reservation grows first
    /// and an add that does not fit is refused with the numbers. Returns the new count.
    pub async fn vectors_add(
        &self,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
        vectors: Vec<f32>,
        metadata: Option<Vec<String>>,
    ) -> Result<usize, EngineError> {
        let args = format!("collection={name} count={}", ids.len());
        let name = name.to_string();
        self.vectors_mutation(caller, "VectorsAdd", args, move |s| async move {
            let n = ids.len();
            let count = add_reserved(&s, &name, ids, vectors, metadata).await?;
            Ok((count, format!("added={n} count={count}")))
        })
        .await
    }

    /// Delete ids (all must exist; all-or-nothing). Returns the new count.
    pub async fn vectors_delete(
        &self,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
    ) -> Result<usize, EngineError> {
        let args = format!("collection={name} count={}", ids.len());
        let name = name.to_string();
        self.vectors_mutation(caller, "VectorsDelete", args, move |s| async move {
            let _g = s.ops.lock().await;
            let n = ids.len();
            let store = s.store.clone();
            let nm = name.clone();
            let count = tokio::task::spawn_blocking(move || store.delete(&nm, &ids))
                .await
                .map_err(join_err)?
                .map_err(EngineError::from)?;
            sync_reservation(&s, &name);
            Ok((count, format!("deleted={n} count={count}")))
        })
        .await
    }

    /// Delete a collection and its files, and release its reservation.
    pub async fn vectors_drop(&self, caller: &Caller, name: &str) -> Result<(), EngineError> {
        let args = format!("collection={name}");
        let name = name.to_string();
        self.vectors_mutation(caller, "VectorsDrop", args, move |s| async move {
            let _g = s.ops.lock().await;
            let store = s.store.clone();
            let nm = name.clone();
            tokio::task::spawn_blocking(move || store.drop_collection(&nm))
                .await
                .map_err(join_err)?
                .map_err(EngineError::from)?;
            s.reservations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name);
            Ok(((), String::new()))
        })
        .await
    }

    /// Top-`k` for each query (`queries` is `nq × dim` floats), best first.
    pub async fn vectors_search(
        &self,
        name: &str,
        queries: Vec<f32>,
        k: i64,
    ) -> Result<Vec<Vec<Hit>>, EngineError> {
        let s = self.vectors_service()?;
        let info = s.store.stats(name).map_err(EngineError::from)?;
        let nq = queries.len() / info.dim.max(1);
        check_hits(
            nq,
            k,
            info.count as u64,
            self.core.config().vectors.max_hits,
        )?;
        let name = name.to_string();
        tokio::task::spawn_blocking(move || s.store.search(&name, &queries, k))
            .await
            .map_err(join_err)?
            .map_err(EngineError::from)
    }

    /// Count, dimension, metric, memory and disk use of one collection, and its reservation.
    pub fn vectors_stats(&self, name: &str) -> Result<Collection, EngineError> {
        let info = self
            .vectors_service()?
            .store
            .stats(name)
            .map_err(EngineError::from)?;
        Ok(self.with_reservation(info))
    }

    /// Every collection, by name, with its reservation.
    pub fn vectors_list(&self) -> Result<Vec<Collection>, EngineError> {
        Ok(self
            .vectors_service()?
            .store
            .list()
            .into_iter()
            .map(|i| self.with_reservation(i))
            .collect())
    }

    fn with_reservation(&self, info: CollectionInfo) -> Collection {
        Collection {
            reservation_bytes: self.vectors_reservation(&info.name),
            info,
        }
    }

    /// Bytes reserved in the UMA budget for a collection (0 when it holds none).
    pub fn vectors_reservation(&self, name: &str) -> u64 {
        self.vectors_service()
            .ok()
            .and_then(|s| {
                s.reservations
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .map(|r| r.bytes())
            })
            .unwrap_or(0)
    }

    /// Embed texts with a loaded embedding model (default `[vectors] embedding_model`):
    /// tokenised here with the model's `tokenizer.json`, inferred by the model's scheduler.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        model: Option<&str>,
    ) -> Result<Embeddings, EngineError> {
        if texts.is_empty() {
            return Err(EngineError::invalid("no texts to embed: send at least one"));
        }
        let cfg = self.core.config().vectors;
        let model = model
            .filter(|m| !m.trim().is_empty())
            .unwrap_or(&cfg.embedding_model)
            .to_string();
        let info = self
            .models
            .models_list()
            .into_iter()
            .filter(|m| m.name == model && m.state == ModelState::Ready)
            .max_by_key(|m| m.version)
            .ok_or_else(|| {
                EngineError::precondition(format!(
                    "embedding model {model} is not loaded; load it with `kilnctl models load {model}` (see `kilnctl models list`) or name another with --model"
                ))
            })?;
        let tok = self
            .tokenizer(&info.path, info.version, token_limit(&info.inputs))
            .await?;
        let out_name = info
            .outputs
            .iter()
            .find(|o| o.name == "sentence_embedding")
            .or_else(|| info.outputs.first())
            .map(|o| o.name.clone())
            .ok_or_else(|| EngineError::precondition(format!("model {model} has no outputs")))?;
        let mut vectors = Vec::new();
        let mut dim = 0usize;
        for chunk in texts.chunks(cfg.embed_batch.max(1)) {
            let t = tok.clone();
            let chunk = chunk.to_vec();
            let enc = tokio::task::spawn_blocking(move || t.encode_batch(chunk, true))
                .await
                .map_err(join_err)?
                .map_err(|e| EngineError::invalid(format!("tokenising failed: {e}")))?;
            let n = enc.len();
            let len = enc
                .iter()
                .map(|e| e.get_ids().len())
                .max()
                .unwrap_or(0)
                .max(1);
            let mut cols: [(&str, Vec<i64>); 3] = [
                ("input_ids", Vec::with_capacity(n * len)),
                ("attention_mask", Vec::with_capacity(n * len)),
                ("token_type_ids", Vec::with_capacity(n * len)),
            ];
            for e in &enc {
                let pad = len - e.get_ids().len();
                for (i, src) in [e.get_ids(), e.get_attention_mask(), e.get_type_ids()]
                    .into_iter()
                    .enumerate()
                {
                    cols[i].1.extend(src.iter().map(|&x| i64::from(x)));
                    cols[i].1.extend(std::iter::repeat_n(0, pad));
                }
            }
            let inputs = cols
                .into_iter()
                .filter(|(name, _)| info.inputs.iter().any(|p| p.name == *name))
                .map(|(name, v)| InferInput {
                    name: name.into(),
                    datatype: "INT64".into(),
                    shape: vec![n as i64, len as i64],
                    contents: Some(Values::Int64(v)),
                })
                .collect();
            let resp = self
                .models
                .model_infer(InferRequest {
                    model_name: model.clone(),
                    model_version: info.version.to_string(),
                    inputs,
                    outputs: vec![out_name.clone()],
                    ..Default::default()
                })
                .await?;
            let (_, t) = resp
                .outputs
                .into_iter()
                .find(|(n, _)| *n == out_name)
                .ok_or_else(|| {
                    EngineError::internal(format!("model {model} returned no {out_name}"))
                })?;
            if t.dtype != Dtype::F32 {
                return Err(EngineError::precondition(format!(
                    "model {model} output {out_name} is {:?}, not FP32; an embedding model must output FP32 [batch, dim]",
                    t.dtype
                )));
            }
            let d = t.shape.last().copied().unwrap_or(0).max(0) as usize;
            let floats: Vec<f32> = t
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if d == 0 || floats.len() != n * d {
                return Err(EngineError::precondition(format!(
                    "model {model} output {out_name} has shape {:?}; expected [{n}, dim] (one embedding per text)",
                    t.shape
                )));
            }
            dim = d;
            vectors.extend(floats);
        }
        Ok(Embeddings {
            model,
            version: info.version,
            dim,
            vectors,
        })
    }

    /// The model's tokenizer, truncating to `max_sequence_length` of its kiln-model.toml or
    /// else to `fallback` tokens.
    async fn tokenizer(
        &self,
        dir: &std::path::Path,
        version: u64,
        fallback: usize,
    ) -> Result<Arc<tokenizers::Tokenizer>, EngineError> {
        let path = dir.join("tokenizer.json");
        if let Some(t) = self
            .tokenizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&path)
        {
            return Ok(t.clone());
        }
        let max_len = dir
            .parent()
            .and_then(|m| crate::models::repo::settings(m, Some(version)).ok())
            .and_then(|s| s.max_sequence_length)
            .map_or(fallback, |m| m as usize);
        let p = path.clone();
        let tok = tokio::task::spawn_blocking(move || -> Result<tokenizers::Tokenizer, String> {
            let mut t = tokenizers::Tokenizer::from_file(&p).map_err(|e| e.to_string())?;
            let tr = tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            };
            t.with_truncation(Some(tr)).map_err(|e| e.to_string())?;
            Ok(t)
        })
        .await
        .map_err(join_err)?
        .map_err(|e| {
            EngineError::precondition(format!(
                "cannot read the tokenizer {}: {e}; embedding models need tokenizer.json beside the model files",
                path.display()
            ))
        })?;
        let tok = Arc::new(tok);
        self.tokenizers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(path, tok.clone());
        Ok(tok)
    }

    /// Embed `texts` and add them under `ids`; metadata defaults to the texts themselves.
    pub async fn embed_and_add(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        ids: Vec<u64>,
        texts: Vec<String>,
        metadata: Option<Vec<String>>,
        model: Option<&str>,
    ) -> Result<usize, EngineError> {
        let args = format!("collection={name} count={}", ids.len());
        let engine = self.clone();
        let (name, model) = (name.to_string(), model.map(String::from));
        self.vectors_mutation(caller, "VectorsEmbedAndAdd", args, move |s| async move {
            if ids.len() != texts.len() {
                return Err(EngineError::invalid(format!(
                    "{} ids but {} texts; send one id per text",
                    ids.len(),
                    texts.len()
                )));
            }
            let info = s.store.stats(&name).map_err(EngineError::from)?;
            let e = engine.embed(texts.clone(), model.as_deref()).await?;
            check_dim(&info, &e)?;
            let n = ids.len();
            let meta = metadata.or(Some(texts));
            let count = add_reserved(&s, &name, ids, e.vectors, meta).await?;
            Ok((
                count,
                format!("added={n} count={count} model={} v{}", e.model, e.version),
            ))
        })
        .await
    }

    /// Embed `texts` and search the collection with them.
    pub async fn search_text(
        &self,
        name: &str,
        texts: Vec<String>,
        k: i64,
        model: Option<&str>,
    ) -> Result<Vec<Vec<Hit>>, EngineError> {
        let info = self.vectors_stats(name)?.info;
        if k <= 0 {
            return Err(EngineError::invalid(format!(
                "k must be at least 1 (got {k})"
            )));
        }
        let e = self.embed(texts, model).await?;
        check_dim(&info, &e)?;
        self.vectors_search(name, e.vectors, k).await
    }
}

fn check_dim(info: &CollectionInfo, e: &Embeddings) -> Result<(), EngineError> {
    if info.dim != e.dim {
        return Err(EngineError::invalid(format!(
            "collection `{}` has dimension {} but model {} produces {}-dimensional embeddings; create a collection with --dim {} for it",
            info.name, info.dim, e.model, e.dim, e.dim
        )));
    }
    Ok(())
}

/// Grow the collection's reservation by the add's estimate (refusing with the numbers when
/// it does not fit; the collection is then unchanged), add, then set it to the memory held.
async fn add_reserved(
    s: &Arc<Service>,
    name: &str,
    ids: Vec<u64>,
    vectors: Vec<f32>,
    metadata: Option<Vec<String>>,
) -> Result<usize, EngineError> {
    let _g = s.ops.lock().await;
    let meta_bytes: usize = metadata
        .as_ref()
        .map_or(0, |m| m.iter().map(|x| x.len()).sum());
    let n = ids.len();
    let extra = s
        .store
        .estimate_add_bytes(name, n, meta_bytes)
        .map_err(EngineError::from)? as u64;
    {
        let mut res = s.reservations.lock().unwrap_or_else(|p| p.into_inner());
        let r = res.get_mut(name).ok_or_else(|| {
            EngineError::exhausted(format!(
                "collection `{name}` holds no UMA reservation (it did not fit at start); free memory and restart kilnd, or drop it"
            ))
        })?;
        let want = r.bytes().saturating_add(extra);
        r.resize(want).map_err(|e| {
            EngineError::exhausted(format!(
                "cannot add {n} vectors ({}) to collection `{name}`: {}; the collection is unchanged",
                gib(extra),
                e
            ))
        })?;
    }
    let store = s.store.clone();
    let nm = name.to_string();
    let r = tokio::task::spawn_blocking(move || store.add(&nm, &ids, &vectors, metadata))
        .await
        .map_err(join_err)
        .and_then(|r| r.map_err(EngineError::from));
    sync_reservation(s, name);
    r
}

/// Set a collection's reservation to the memory it holds (shrinks always succeed; a
/// growth beyond the estimate that does not fit keeps the larger figure already held).
fn sync_reservation(s: &Service, name: &str) {
    let Ok(bytes) = s.store.memory_bytes(name) else {
        return;
    };
    if let Some(r) = s
        .reservations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get_mut(name)
        && let Err(e) = r.resize(bytes as u64)
    {
        tracing::warn!(collection = name, "reservation not updated: {e}");
    }
}

#[cfg(test)]
#[path = "vectors_tests.rs"]
mod hub_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_is_bounded_by_queries_times_the_hits_it_can_return() {
        // k above the collection size counts as the collection size.
        assert!(check_hits(1000, 1_000_000, 1000, 1 << 20).is_ok());
        assert!(check_hits(2, i64::MAX, 10, 20).is_ok());
        let e = check_hits(2, i64::MAX, 11, 20).unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("22 hits") && e.message.contains("`[vectors] max_hits`"),
            "{}",
            e.message
        );
        assert!(
            check_hits(usize::MAX, 5, 5, 1 << 20).is_err(),
            "no overflow"
        );
        assert!(
            check_hits(3, -1, 5, 1).is_ok(),
            "k ≤ 0 is the store's error to give"
        );
    }

    #[test]
    fn texts_are_cut_to_the_model_s_length_or_512_tokens() {
        let t = |name: &str, shape: &[i64]| crate::models::TensorMeta {
            name: name.into(),
            datatype: "INT64".into(),
            shape: shape.to_vec(),
        };
        assert_eq!(token_limit(&[t("input_ids", &[1, 128])]), 128);
        assert_eq!(
            token_limit(&[t("input_ids", &[-1, -1])]),
            DEFAULT_MAX_TOKENS
        );
        assert_eq!(token_limit(&[t("x", &[1, 64])]), DEFAULT_MAX_TOKENS);
        assert_eq!(token_limit(&[]), DEFAULT_MAX_TOKENS);
    }
}
