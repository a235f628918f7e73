//! A job as a transport hands it over: only `argv` is needed, every other field optional.
//! The engine fills in the defaults and parses the names here, once, so a job submitted over
//! gRPC, D-Bus or kilnctl with the same fields gets the same spec. Pure; touches nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_jobs::{CpuRequest, Device, JobError, JobSpec, Placement};
use serde::Deserialize;

/// The CPUs a job asks for: `"p:4"` (kilnctl's form), or its parts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CpusRequest {
    Text(String),
    Parts {
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        count: Option<u32>,
    },
}

/// A job submission; `None` (or an empty string or list) takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobRequest {
    /// Default: derived from `argv[0]`.
    pub name: Option<String>,
    pub argv: Vec<String>,
    /// Default: the job's checkpoint directory.
    pub workdir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    /// `cpu` (default), `gpu` or `npu`.
    pub device: Option<String>,
    /// Memory limit and budget reservation; unset or 0: `[jobs] default_memory_bytes`.
    pub memory_bytes: Option<u64>,
    /// Default: any CPU kilnd may use.
    pub cpus: Option<CpusRequest>,
    /// -100..=100, default 0.
    pub priority: Option<i32>,
    /// Seconds, default 0 (no limit).
    pub max_runtime_s: Option<u64>,
    /// `local` (default), `burst` or `auto`.
    pub placement: Option<String>,
    /// GPU training-style work the power policy may defer on battery. Default false.
    pub training: Option<bool>,
}

/// What a D-Bus caller or an example shows: the smallest valid request.
pub const EXAMPLE_JSON: &str = r#"{"argv": ["python3", "train.py"], "memory_bytes": 8589934592}"#;

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl JobRequest {
    /// Parse a JSON request (the D-Bus form); the error names the problem and an example.
    pub fn from_json(text: &str) -> Result<JobRequest, JobError> {
        serde_json::from_str(text).map_err(|e| {
            JobError::invalid(format!(
                "job request is not valid JSON for a job ({e}); e.g. {EXAMPLE_JSON}"
            ))
        })
    }

    /// The spec with every default filled in (validation proper happens on submit).
    pub fn into_spec(self, default_memory_bytes: u64) -> Result<JobSpec, JobError> {
        let cpus = match &self.cpus {
            None => CpuRequest {
                kind: None,
                count: 0,
            },
            Some(CpusRequest::Text(t)) if t.trim().is_empty() => CpuRequest {
                kind: None,
                count: 0,
            },
            Some(CpusRequest::Text(t)) => CpuRequest::parse(t.trim())?,
            Some(CpusRequest::Parts { kind, count }) => CpuRequest {
                kind: given(kind)
                    .map(|k| CpuRequest::parse(k).map(|r| r.kind))
                    .transpose()?
                    .flatten(),
                count: count.unwrap_or(0),
            },
        };
        Ok(JobSpec {
            name: given(&self.name).unwrap_or_default().to_string(),
            argv: self.argv,
            workdir: self.workdir.filter(|p| !p.as_os_str().is_empty()),
            env: self.env,
            device: match given(&self.device) {
                Some(d) => kiln_jobs::parse_device(d)?,
                None => Device::Cpu,
            },
            memory_bytes: self
                .memory_bytes
                .filter(|m| *m > 0)
                .unwrap_or(default_memory_bytes),
            cpus,
            priority: self.priority.unwrap_or(0),
            max_runtime_s: self.max_runtime_s.unwrap_or(0),
            placement: match given(&self.placement) {
                Some(p) => Placement::parse(p)?,
                None => Placement::Local,
            },
            training: self.training.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    #[test]
    fn only_argv_gets_every_default() {
        let s = JobRequest::from_json(r#"{"argv": ["python3", "train.py"]}"#)
            .unwrap()
            .into_spec(G)
            .unwrap();
        assert_eq!(
            s,
            JobSpec {
                argv: vec!["python3".into(), "train.py".into()],
                memory_bytes: G,
                ..JobSpec::default()
            }
        );
        assert_eq!(
            (s.device, s.cpus.kind, s.placement),
            (Device::Cpu, None, Placement::Local)
        );
    }

    #[test]
    fn empty_strings_are_unset_and_both_cpu_forms_parse() {
        let text = JobRequest {
            argv: vec!["x".into()],
            name: Some(" ".into()),
            device: Some(String::new()),
            cpus: Some(CpusRequest::Text("p:4".into())),
            ..Default::default()
        };
        let parts = JobRequest::from_json(
            r#"{"argv": ["x"], "cpus": {"kind": "performance", "count": 4}}"#,
        )
        .unwrap();
        let (a, b) = (text.into_spec(G).unwrap(), parts.into_spec(G).unwrap());
        assert_eq!(a, b);
        assert_eq!(
            (a.cpus.kind, a.cpus.count),
            (Some(kiln_jobs::CpuKind::Performance), 4)
        );
        assert_eq!((a.name.as_str(), a.device), ("", Device::Cpu));
    }

    #[test]
    fn bad_fields_name_the_problem() {
        let e = JobRequest::from_json(r#"{"argv": ["x"], "memory": "8G"}"#).unwrap_err();
        assert!(
            e.message.contains("memory") && e.message.contains("argv"),
            "{e:?}"
        );
        let e = JobRequest::from_json(r#"{"argv": ["x"], "device": "tpu"}"#)
            .unwrap()
            .into_spec(G)
            .unwrap_err();
        assert!(
            e.message.contains("tpu") && e.message.contains("npu"),
            "{e:?}"
        );
        let e = JobRequest::from_json(r#"{"argv": ["x"], "cpus": "q:2"}"#)
            .unwrap()
            .into_spec(G)
            .unwrap_err();
        assert!(e.message.contains("q:2"), "{e:?}");
    }
}
