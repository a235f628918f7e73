//! `kilnctl jobs submit|list|show|logs|cancel|checkpoint`: build a job spec from flags,
//! call `kiln.v1.Jobs`, print tables for people or JSON for scripts, follow logs, and a
//! live progress view (`--watch`) for running jobs. No job logic here.

use crate::client::{Failure, connect};
use clap::Subcommand;
use kiln_api::kiln::v1::jobs_client::JobsClient;
use kiln_api::kiln::v1::{
    CancelJobRequest, CheckpointJobRequest, GetJobRequest, Job, JobLogsRequest, JobSpec,
    ListJobsRequest, SubmitJobRequest,
};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job: `kilnctl jobs submit --memory 8G --cpus p:4 -- python3 train.py`.
    Submit {
        /// cpu (kilnd's default), gpu or npu.
        #[arg(long)]
        device: Option<String>,
        /// Memory limit and budget reservation: 512M, 8G, ... (kilnd's default: [jobs]
        /// default_memory_bytes, 1G).
        #[arg(long)]
        memory: Option<String>,
        /// KIND[:COUNT]: p|performance, e|efficiency, lp|low-power, any (kilnd's default).
        #[arg(long)]
        cpus: Option<String>,
        /// local (kilnd's default), burst or auto.
        #[arg(long)]
        placement: Option<String>,
        /// -100..100; higher runs first.
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        priority: i32,
        /// Job name (default: the program's name).
        #[arg(long)]
        name: Option<String>,
        /// Working directory (absolute; default: the job's checkpoint directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// KEY=VALUE, repeatable.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Seconds; 0 = no limit.
        #[arg(long, default_value_t = 0)]
        max_runtime: u64,
        /// Mark as GPU training (deferred on battery when configured).
        #[arg(long)]
        training: bool,
        #[arg(long)]
        json: bool,
        /// The program and its arguments, after `--`.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Jobs, newest first.
    List {
        #[arg(long)]
        json: bool,
        /// Redraw every second (live progress) until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// One job in detail.
    Show {
        id: u64,
        #[arg(long)]
        json: bool,
        /// Redraw every second until the job ends.
        #[arg(long)]
        watch: bool,
    },
    /// The job's output.
    Logs {
        id: u64,
        /// Keep following new output until the job ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel: a queued job is removed; a running one gets SIGTERM, then SIGKILL.
    Cancel {
        id: u64,
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a running job's checkpoint directory now.
    Checkpoint {
        id: u64,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long)]
        json: bool,
    },
}

/// Parse `512M`, `8G`, `1.5GiB` or plain bytes.
pub fn parse_memory(s: &str) -> Result<u64, Failure> {
    kiln_jobs::parse_memory(s).map_err(|e| Failure {
        message: e.message,
        code: 1,
    })
}

fn bad(m: impl Into<String>) -> Failure {
    Failure {
        message: m.into(),
        code: 1,
    }
}

fn job_json(j: &Job) -> Value {
    serde_json::from_str(&j.json).unwrap_or(Value::Null)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

pub fn table(jobs: &[Job]) -> String {
    let mut out = format!(
        "{:<5} {:<16} {:<10} {:<10} {:<8} {:<8} {}\n",
        "ID", "NAME", "STATE", "MEMORY", "CPUS", "PID", "DETAIL"
    );
    for j in jobs {
        let spec = j.spec.clone().unwrap_or_default();
        let detail = if !j.progress.is_empty() {
            format!("progress: {}", j.progress)
        } else {
            j.detail.clone()
        };
        out.push_str(&format!(
            "{:<5} {:<16} {:<10} {:<10} {:<8} {:<8} {}\n",
            j.id,
            j.name,
            j.state,
            gib(spec.memory_bytes),
            if j.cpus.is_empty() {
                "-".into()
            } else {
                j.cpus.clone()
            },
            if j.pid > 0 {
                j.pid.to_string()
            } else {
                "-".into()
            },
            detail
        ));
    }
    out
}

pub fn show(j: &Job) -> String {
    let spec = j.spec.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        if !v.is_empty() {
            out.push_str(&format!("{k:<14}{v}\n"));
        }
    };
    line("id", j.id.to_string());
    line("name", j.name.clone());
    line("state", j.state.clone());
    line("detail", j.detail.clone());
    line("command", spec.argv.join(" "));
    line("device", spec.device.clone());
    line(
        "memory",
        format!(
            "{} ({})",
            gib(spec.memory_bytes),
            if j.memory_limit.is_empty() {
                "not started"
            } else {
                &j.memory_limit
            }
        ),
    );
    if j.memory_used_bytes >= 0 {
        line("memory used", gib(j.memory_used_bytes as u64));
    }
    line(
        "cpus asked",
        format!("{}:{}", spec.cpu_kind, spec.cpu_count),
    );
    line("cpus pinned", j.cpus.clone());
    line("priority", spec.priority.to_string());
    line("placement", spec.placement.clone());
    line(
        "pid",
        if j.pid > 0 {
            j.pid.to_string()
        } else {
            String::new()
        },
    );
    line("unit", j.unit.clone());
    line("progress", j.progress.clone());
    line("submitted", j.submitted_at.clone());
    line("started", j.started_at.clone());
    line("finished", j.finished_at.clone());
    if j.has_exit_code {
        line("exit code", j.exit_code.to_string());
    }
    if j.signal > 0 {
        line("signal", j.signal.to_string());
    }
    line("log", j.log_path.clone());
    line("checkpoints", j.checkpoint_dir.clone());
    for c in &j.checkpoints {
        let label = if c.label.is_empty() {
            String::new()
        } else {
            format!(" ({})", c.label)
        };
        line(
            "  snapshot",
            format!("{}{label} at {}", c.snapshot, c.created_at),
        );
    }
    out
}

fn finished(j: &Job) -> bool {
    matches!(j.state.as_str(), "succeeded" | "failed" | "cancelled")
}

fn redraw(text: &str) {
    let mut o = std::io::stdout().lock();
    if o.is_terminal() {
        let _ = write!(o, "\x1b[2J\x1b[H");
    }
    let _ = writeln!(o, "{text}");
    let _ = o.flush();
}

pub async fn run(socket: &Path, cmd: &JobsCommand) -> Result<String, Failure> {
    let mut c = JobsClient::new(connect(socket).await?);
    match cmd {
        JobsCommand::Submit {
            device,
            memory,
            cpus,
            placement,
            priority,
            name,
            workdir,
            env,
            max_runtime,
            training,
            json,
            command,
        } => {
            if command.is_empty() {
                return Err(bad(
                    "empty command: give the program and its arguments after `--` (e.g. kilnctl jobs submit -- python3 train.py)",
                ));
            }
            let cpus = cpus.clone().unwrap_or_default();
            let (kind, count) = match cpus.split_once(':') {
                Some((k, n)) => (
                    k.to_string(),
                    n.parse::<u32>().map_err(|_| {
                        bad(format!(
                            "bad --cpus {cpus:?}: COUNT must be a number, e.g. p:4"
                        ))
                    })?,
                ),
                None => (cpus, 0),
            };
            let mut envs = std::collections::HashMap::new();
            for e in env {
                let (k, v) = e
                    .split_once('=')
                    .ok_or_else(|| bad(format!("bad --env {e:?}: use KEY=VALUE")))?;
                envs.insert(k.to_string(), v.to_string());
            }
            let workdir = match workdir {
                Some(w) if w.is_relative() => std::env::current_dir()
                    .map(|d| d.join(w))
                    .unwrap_or(w.clone()),
                Some(w) => w.clone(),
                None => PathBuf::new(),
            };
            let spec = JobSpec {
                name: name.clone().unwrap_or_default(),
                argv: command.clone(),
                workdir: workdir.display().to_string(),
                env: envs,
                device: device.clone().unwrap_or_default(),
                memory_bytes: memory
                    .as_deref()
                    .map(parse_memory)
                    .transpose()?
                    .unwrap_or(0),
                cpu_kind: kind,
                cpu_count: count,
                priority: *priority,
                max_runtime_s: *max_runtime,
                placement: placement.clone().unwrap_or_default(),
                training: *training,
            };
            let j = c
                .submit(SubmitJobRequest { spec: Some(spec) })
                .await?
                .into_inner();
            if *json {
                return Ok(pretty(&job_json(&j)));
            }
            Ok(format!("job {} {}: {}\n", j.id, j.state, j.detail))
        }
        JobsCommand::List { json, watch } => loop {
            let jobs = c.list(ListJobsRequest {}).await?.into_inner().jobs;
            let text = if *json {
                pretty(&Value::Array(jobs.iter().map(job_json).collect()))
            } else {
                table(&jobs)
            };
            if !*watch {
                return Ok(text);
            }
            redraw(&text);
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        JobsCommand::Show { id, json, watch } => loop {
            let j = c.get(GetJobRequest { id: *id }).await?.into_inner();
            let text = if *json {
                pretty(&job_json(&j))
            } else {
                show(&j)
            };
            if !*watch {
                return Ok(text);
            }
            redraw(&text);
            if finished(&j) {
                return Ok(String::new());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        },
        JobsCommand::Logs { id, follow } => {
            let mut s = c
                .logs(JobLogsRequest {
                    id: *id,
                    follow: *follow,
                })
                .await?
                .into_inner();
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = s.message().await? {
                let _ = out.write_all(&chunk.data);
                let _ = out.flush();
            }
            Ok(String::new())
        }
        JobsCommand::Cancel { id, json } => {
            let j = c.cancel(CancelJobRequest { id: *id }).await?.into_inner();
            if *json {
                return Ok(pretty(&job_json(&j)));
            }
            Ok(format!("job {} {}: {}\n", j.id, j.state, j.detail))
        }
        JobsCommand::Checkpoint { id, label, json } => {
            let r = c
                .checkpoint(CheckpointJobRequest {
                    id: *id,
                    label: label.clone(),
                })
                .await?
                .into_inner();
            if *json {
                return Ok(pretty(
                    &serde_json::json!({"id": id, "snapshot": r.snapshot}),
                ));
            }
            Ok(format!("job {id}: checkpoint snapshot {}\n", r.snapshot))
        }
    }
}
