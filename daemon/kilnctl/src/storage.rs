//! `kilnctl storage status|snapshots|snapshot|rollback|prune` and `kilnctl models import`
//! (with a text progress bar on stderr for large files): call `kiln.v1.Storage`, print
//! tables for people or JSON for scripts. No storage logic here.

use crate::cli::{ModelsCommand, StorageCommand};
use crate::client::{Failure, connect};
use kiln_api::kiln::v1::storage_client::StorageClient;
use kiln_api::kiln::v1::{
    ImportModelRequest, ListSnapshotsRequest, PruneRequest, RollbackModelRequest, RollbackRequest,
    SnapshotRequest, StorageSnapshot, StorageStatusRequest, import_model_event::Event,
};
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::Path;

/// Imports at least this large show a progress bar.
const PROGRESS_MIN_BYTES: u64 = 16 << 20;

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn snapshot_json(s: &StorageSnapshot) -> Value {
    json!({
        "dataset": s.dataset, "name": s.name, "created": s.created, "keep": s.keep,
        "held": s.held, "managed": s.managed,
        "used_bytes": if s.used_bytes < 0 { Value::Null } else { json!(s.used_bytes) },
    })
}

pub async fn status(socket: &Path, as_json: bool) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let s = c.status(StorageStatusRequest {}).await?.into_inner();
    if as_json {
        let v: Value = serde_json::from_str(&s.json).unwrap_or(Value::Null);
        return Ok(pretty(&v));
    }
    let mut out = format!("backend   {} ({})\n", s.backend, s.description);
    out.push_str(&format!("location  {}\n", s.location));
    if !s.pool_health.is_empty() {
        out.push_str(&format!(
            "pool      {}, scrub {}\n",
            s.pool_health, s.scrub_state
        ));
    }
    out.push_str(&format!(
        "\n{:<12} {:<8} {:>10} {:>10} {:>5}  {}\n",
        "DATASET", "PRESENT", "USED", "AVAIL", "SNAPS", "MOUNTPOINT"
    ));
    for d in &s.datasets {
        out.push_str(&format!(
            "{:<12} {:<8} {:>10} {:>10} {:>5}  {}\n",
            d.dataset,
            if d.present { "yes" } else { "no" },
            human(d.used_bytes),
            human(d.available_bytes),
            d.snapshots,
            d.mountpoint
        ));
    }
    let props: Vec<_> = s
        .datasets
        .iter()
        .flat_map(|d| d.properties.iter().map(move |p| (d, p)))
        .collect();
    if !props.is_empty() {
        out.push_str(&format!(
            "\n{:<12} {:<12} {:<10} {:<10} {}\n",
            "DATASET", "PROPERTY", "REQUESTED", "EFFECTIVE", "REASON"
        ));
        for (d, p) in props {
            out.push_str(&format!(
                "{:<12} {:<12} {:<10} {:<10} {}\n",
                d.dataset, p.property, p.requested, p.effective, p.reason
            ));
        }
    }
    Ok(out)
}

pub async fn snapshots(
    socket: &Path,
    dataset: Option<&str>,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let r = c
        .list_snapshots(ListSnapshotsRequest {
            dataset: dataset.unwrap_or_default().into(),
        })
        .await?
        .into_inner();
    if as_json {
        return Ok(pretty(&Value::Array(
            r.snapshots.iter().map(snapshot_json).collect(),
        )));
    }
    let mut out = format!(
        "{:<12} {:<32} {:<21} {}\n",
        "DATASET", "SNAPSHOT", "CREATED (UTC)", "FLAGS"
    );
    for s in &r.snapshots {
        let mut flags = Vec::new();
        if s.keep {
            flags.push("keep");
        }
        if s.held {
            flags.push("held");
        }
        if !s.managed {
            flags.push("foreign");
        }
        out.push_str(&format!(
            "{:<12} {:<32} {:<21} {}\n",
            s.dataset,
            s.name,
            utc(s.created),
            flags.join(",")
        ));
    }
    Ok(out)
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS`.
fn utc(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub async fn snapshot(
    socket: &Path,
    dataset: &str,
    name: &str,
    keep: bool,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let s = c
        .snapshot(SnapshotRequest {
            dataset: dataset.into(),
            name: name.into(),
            keep,
        })
        .await?
        .into_inner();
    Ok(if as_json {
        pretty(&snapshot_json(&s))
    } else {
        format!("created {}@{}\n", s.dataset, s.name)
    })
}

pub async fn rollback(
    socket: &Path,
    dataset: &str,
    name: &str,
    destroy_newer: bool,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let r = c
        .rollback(RollbackRequest {
            dataset: dataset.into(),
            name: name.into(),
            destroy_newer,
        })
        .await?
        .into_inner();
    if as_json {
        return Ok(pretty(
            &json!({"dataset": r.dataset, "snapshot": r.snapshot, "destroyed": r.destroyed}),
        ));
    }
    let mut out = format!("rolled {} back to {}\n", r.dataset, r.snapshot);
    if !r.destroyed.is_empty() {
        out.push_str(&format!("destroyed newer: {}\n", r.destroyed.join(", ")));
    }
    Ok(out)
}

pub async fn prune(socket: &Path, dataset: Option<&str>, as_json: bool) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let r = c
        .prune(PruneRequest {
            dataset: dataset.unwrap_or_default().into(),
        })
        .await?
        .into_inner();
    let reports: Value = serde_json::from_str(&r.json).unwrap_or(Value::Null);
    if as_json {
        return Ok(pretty(&reports));
    }
    let mut out = String::new();
    for rep in reports.as_array().into_iter().flatten() {
        let ds = rep["dataset"].as_str().unwrap_or("?");
        for k in rep["kept"].as_array().into_iter().flatten() {
            let why: Vec<&str> = k["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str())
                .collect();
            out.push_str(&format!(
                "kept      {ds}@{} ({})\n",
                k["name"].as_str().unwrap_or(""),
                why.join(", ")
            ));
        }
        for (key, label) in [("protected", "protected"), ("failed", "failed")] {
            for p in rep[key].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{label:<9} {ds}@{} ({})\n",
                    p["name"].as_str().unwrap_or(""),
                    p["reason"].as_str().unwrap_or("")
                ));
            }
        }
        for n in rep["removed"].as_array().into_iter().flatten() {
            out.push_str(&format!("removed   {ds}@{}\n", n.as_str().unwrap_or("")));
        }
    }
    if out.is_empty() {
        out.push_str("no snapshots to prune\n");
    }
    Ok(out)
}

/// A one-line progress bar on stderr (redrawn in place on a terminal, else every 10%).
struct Bar {
    tty: bool,
    last_tenth: u64,
    shown: bool,
}

impl Bar {
    fn update(&mut self, done: u64, total: u64) {
        if total < PROGRESS_MIN_BYTES {
            return;
        }
        let pct = done.saturating_mul(100) / total.max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let filled = (pct / 4) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {pct:>3}% {} / {}",
                "#".repeat(filled),
                "-".repeat(25 - filled.min(25)),
                human(done),
                human(total)
            );
        } else if pct / 10 != self.last_tenth || !self.shown {
            self.last_tenth = pct / 10;
            let _ = writeln!(
                err,
                "importing: {pct}% ({} / {})",
                human(done),
                human(total)
            );
        }
        self.shown = true;
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty && self.shown {
            let _ = writeln!(std::io::stderr());
        }
    }
}

pub async fn import(
    socket: &Path,
    path: &Path,
    name: &str,
    load: bool,
    as_json: bool,
) -> Result<String, Failure> {
    // The daemon reads the path itself: send it absolute, symlinks kept (the model takes
    // the link's name).
    let abs = std::path::absolute(path).map_err(|e| Failure {
        message: format!("{}: {e}", path.display()),
        code: 1,
    })?;
    if !abs.exists() {
        return Err(Failure {
            message: format!(
                "{} does not exist; give the model file or directory to import",
                abs.display()
            ),
            code: 1,
        });
    }
    let mut c = StorageClient::new(connect(socket).await?);
    let mut stream = c
        .import_model(ImportModelRequest {
            path: abs.display().to_string(),
            name: name.into(),
            load,
        })
        .await?
        .into_inner();
    let mut bar = Bar {
        tty: std::io::stderr().is_terminal(),
        last_tenth: 0,
        shown: false,
    };
    let mut result = None;
    let streamed = loop {
        match stream.message().await {
            Ok(Some(ev)) => match ev.event {
                Some(Event::Progress(p)) => bar.update(p.done_bytes, p.total_bytes),
                Some(Event::Result(r)) => result = Some(r),
                None => {}
            },
            Ok(None) => break Ok(()),
            Err(s) => break Err(s),
        }
    };
    bar.finish();
    streamed?;
    let r = result.ok_or_else(|| Failure {
        message: "kilnd ended the import without a result; see `journalctl -u kilnd`".into(),
        code: 1,
    })?;
    let out = if as_json {
        pretty(&json!({
            "name": r.name, "version": r.version, "snapshot": r.snapshot, "path": r.path,
            "files": r.files, "bytes": r.bytes,
            "load": if r.load_requested { json!({"ok": r.loaded, "detail": r.load_detail}) } else { Value::Null },
        }))
    } else {
        let mut s = format!(
            "imported {} version {} ({} files, {}) as snapshot models@{}\n",
            r.name,
            r.version,
            r.files,
            human(r.bytes),
            r.snapshot
        );
        if r.load_requested && r.loaded {
            s.push_str(&format!("loaded: {}\n", r.load_detail));
        }
        s
    };
    if r.load_requested && !r.loaded {
        // The import stands; the load did not happen: say so and exit non-zero.
        print!("{out}");
        return Err(Failure {
            message: format!(
                "imported {} version {}, but loading it failed: {}",
                r.name, r.version, r.load_detail
            ),
            code: 1,
        });
    }
    Ok(out)
}

pub async fn rollback_model(
    socket: &Path,
    name: &str,
    version: u32,
    as_json: bool,
) -> Result<String, Failure> {
    let mut c = StorageClient::new(connect(socket).await?);
    let r = c
        .rollback_model(RollbackModelRequest {
            name: name.into(),
            version,
        })
        .await?
        .into_inner();
    if as_json {
        return Ok(pretty(&json!({
            "name": r.name, "version": r.version, "snapshot": r.snapshot,
            "versions": r.versions, "removed_versions": r.removed_versions, "bytes": r.bytes,
        })));
    }
    let mut out = format!(
        "model {} restored to version {} (snapshot models@{}); versions now {:?}\n",
        r.name, r.version, r.snapshot, r.versions
    );
    if !r.removed_versions.is_empty() {
        out.push_str(&format!(
            "later versions {:?} left the live tree (their snapshots remain)\n",
            r.removed_versions
        ));
    }
    Ok(out)
}

/// `kilnctl storage …`.
pub async fn run(socket: &Path, cmd: &StorageCommand) -> Result<String, Failure> {
    match cmd {
        StorageCommand::Status { json } => status(socket, *json).await,
        StorageCommand::Snapshots { dataset, json } => {
            snapshots(socket, dataset.as_deref(), *json).await
        }
        StorageCommand::Snapshot {
            dataset,
            name,
            keep,
            json,
        } => snapshot(socket, dataset, name, *keep, *json).await,
        StorageCommand::Rollback {
            dataset,
            snapshot,
            destroy_newer,
            json,
        } => rollback(socket, dataset, snapshot, *destroy_newer, *json).await,
        StorageCommand::Prune { dataset, json } => prune(socket, dataset.as_deref(), *json).await,
    }
}

/// `kilnctl models import|rollback`.
pub async fn run_models(socket: &Path, cmd: &ModelsCommand) -> Result<String, Failure> {
    match cmd {
        ModelsCommand::Import {
            path,
            name,
            load,
            json,
        } => import(socket, path, name, *load, *json).await,
        ModelsCommand::Rollback {
            name,
            version,
            json,
        } => rollback_model(socket, name, *version, *json).await,
        // list, load, unload, stats: model serving (models.rs).
        other => crate::models::run(socket, other).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_sizes() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_763_726_400), "2025-11-21 12:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
