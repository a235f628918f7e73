//! `kilnctl vectors create|add|search|stats|list|delete|drop|embed`: parse vectors from
//! JSON flags or files, call `kiln.v1.Vectors`, print tables for people or JSON for
//! scripts. No vector logic here.

use crate::client::{Failure, connect};
use clap::Subcommand;
use kiln_api::kiln::v1::vectors_client::VectorsClient;
use kiln_api::kiln::v1::{self as pb};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum VectorsCommand {
    /// Create an empty collection.
    Create {
        name: String,
        /// Vector dimension.
        #[arg(long)]
        dim: u64,
        /// ip (inner product), cosine or l2.
        #[arg(long, default_value = "ip")]
        metric: String,
        /// none (exact f32) or int8 (int8 scan + exact rerank).
        #[arg(long, default_value = "none")]
        quantisation: String,
        #[arg(long)]
        json: bool,
    },
    /// Add vectors (`--ids 1,2 --vectors '[[..],[..]]'` or `--file F.json`), or one text
    /// embedded by kilnd (`--text "..." --id 7`).
    Add {
        name: String,
        /// Comma-separated ids, one per vector.
        #[arg(long, value_delimiter = ',', conflicts_with = "id")]
        ids: Vec<u64>,
        /// JSON array of vectors, e.g. '[[0.1,0.2],[0.3,0.4]]'.
        #[arg(long, conflicts_with_all = ["file", "text"])]
        vectors: Option<String>,
        /// JSON file: an array of vectors, or {"ids": [...], "vectors": [[...]], "metadata": [...]}.
        #[arg(long, conflicts_with = "text")]
        file: Option<PathBuf>,
        /// Metadata, one per id (repeat the flag).
        #[arg(long = "metadata")]
        metadata: Vec<String>,
        /// Text to embed with the embedding model and add (needs --id).
        #[arg(long)]
        text: Vec<String>,
        /// Id for --text.
        #[arg(long)]
        id: Option<u64>,
        /// Embedding model for --text (default: kilnd's [vectors] embedding_model).
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Nearest neighbours of a vector (`--vector '[..]'`, or several as '[[..],[..]]') or
    /// of a text (`--text "..."`).
    Search {
        name: String,
        #[arg(long, conflicts_with = "text")]
        vector: Option<String>,
        #[arg(long)]
        text: Vec<String>,
        #[arg(short, long, default_value_t = 10, allow_hyphen_values = true)]
        k: i64,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Count, dimension, metric, memory, disk and budget reservation of a collection.
    Stats {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Every collection, the search threads and their CPUs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete vectors by id.
    Delete {
        name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        ids: Vec<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a collection and its files.
    Drop {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        message: msg.into(),
        code: 1,
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A JSON vector or array of vectors → (flat floats, count).
fn parse_vectors(v: &Value, what: &str) -> Result<(Vec<f32>, usize), Failure> {
    let num = |x: &Value| -> Result<f32, Failure> {
        x.as_f64()
            .map(|f| f as f32)
            .ok_or_else(|| usage(format!("{what}: {x} is not a number")))
    };
    let arr = v
        .as_array()
        .ok_or_else(|| usage(format!("{what}: expected a JSON array such as [[0.1,0.2]]")))?;
    if arr.iter().all(|x| x.is_number()) && !arr.is_empty() {
        return Ok((arr.iter().map(num).collect::<Result<_, _>>()?, 1));
    }
    let mut flat = Vec::new();
    for row in arr {
        let r = row.as_array().ok_or_else(|| {
            usage(format!(
                "{what}: expected an array of arrays of numbers, got {row}"
            ))
        })?;
        for x in r {
            flat.push(num(x)?);
        }
    }
    Ok((flat, arr.len()))
}

fn info_json(c: &pb::CollectionInfo) -> Value {
    json!({
        "name": c.name, "dim": c.dim, "metric": c.metric, "quantisation": c.quantisation,
        "count": c.count, "memory_bytes": c.memory_bytes, "disk_bytes": c.disk_bytes,
        "segments": c.segments, "reservation_bytes": c.reservation_bytes,
    })
}

fn info_line(c: &pb::CollectionInfo) -> String {
    format!(
        "{:<20} dim {:<5} {:<13} {:<5} {:>9} vectors  memory {:>10} B  disk {:>10} B  reserved {:>10} B",
        c.name,
        c.dim,
        c.metric,
        c.quantisation,
        c.count,
        c.memory_bytes,
        c.disk_bytes,
        c.reservation_bytes
    )
}

fn hits_out(r: pb::SearchVectorsResponse, as_json: bool) -> String {
    if as_json {
        let results: Vec<Value> = r
            .results
            .iter()
            .map(|h| {
                Value::Array(
                    h.hits
                        .iter()
                        .map(|x| json!({"id": x.id, "score": x.score, "metadata": x.metadata}))
                        .collect(),
                )
            })
            .collect();
        return pretty(&json!({ "results": results }));
    }
    let mut out = String::new();
    for (i, q) in r.results.iter().enumerate() {
        if r.results.len() > 1 {
            out.push_str(&format!("query {i}:\n"));
        }
        for (rank, h) in q.hits.iter().enumerate() {
            out.push_str(&format!(
                "{:>3}. id {:<12} score {:>10.5}  {}\n",
                rank + 1,
                h.id,
                h.score,
                h.metadata.as_deref().unwrap_or("")
            ));
        }
    }
    out
}

pub async fn run(socket: &Path, cmd: &VectorsCommand) -> Result<String, Failure> {
    let mut c = VectorsClient::new(connect(socket).await?);
    match cmd {
        VectorsCommand::Create {
            name,
            dim,
            metric,
            quantisation,
            json,
        } => {
            let info = c
                .create_collection(pb::CreateCollectionRequest {
                    name: name.clone(),
                    dim: *dim,
                    metric: metric.clone(),
                    quantisation: quantisation.clone(),
                })
                .await?
                .into_inner();
            Ok(if *json {
                pretty(&info_json(&info))
            } else {
                format!("created {}", info_line(&info))
            })
        }
        VectorsCommand::Add {
            name,
            ids,
            vectors,
            file,
            metadata,
            text,
            id,
            model,
            json,
        } => {
            let r = if !text.is_empty() {
                let ids: Vec<u64> = match id {
                    Some(i) if text.len() == 1 => vec![*i],
                    Some(_) => {
                        return Err(usage(
                            "--id goes with one --text; use --ids 1,2 for several texts",
                        ));
                    }
                    None if ids.len() == text.len() => ids.clone(),
                    None => {
                        return Err(usage(format!(
                            "give --id for --text (or --ids with one id per text; {} texts, {} ids)",
                            text.len(),
                            ids.len()
                        )));
                    }
                };
                c.embed_and_add(pb::EmbedAndAddRequest {
                    name: name.clone(),
                    ids,
                    texts: text.clone(),
                    metadata: metadata.clone(),
                    model: model.clone().unwrap_or_default(),
                })
                .await?
                .into_inner()
            } else {
                let (mut ids, mut meta) = (ids.clone(), metadata.clone());
                let flat = if let Some(v) = vectors {
                    let v: Value = serde_json::from_str(v)
                        .map_err(|e| usage(format!("--vectors: not JSON ({e})")))?;
                    parse_vectors(&v, "--vectors")?.0
                } else if let Some(f) = file {
                    let text = std::fs::read_to_string(f)
                        .map_err(|e| usage(format!("cannot read {}: {e}", f.display())))?;
                    let v: Value = serde_json::from_str(&text)
                        .map_err(|e| usage(format!("{}: not JSON ({e})", f.display())))?;
                    let vecs = if v.is_object() {
                        if let Some(i) = v.get("ids").and_then(|i| i.as_array()) {
                            ids = i.iter().filter_map(|x| x.as_u64()).collect();
                        }
                        if let Some(m) = v.get("metadata").and_then(|m| m.as_array()) {
                            meta = m
                                .iter()
                                .map(|x| {
                                    x.as_str()
                                        .map(String::from)
                                        .unwrap_or_else(|| x.to_string())
                                })
                                .collect();
                        }
                        v.get("vectors").cloned().unwrap_or(Value::Null)
                    } else {
                        v
                    };
                    parse_vectors(&vecs, &f.display().to_string())?.0
                } else {
                    return Err(usage(
                        "give --vectors '[[..],[..]]' with --ids, --file F.json, or --text \"...\" --id N",
                    ));
                };
                if ids.is_empty() {
                    return Err(usage("give --ids 1,2,... (one id per vector)"));
                }
                c.add(pb::AddVectorsRequest {
                    name: name.clone(),
                    ids,
                    vectors: flat,
                    metadata: meta,
                })
                .await?
                .into_inner()
            };
            Ok(if *json {
                pretty(&json!({"collection": name, "added": r.added, "count": r.count}))
            } else {
                format!("added {} to {name}; {} vectors now", r.added, r.count)
            })
        }
        VectorsCommand::Search {
            name,
            vector,
            text,
            k,
            model,
            json,
        } => {
            let r = if !text.is_empty() {
                c.search_text(pb::SearchTextRequest {
                    name: name.clone(),
                    texts: text.clone(),
                    k: *k,
                    model: model.clone().unwrap_or_default(),
                })
                .await?
                .into_inner()
            } else if let Some(v) = vector {
                let v: Value = serde_json::from_str(v)
                    .map_err(|e| usage(format!("--vector: not JSON ({e})")))?;
                let (queries, _) = parse_vectors(&v, "--vector")?;
                c.search(pb::SearchVectorsRequest {
                    name: name.clone(),
                    queries,
                    k: *k,
                })
                .await?
                .into_inner()
            } else {
                return Err(usage("give --vector '[..]' or --text \"...\""));
            };
            Ok(hits_out(r, *json))
        }
        VectorsCommand::Stats { name, json } => {
            let info = c
                .stats(pb::CollectionStatsRequest { name: name.clone() })
                .await?
                .into_inner();
            Ok(if *json {
                pretty(&info_json(&info))
            } else {
                info_line(&info)
            })
        }
        VectorsCommand::List { json } => {
            let l = c.list(pb::ListCollectionsRequest {}).await?.into_inner();
            if *json {
                return Ok(pretty(&json!({
                    "collections": l.collections.iter().map(info_json).collect::<Vec<_>>(),
                    "threads": l.threads, "cpus": l.cpus, "isa": l.isa, "root": l.root,
                    "load_problems": l.load_problems,
                })));
            }
            let mut out = format!(
                "{} collections under {}; {} search threads on CPUs {:?} ({})\n",
                l.collections.len(),
                l.root,
                l.threads,
                l.cpus,
                l.isa
            );
            for c in &l.collections {
                out.push_str(&info_line(c));
                out.push('\n');
            }
            for p in &l.load_problems {
                out.push_str(&format!("problem: {p}\n"));
            }
            Ok(out)
        }
        VectorsCommand::Delete { name, ids, json } => {
            let r = c
                .delete(pb::DeleteVectorsRequest {
                    name: name.clone(),
                    ids: ids.clone(),
                })
                .await?
                .into_inner();
            Ok(if *json {
                pretty(&json!({"collection": name, "deleted": r.deleted, "count": r.count}))
            } else {
                format!("deleted {} from {name}; {} vectors now", r.deleted, r.count)
            })
        }
        VectorsCommand::Drop { name, json } => {
            c.drop_collection(pb::DropCollectionRequest { name: name.clone() })
                .await?;
            Ok(if *json {
                pretty(&json!({"dropped": name}))
            } else {
                format!("dropped {name}")
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_parse_flat_nested_and_refuse_junk() {
        let (f, n) = parse_vectors(&json!([[1, 2], [3, 4.5]]), "x").unwrap();
        assert_eq!((f, n), (vec![1.0, 2.0, 3.0, 4.5], 2));
        assert_eq!(parse_vectors(&json!([1, 2]), "x").unwrap().1, 1);
        assert!(
            parse_vectors(&json!([["a"]]), "x")
                .unwrap_err()
                .message
                .contains("not a number")
        );
        assert!(parse_vectors(&json!({"a": 1}), "x").is_err());
    }
}
