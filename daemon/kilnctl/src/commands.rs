//! One function per subcommand: call kilnd, then print a table or JSON.

use crate::client::{Failure, connect};
use kiln_api::kiln::v1::daemon_client::DaemonClient;
use kiln_api::kiln::v1::{ReloadRequest, StatusRequest, StatusResponse};
use serde_json::json;
use std::path::Path;

pub fn status_json(s: &StatusResponse) -> serde_json::Value {
    json!({
        "version": s.version,
        "state": s.state,
        "started_at": s.started_at,
        "uptime_s": s.uptime_s,
        "pid": s.pid,
        "socket": s.socket,
        "state_dir": s.state_dir,
        "bus": s.bus,
        "log_level": s.log_level,
        "config_files": s.config_files,
        "restart_required": s.restart_required,
        "components": s.components.iter().map(|c| json!({"name": c.name, "state": c.state, "detail": c.detail})).collect::<Vec<_>>(),
        "budget": s.budget.as_ref().map(|b| json!({
            "budget_bytes": b.budget_bytes,
            "reserved_bytes": b.reserved_bytes,
            "free_bytes": b.free_bytes,
            "pressure_some_avg10": (b.pressure_some_avg10 >= 0.0).then_some(b.pressure_some_avg10),
            "max_pressure": b.max_pressure,
            "reservations": b.reservations.iter().map(|r| json!({"id": r.id, "owner": r.owner, "bytes": r.bytes, "since": r.since})).collect::<Vec<_>>(),
        })),
    })
}

pub fn status_table(s: &StatusResponse) -> String {
    let mut out = String::new();
    let rows = [
        ("state", s.state.clone()),
        ("version", s.version.clone()),
        ("started", format!("{} (up {}s)", s.started_at, s.uptime_s)),
        ("pid", s.pid.to_string()),
        ("socket", s.socket.clone()),
        ("state dir", s.state_dir.clone()),
        ("bus", s.bus.clone()),
        ("log level", s.log_level.clone()),
        (
            "config",
            if s.config_files.is_empty() {
                "(built-in defaults)".into()
            } else {
                s.config_files.join(", ")
            },
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:<12} {v}\n"));
    }
    if !s.restart_required.is_empty() {
        out.push_str(&format!(
            "{:<12} {}\n",
            "restart for",
            s.restart_required.join(", ")
        ));
    }
    if let Some(b) = &s.budget {
        let gib = |v: u64| format!("{:.2} GiB", v as f64 / (1u64 << 30) as f64);
        out.push_str(&format!(
            "{:<12} {} of {} reserved, {} free\n",
            "budget",
            gib(b.reserved_bytes),
            gib(b.budget_bytes),
            gib(b.free_bytes)
        ));
        for r in &b.reservations {
            out.push_str(&format!("{:<12}   {} {}\n", "", gib(r.bytes), r.owner));
        }
    }
    out.push_str("\nCOMPONENT    STATE     DETAIL\n");
    for c in &s.components {
        out.push_str(&format!("{:<12} {:<9} {}\n", c.name, c.state, c.detail));
    }
    out
}

pub async fn status(socket: &Path, as_json: bool) -> Result<String, Failure> {
    let mut c = DaemonClient::new(connect(socket).await?);
    let s = c.status(StatusRequest {}).await?.into_inner();
    Ok(if as_json {
        serde_json::to_string_pretty(&status_json(&s)).unwrap_or_default()
    } else {
        status_table(&s)
    })
}

pub async fn reload(socket: &Path, as_json: bool) -> Result<String, Failure> {
    let mut c = DaemonClient::new(connect(socket).await?);
    let r = c.reload(ReloadRequest {}).await?.into_inner();
    if as_json {
        let v = json!({"applied": r.applied, "restart_required": r.restart_required, "config_files": r.config_files});
        return Ok(serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    let mut out = String::from("configuration reloaded\n");
    if !r.applied.is_empty() {
        out.push_str(&format!("applied: {}\n", r.applied.join(", ")));
    }
    if !r.restart_required.is_empty() {
        out.push_str(&format!(
            "needs a restart: {}\n",
            r.restart_required.join(", ")
        ));
    }
    Ok(out)
}
