//! What a job is: [`JobSpec`] (name, argv, working dir, env, device, memory, CPUs,
//! priority, max runtime, placement), parsers for the command-line forms (`8G`, `p:4`)
//! and [`JobSpec::validate`], which refuses bad specs with the reason and the fix.
//! Pure data; reads only the working directory's metadata.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::JobError;

/// Where the job's accelerator work runs: a HAL device kind. NCS2 sticks serve models,
/// not jobs ([`parse_device`] and [`JobSpec::validate`] refuse them).
pub use kiln_hal::DeviceKind as Device;

/// `cpu`, `gpu` or `npu` (any case).
pub fn parse_device(s: &str) -> Result<Device, JobError> {
    match s.to_ascii_lowercase().as_str() {
        "cpu" => Ok(Device::Cpu),
        "gpu" => Ok(Device::Gpu),
        "npu" => Ok(Device::Npu),
        _ => Err(JobError::invalid(format!(
            "unknown device {s:?}: use one of cpu, gpu, npu"
        ))),
    }
}

/// The HAL's CPU kinds: a job asks for one, or for any CPU (`None`).
pub use kiln_hal::CpuKind;

/// `performance`, `efficiency`, `low-power`, or `any` for no kind.
pub fn cpu_kind_name(kind: Option<CpuKind>) -> &'static str {
    kind.map_or("any", CpuKind::as_str)
}

/// Serde of an optional kind as its name, `any` for none (the stored and wire form).
mod any_kind {
    use super::CpuKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &Option<CpuKind>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::cpu_kind_name(*k))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CpuKind>, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "any" => Ok(None),
            "performance" => Ok(Some(CpuKind::Performance)),
            "efficiency" => Ok(Some(CpuKind::Efficiency)),
            "low-power" => Ok(Some(CpuKind::LowPower)),
            other => Err(serde::de::Error::custom(format!(
                "unknown CPU kind {other:?}: use performance, efficiency, low-power or any"
            ))),
        }
    }
}

/// `kind` CPUs, `count` of them (0 = every CPU of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CpuRequest {
    /// `None`: any CPU kilnd may use.
    #[serde(with = "any_kind")]
    pub kind: Option<CpuKind>,
    pub count: u32,
}

impl CpuRequest {
    /// Parse `p:4`, `e:2`, `lp:1`, `any:8`, `performance:4`, or a bare kind (`p` = all P-CPUs).
    pub fn parse(s: &str) -> Result<CpuRequest, JobError> {
        let bad = || {
            JobError::invalid(format!(
                "bad CPU request {s:?}: use KIND[:COUNT] with KIND one of p|performance, e|efficiency, lp|low-power, any (e.g. p:4)"
            ))
        };
        let (k, n) = match s.split_once(':') {
            Some((k, n)) => (k, Some(n)),
            None => (s, None),
        };
        let kind = match k.to_ascii_lowercase().as_str() {
            "p" | "performance" => Some(CpuKind::Performance),
            "e" | "efficiency" => Some(CpuKind::Efficiency),
            "lp" | "low-power" | "lowpower" => Some(CpuKind::LowPower),
            "any" | "" => None,
            _ => return Err(bad()),
        };
        let count = match n {
            None => 0,
            Some(n) => n.parse::<u32>().map_err(|_| bad())?,
        };
        Ok(CpuRequest { kind, count })
    }
}

/// Where the job runs. Only `local` runs today; `burst` is refused and `auto` runs
/// locally until the burst engine lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Local,
    Burst,
    Auto,
}

impl Placement {
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::Local => "local",
            Placement::Burst => "burst",
            Placement::Auto => "auto",
        }
    }

    pub fn parse(s: &str) -> Result<Placement, JobError> {
        match s.to_ascii_lowercase().as_str() {
            "local" => Ok(Placement::Local),
            "burst" => Ok(Placement::Burst),
            "auto" => Ok(Placement::Auto),
            _ => Err(JobError::invalid(format!(
                "unknown placement {s:?}: use one of local, burst, auto"
            ))),
        }
    }
}

/// The longest `max_runtime_s` accepted (one year); more would overflow the timers.
pub const MAX_RUNTIME_S: u64 = 365 * 24 * 3600;

/// A job as submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobSpec {
    /// Short name; used in snapshot names (`<name>-ckpt-<n>`). Empty: derived from argv[0].
    pub name: String,
    pub argv: Vec<String>,
    /// Working directory; must exist. Empty: the job's checkpoint directory.
    pub workdir: Option<PathBuf>,
    pub env: BTreeMap<String, String>,
    pub device: Device,
    /// Memory limit and budget reservation, bytes.
    pub memory_bytes: u64,
    pub cpus: CpuRequest,
    /// Higher runs first; -100..=100.
    pub priority: i32,
    /// Seconds; 0 = no limit.
    pub max_runtime_s: u64,
    pub placement: Placement,
    /// GPU training-style work that the power policy may defer on battery.
    #[serde(default)]
    pub training: bool,
}

/// What `validate` checks against: the whole budget and the CPUs of each kind.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub budget_bytes: u64,
    pub performance: u32,
    pub efficiency: u32,
    pub low_power: u32,
    pub online: u32,
}

impl Limits {
    pub fn new(
        budget_bytes: u64,
        performance: u32,
        efficiency: u32,
        low_power: u32,
        online: u32,
    ) -> Limits {
        Limits {
            budget_bytes,
            performance,
            efficiency,
            low_power,
            online,
        }
    }

    pub fn cpus(&self, k: Option<CpuKind>) -> u32 {
        match k {
            Some(CpuKind::Performance) => self.performance,
            Some(CpuKind::Efficiency) => self.efficiency,
            Some(CpuKind::LowPower) => self.low_power,
            None => self.online,
        }
    }
}

pub const MIN_MEMORY: u64 = 16 << 20;

/// Parse `512M`, `8G`, `8GiB`, `1.5G`, `1048576` (bytes).
pub fn parse_memory(s: &str) -> Result<u64, JobError> {
    let t = s.trim();
    let bad = || {
        JobError::invalid(format!(
            "bad memory size {s:?}: use a number with an optional unit K, M, G or T (e.g. 8G, 512M)"
        ))
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = n * mult as f64;
    if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Bytes as GiB with two decimals.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl JobSpec {
    /// Fill defaults (name from argv[0]) and check everything that can be checked
    /// at submit. Returns the first problem, with the fix.
    pub fn validate(&mut self, limits: &Limits) -> Result<(), JobError> {
        if self.argv.is_empty() || self.argv[0].trim().is_empty() {
            return Err(JobError::invalid(
                "empty command: give the program and its arguments after `--` (e.g. kilnctl jobs submit -- python3 train.py)",
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(JobError::invalid("an argument contains a NUL byte"));
        }
        if self.device == Device::Ncs2 {
            return Err(JobError::invalid(
                "device ncs2: NCS2 sticks serve models, they do not run jobs; use cpu, gpu or npu",
            ));
        }
        if self.name.is_empty() {
            let base = std::path::Path::new(&self.argv[0])
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let cleaned: String = base
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let cleaned = cleaned.trim_start_matches(['.', '-', '_']).to_string();
            self.name = if cleaned.is_empty() {
                "job".into()
            } else {
                cleaned.chars().take(64).collect()
            };
        }
        if !valid_name(&self.name) {
            return Err(JobError::invalid(format!(
                "bad job name {:?}: use 1-64 of letters, digits, `_ - .`, starting with a letter or digit",
                self.name
            )));
        }
        if let Some(dir) = &self.workdir {
            if !dir.is_absolute() {
                return Err(JobError::invalid(format!(
                    "working directory {} is relative: give an absolute path",
                    dir.display()
                )));
            }
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(JobError::invalid(format!(
                        "working directory {} is not a directory",
                        dir.display()
                    )));
                }
                Err(e) => {
                    return Err(JobError::invalid(format!(
                        "working directory {} does not exist or cannot be read ({e}): create it or pass an existing --workdir",
                        dir.display()
                    )));
                }
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(JobError::invalid(format!(
                    "bad environment variable name {k:?}: names may not be empty or contain `=`"
                )));
            }
            if v.contains('\0') {
                return Err(JobError::invalid(format!(
                    "environment variable {k}: the value contains a NUL byte"
                )));
            }
            if k.starts_with("KILN_") {
                return Err(JobError::invalid(format!(
                    "environment variable {k} is reserved: kiln sets KILN_* variables itself"
                )));
            }
        }
        if self.max_runtime_s > MAX_RUNTIME_S {
            return Err(JobError::invalid(format!(
                "max runtime {} s is above the {MAX_RUNTIME_S} s (one year) maximum; use 0 for no limit",
                self.max_runtime_s
            )));
        }
        if self.memory_bytes == 0 {
            return Err(JobError::invalid(
                "no memory given: every job needs a memory limit (e.g. --memory 4G)",
            ));
        }
        if self.memory_bytes < MIN_MEMORY {
            return Err(JobError::invalid(format!(
                "memory {} bytes is below the 16 MiB minimum: ask for at least --memory 16M",
                self.memory_bytes
            )));
        }
        if self.memory_bytes > limits.budget_bytes {
            return Err(JobError::invalid(format!(
                "memory {} is above the whole UMA budget of {}: ask for at most {}, or run it elsewhere (placement burst, when available)",
                gib(self.memory_bytes),
                gib(limits.budget_bytes),
                gib(limits.budget_bytes)
            )));
        }
        let have = limits.cpus(self.cpus.kind);
        if have == 0 {
            return Err(JobError::invalid(format!(
                "this machine has no {} CPUs: ask for another kind (kilnctl devices lists them)",
                cpu_kind_name(self.cpus.kind)
            )));
        }
        if self.cpus.count > have {
            return Err(JobError::invalid(format!(
                "asked for {} {} CPUs but this machine has {have}: ask for at most {have}",
                self.cpus.count,
                cpu_kind_name(self.cpus.kind)
            )));
        }
        if !(-100..=100).contains(&self.priority) {
            return Err(JobError::invalid(format!(
                "priority {} is out of range: use -100..=100 (higher runs first)",
                self.priority
            )));
        }
        if self.placement == Placement::Burst {
            return Err(JobError::invalid(
                "bursting is not available yet: submit with placement local (or auto, which runs locally for now)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;

    fn limits() -> Limits {
        Limits::new(48 * G, 4, 8, 2, 14)
    }

    #[test]
    fn devices_are_the_hal_s_kinds_without_ncs2() {
        assert_eq!(parse_device("GPU").unwrap(), Device::Gpu);
        assert!(parse_device("ncs2").is_err(), "not a job device by name");
        let stored: JobSpec =
            serde_json::from_str(r#"{"name":"x","argv":["/bin/true"],"workdir":null,"env":{},"device":"ncs2","memory_bytes":67108864,"cpus":{"kind":"any","count":0},"priority":0,"max_runtime_s":0,"placement":"local","training":false}"#)
                .unwrap();
        let e = stored.clone().validate(&limits()).unwrap_err();
        assert!(
            e.message.contains("ncs2") && e.message.contains("cpu, gpu or npu"),
            "{e:?}"
        );
        assert_eq!(serde_json::to_value(Device::Npu).unwrap(), "npu");
    }

    #[test]
    fn cpu_kinds_keep_their_stored_names() {
        let any = CpuRequest::default();
        assert_eq!(
            serde_json::to_string(&any).unwrap(),
            r#"{"kind":"any","count":0}"#
        );
        let lp: CpuRequest = serde_json::from_str(r#"{"kind":"low-power","count":2}"#).unwrap();
        assert_eq!((lp.kind, lp.count), (Some(CpuKind::LowPower), 2));
        let back: CpuRequest = serde_json::from_str(&serde_json::to_string(&lp).unwrap()).unwrap();
        assert_eq!(back, lp);
        let e = serde_json::from_str::<CpuRequest>(r#"{"kind":"turbo","count":1}"#).unwrap_err();
        assert!(
            e.to_string().contains("turbo") && e.to_string().contains("low-power"),
            "{e}"
        );
    }

    fn ok_spec() -> JobSpec {
        JobSpec {
            argv: vec!["/bin/true".into()],
            memory_bytes: G,
            ..Default::default()
        }
    }

    #[test]
    fn parses_memory_and_cpus() {
        assert_eq!(parse_memory("8G").unwrap(), 8 * G);
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 * G / 2);
        assert_eq!(parse_memory("4096").unwrap(), 4096);
        assert!(parse_memory("8Q").unwrap_err().to_string().contains("8Q"));
        assert!(parse_memory("").is_err());
        assert_eq!(
            CpuRequest::parse("p:4").unwrap(),
            CpuRequest {
                kind: Some(CpuKind::Performance),
                count: 4
            }
        );
        assert_eq!(
            CpuRequest::parse("lp").unwrap().kind,
            Some(CpuKind::LowPower)
        );
        assert!(CpuRequest::parse("x:1").is_err());
        assert!(CpuRequest::parse("p:-1").is_err());
        assert!(
            parse_device("tpu")
                .unwrap_err()
                .to_string()
                .contains("cpu, gpu, npu")
        );
    }

    #[test]
    fn default_name_from_argv() {
        let mut s = ok_spec();
        s.argv = vec!["/usr/bin/python3".into(), "x.py".into()];
        s.validate(&limits()).unwrap();
        assert_eq!(s.name, "python3");
    }

    #[test]
    fn each_bad_spec_is_refused_with_its_reason() {
        let l = limits();
        type Mutation = Box<dyn Fn(&mut JobSpec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.argv.clear()), "empty command"),
            (
                Box::new(|s| s.memory_bytes = 49 * G),
                "above the whole UMA budget of 48.00 GiB",
            ),
            (Box::new(|s| s.memory_bytes = 0), "no memory given"),
            (
                Box::new(|s| s.workdir = Some("/nonexistent/kiln-dir".into())),
                "/nonexistent/kiln-dir does not exist",
            ),
            (Box::new(|s| s.workdir = Some("rel".into())), "is relative"),
            (
                Box::new(|s| {
                    s.cpus = CpuRequest {
                        kind: Some(CpuKind::Performance),
                        count: 5,
                    }
                }),
                "has 4",
            ),
            (Box::new(|s| s.priority = 500), "priority 500"),
            (
                Box::new(|s| s.placement = Placement::Burst),
                "bursting is not available yet",
            ),
            (Box::new(|s| s.name = "bad name".into()), "bad job name"),
            (
                Box::new(|s| s.max_runtime_s = u64::MAX),
                "one year) maximum",
            ),
            (
                Box::new(|s| {
                    s.env.insert("X".into(), "a\0b".into());
                }),
                "contains a NUL byte",
            ),
            (
                Box::new(|s| {
                    s.env.insert("KILN_X".into(), "1".into());
                }),
                "reserved",
            ),
        ];
        for (mutate, want) in cases {
            let mut s = ok_spec();
            mutate(&mut s);
            let e = s.validate(&l).unwrap_err().to_string();
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
        let mut s = ok_spec();
        s.placement = Placement::Auto;
        s.validate(&l).unwrap();
    }

    #[test]
    fn non_hybrid_machine_has_no_efficiency_cpus() {
        let l = Limits::new(48 * G, 2, 0, 0, 2);
        let mut s = ok_spec();
        s.cpus = CpuRequest {
            kind: Some(CpuKind::Efficiency),
            count: 1,
        };
        assert!(
            s.validate(&l)
                .unwrap_err()
                .to_string()
                .contains("no efficiency CPUs")
        );
    }
}
