//! The model repository on disk: `<repo>/<name>/<version>/` with positive integer versions,
//! `model.xml`+`model.bin` or `model.onnx`, and optional `kiln-model.toml` files (model level
//! in `<name>/`, overridden key by key in `<name>/<version>/`). Also the version policy.
//! Reads the repository directory only.

use kiln_hal::ports::InferenceBackend;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of a model's settings.
pub const MODEL_TOML: &str = "kiln-model.toml";

/// Which versions of a model are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The N highest versions.
    Latest(usize),
    /// Every version.
    All,
    /// Exactly these versions (those that exist).
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// Parse `latest`, `latest:N`, `all` or `specific:1,3`.
    pub fn parse(s: &str) -> Result<VersionPolicy, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "bad version policy {s:?}; expected \"latest\", \"latest:N\" (N >= 1), \"all\" or \"specific:1,3\""
            )
        };
        if s == "all" {
            return Ok(VersionPolicy::All);
        }
        if s == "latest" {
            return Ok(VersionPolicy::Latest(1));
        }
        if let Some(n) = s.strip_prefix("latest:") {
            let n: usize = n.trim().parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            return Ok(VersionPolicy::Latest(n));
        }
        if let Some(list) = s.strip_prefix("specific:") {
            let v: Result<Vec<u64>, _> = list
                .split(',')
                .map(|p| p.trim().parse::<u64>().ok().filter(|v| *v > 0).ok_or(()))
                .collect();
            let v = v.map_err(|_| bad())?;
            if v.is_empty() {
                return Err(bad());
            }
            return Ok(VersionPolicy::Specific(v));
        }
        Err(bad())
    }

    /// The versions to serve out of `available` (ascending).
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        let mut v: Vec<u64> = match self {
            VersionPolicy::All => available.to_vec(),
            VersionPolicy::Latest(n) => available.iter().rev().take(*n).copied().collect(),
            VersionPolicy::Specific(want) => available
                .iter()
                .filter(|v| want.contains(v))
                .copied()
                .collect(),
        };
        v.sort_unstable();
        v
    }
}

/// `[batching]` of kiln-model.toml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingToml {
    pub max_batch: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
    /// Requests that may wait for this model at once; more are refused.
    pub max_queue: Option<usize>,
}

/// The most elements a `static_shape` may give one tensor (2^28: 1 GiB of f32). Calibration
/// and NPU reshapes allocate tensors of this shape.
pub const MAX_STATIC_ELEMENTS: i64 = 1 << 28;

/// `[model]` of kiln-model.toml; every key optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelToml {
    /// `generic` (default) or `embedding`.
    pub kind: Option<String>,
    /// Token limit for embedding models (the tokenizer truncates/pads to it).
    pub max_sequence_length: Option<i64>,
    /// Preferred devices in order (`NPU`, `GPU`, `CPU`, `AUTO`), or one name.
    pub device: Option<DeviceList>,
    /// `f32`, `bf16`, `f16` or `auto`; unset: `[models] precision` of kiln.toml.
    pub precision: Option<String>,
    /// `latency` or `throughput` (default throughput: a pool of requests).
    pub performance: Option<String>,
    /// Static input shapes for devices that need them (NPU): `{ input_ids = [1, 128] }`.
    pub static_shape: Option<BTreeMap<String, Vec<i64>>>,
    /// Size of the infer-request pool (concurrent inferences); default: the device's optimum.
    pub instances: Option<usize>,
    /// Version policy for this model (overrides `[models] version_policy`).
    pub version_policy: Option<String>,
    /// Load when kilnd starts (default true).
    pub load_at_start: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DeviceList {
    One(String),
    Many(Vec<String>),
}

impl DeviceList {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            DeviceList::One(s) => vec![s.clone()],
            DeviceList::Many(v) => v.clone(),
        }
    }
}

/// The inference precision a model is served at. Exact f32 unless the model's configuration
/// asks for less: CPUs with AVX512-BF16 or AMX (and GPUs) would otherwise pick a lower one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSetting {
    #[default]
    F32,
    Bf16,
    F16,
    /// Whatever the device prefers; the precision it picked is the one reported.
    Auto,
}

impl PrecisionSetting {
    pub fn parse(s: &str) -> Result<PrecisionSetting, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(PrecisionSetting::F32),
            "bf16" => Ok(PrecisionSetting::Bf16),
            "f16" => Ok(PrecisionSetting::F16),
            "auto" => Ok(PrecisionSetting::Auto),
            _ => Err(format!("bad value {s:?}; expected f32, bf16, f16 or auto")),
        }
    }

    /// The runtime hint: none for `auto` (the device default).
    pub fn hint(self) -> Option<kiln_hal::ports::Precision> {
        match self {
            PrecisionSetting::F32 => Some(kiln_hal::ports::Precision::F32),
            PrecisionSetting::Bf16 => Some(kiln_hal::ports::Precision::Bf16),
            PrecisionSetting::F16 => Some(kiln_hal::ports::Precision::F16),
            PrecisionSetting::Auto => None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    model: ModelToml,
    #[serde(default)]
    batching: BatchingToml,
}

/// Effective settings of one model version (model-level file, then version-level file).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    pub kind: String,
    pub max_sequence_length: Option<i64>,
    pub devices: Vec<String>,
    /// What the model's files ask for; `None`: the `[models] precision` default applies.
    pub precision: Option<PrecisionSetting>,
    pub throughput: bool,
    pub static_shape: BTreeMap<String, Vec<i64>>,
    pub instances: Option<usize>,
    pub version_policy: Option<VersionPolicy>,
    pub load_at_start: bool,
    pub max_batch: usize,
    pub max_queue_delay_us: u64,
    pub max_queue: usize,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            kind: "generic".into(),
            max_sequence_length: None,
            devices: Vec::new(),
            precision: None,
            throughput: true,
            static_shape: BTreeMap::new(),
            instances: None,
            version_policy: None,
            load_at_start: true,
            max_batch: 1,
            max_queue_delay_us: 0,
            max_queue: 1024,
        }
    }
}

fn read_toml(path: &Path) -> Result<Option<FileToml>, String> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    toml::from_str::<FileToml>(&text).map(Some).map_err(|e| {
        let msg = e.message().trim().replace('\n', " ");
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        match line {
            Some(l) => format!(
                "{}: line {l}: {msg}; see docs/inference.md for the kiln-model.toml keys",
                path.display()
            ),
            None => format!("{}: {msg}", path.display()),
        }
    })
}

fn apply(s: &mut ModelSettings, f: FileToml, path: &Path) -> Result<(), String> {
    let err = |key: &str, why: String| format!("{}: key `{key}`: {why}", path.display());
    let m = f.model;
    if let Some(k) = m.kind {
        if !["generic", "embedding"].contains(&k.as_str()) {
            return Err(err(
                "model.kind",
                format!("bad value {k:?}; expected generic or embedding"),
            ));
        }
        s.kind = k;
    }
    if let Some(n) = m.max_sequence_length {
        if !(1..=65536).contains(&n) {
            return Err(err(
                "model.max_sequence_length",
                format!("bad value {n}; expected 1 to 65536"),
            ));
        }
        s.max_sequence_length = Some(n);
    }
    if let Some(d) = m.device {
        let v = d.to_vec();
        if v.is_empty() || v.iter().any(|d| d.trim().is_empty()) {
            return Err(err(
                "model.device",
                "expected a device name (NPU, GPU, CPU, AUTO) or a list of them".into(),
            ));
        }
        s.devices = v.iter().map(|d| d.trim().to_ascii_uppercase()).collect();
    }
    if let Some(p) = m.precision {
        s.precision = Some(PrecisionSetting::parse(&p).map_err(|e| err("model.precision", e))?);
    }
    if let Some(p) = m.performance {
        s.throughput = match p.as_str() {
            "throughput" => true,
            "latency" => false,
            _ => {
                return Err(err(
                    "model.performance",
                    format!("bad value {p:?}; expected latency or throughput"),
                ));
            }
        };
    }
    if let Some(shapes) = m.static_shape {
        for (name, dims) in &shapes {
            let key = format!("model.static_shape.{name}");
            if dims.is_empty() || dims.len() > 8 || dims.iter().any(|d| *d <= 0) {
                return Err(err(
                    &key,
                    format!(
                        "bad value {dims:?}; expected 1 to 8 positive dimensions such as [1, 128]"
                    ),
                ));
            }
            let elements = dims
                .iter()
                .try_fold(1i64, |n, d| n.checked_mul(*d))
                .filter(|n| *n <= MAX_STATIC_ELEMENTS);
            if elements.is_none() {
                return Err(err(
                    &key,
                    format!(
                        "bad value {dims:?}: more than {MAX_STATIC_ELEMENTS} elements in one tensor; \
                         static shapes are for fixed-size device inputs such as [1, 128]"
                    ),
                ));
            }
        }
        s.static_shape = shapes;
    }
    if let Some(n) = m.instances {
        if !(1..=64).contains(&n) {
            return Err(err(
                "model.instances",
                format!("bad value {n}; expected 1 to 64"),
            ));
        }
        s.instances = Some(n);
    }
    if let Some(p) = m.version_policy {
        s.version_policy =
            Some(VersionPolicy::parse(&p).map_err(|e| err("model.version_policy", e))?);
    }
    if let Some(b) = m.load_at_start {
        s.load_at_start = b;
    }
    if let Some(n) = f.batching.max_batch {
        if !(1..=4096).contains(&n) {
            return Err(err(
                "batching.max_batch",
                format!("bad value {n}; expected 1 to 4096"),
            ));
        }
        s.max_batch = n;
    }
    if let Some(d) = f.batching.max_queue_delay_us {
        if d > 10_000_000 {
            return Err(err(
                "batching.max_queue_delay_us",
                format!("bad value {d}; expected at most 10000000 (10 s)"),
            ));
        }
        s.max_queue_delay_us = d;
    }
    if let Some(n) = f.batching.max_queue {
        if !(1..=1_000_000).contains(&n) {
            return Err(err(
                "batching.max_queue",
                format!("bad value {n}; expected 1 to 1000000"),
            ));
        }
        s.max_queue = n;
    }
    Ok(())
}

/// Settings of `<model_dir>` (model level) and `<model_dir>/<version>` (version level).
pub fn settings(model_dir: &Path, version: Option<u64>) -> Result<ModelSettings, String> {
    let mut s = ModelSettings::default();
    let top = model_dir.join(MODEL_TOML);
    if let Some(f) = read_toml(&top)? {
        apply(&mut s, f, &top)?;
    }
    if let Some(v) = version {
        let p = model_dir.join(v.to_string()).join(MODEL_TOML);
        if let Some(f) = read_toml(&p)? {
            apply(&mut s, f, &p)?;
        }
    }
    Ok(s)
}

/// One model version found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundVersion {
    pub version: u64,
    pub dir: PathBuf,
    /// Why it cannot be served (no model files, bad settings); `None` when it looks valid.
    pub problem: Option<String>,
}

/// One model directory.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundModel {
    pub name: String,
    pub dir: PathBuf,
    pub versions: Vec<FoundVersion>,
    /// A model-level problem (bad kiln-model.toml, no versions).
    pub problem: Option<String>,
}

/// A model name is one path component of letters, digits, `_`, `-`, `.` (not starting with `.`).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad model name {name:?}; use letters, digits, '_', '-' and '.' (one directory name of the repository)"
        ))
    }
}

/// Scan one model directory.
pub fn scan_model(repo: &Path, name: &str, backend: &dyn InferenceBackend) -> Option<FoundModel> {
    let dir = repo.join(name);
    if !dir.is_dir() || check_name(name).is_err() {
        return None;
    }
    let mut versions = Vec::new();
    let mut problem = None;
    if let Ok(rd) = std::fs::read_dir(&dir) {
        for e in rd.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            let Some(v) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|v| *v > 0)
            else {
                continue;
            };
            let mut vp = None;
            if let Err(e) = backend.weights_bytes(&p) {
                vp = Some(e.to_string());
            } else if let Err(e) = settings(&dir, Some(v)) {
                vp = Some(e);
            }
            versions.push(FoundVersion {
                version: v,
                dir: p,
                problem: vp,
            });
        }
    }
    versions.sort_by_key(|v| v.version);
    if let Err(e) = settings(&dir, None) {
        problem = Some(e);
    } else if versions.is_empty() {
        problem = Some(format!(
            "no version directories in {}; put the model files into {}/1/",
            dir.display(),
            dir.display()
        ));
    }
    Some(FoundModel {
        name: name.to_string(),
        dir,
        versions,
        problem,
    })
}

/// Scan the whole repository (sorted by name). A missing repository is an error.
pub fn scan(repo: &Path, backend: &dyn InferenceBackend) -> Result<Vec<FoundModel>, String> {
    let rd = std::fs::read_dir(repo).map_err(|e| {
        format!(
            "model repository {}: {e}; create it or point [models] repository / --model-repository at an existing directory",
            repo.display()
        )
    })?;
    let mut names: Vec<String> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| check_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names
        .iter()
        .filter_map(|n| scan_model(repo, n, backend))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn policy_parse_and_select() {
        let v = [1, 2, 5];
        assert_eq!(VersionPolicy::parse("latest").unwrap().select(&v), vec![5]);
        assert_eq!(
            VersionPolicy::parse("latest:2").unwrap().select(&v),
            vec![2, 5]
        );
        assert_eq!(
            VersionPolicy::parse("all").unwrap().select(&v),
            vec![1, 2, 5]
        );
        assert_eq!(
            VersionPolicy::parse("specific:1, 3").unwrap().select(&v),
            vec![1]
        );
        for bad in [
            "latest:0",
            "newest",
            "specific:",
            "specific:a",
            "specific:0",
        ] {
            let e = VersionPolicy::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("expected"), "{e}");
        }
    }

    #[test]
    fn scan_finds_versions_and_reports_problems() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(&r.join("a/1/model.onnx"), "x");
        touch(&r.join("a/2/model.xml"), "x");
        touch(&r.join("a/2/model.bin"), "x");
        touch(&r.join("a/3/readme.txt"), "x");
        std::fs::create_dir_all(r.join("a/0")).unwrap();
        std::fs::create_dir_all(r.join("a/latest")).unwrap();
        touch(&r.join("b/kiln-model.toml"), "[model]\ncolour = 1\n");
        touch(&r.join("b/1/model.onnx"), "x");
        std::fs::create_dir_all(r.join("empty")).unwrap();
        // The OpenVINO backend's file rules (no runtime is loaded to check files).
        let ov = crate::wiring::Ports::from_config(&crate::Config::default()).inference;
        let found = scan(r, &*ov).unwrap();
        let names: Vec<&str> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "empty"]);
        let a = &found[0];
        let vs: Vec<u64> = a.versions.iter().map(|v| v.version).collect();
        assert_eq!(vs, [1, 2, 3]);
        assert!(a.versions[0].problem.is_none() && a.versions[1].problem.is_none());
        assert!(
            a.versions[2]
                .problem
                .as_ref()
                .unwrap()
                .contains("no model.xml")
        );
        let b = found[1].problem.as_ref().unwrap();
        assert!(b.contains("kiln-model.toml") && b.contains("colour"), "{b}");
        assert!(found[2].problem.as_ref().unwrap().contains("no version"));
        let e = scan(&r.join("nope"), &*ov).unwrap_err();
        assert!(e.contains("--model-repository"), "{e}");
    }

    #[test]
    fn settings_merge_version_over_model_and_check_values() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        touch(
            &m.join(MODEL_TOML),
            "[model]\ndevice = [\"npu\", \"CPU\"]\nprecision = \"f32\"\n[batching]\nmax_batch = 8\nmax_queue_delay_us = 200\n",
        );
        touch(
            &m.join("2").join(MODEL_TOML),
            "[model]\nkind = \"embedding\"\nmax_sequence_length = 128\nstatic_shape = { input_ids = [1, 128] }\n",
        );
        let s = settings(&m, Some(2)).unwrap();
        assert_eq!(s.devices, ["NPU", "CPU"]);
        assert_eq!(s.precision, Some(PrecisionSetting::F32));
        assert_eq!((s.max_batch, s.max_queue_delay_us), (8, 200));
        assert_eq!(s.kind, "embedding");
        assert_eq!(s.static_shape["input_ids"], vec![1, 128]);
        touch(&m.join("3").join(MODEL_TOML), "[batching]\nmax_batch = 0\n");
        let e = settings(&m, Some(3)).unwrap_err();
        assert!(
            e.contains("batching.max_batch") && e.contains("3/kiln-model.toml"),
            "{e}"
        );
        touch(
            &m.join("4").join(MODEL_TOML),
            "[model]\nprecision = \"f8\"\n",
        );
        assert!(
            settings(&m, Some(4))
                .unwrap_err()
                .contains("f32, bf16, f16 or auto")
        );
    }

    #[test]
    fn static_shapes_are_capped_before_anything_allocates_them() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        for (i, (shape, ok)) in [
            ("[1, 128]", true),
            ("[1, 4000000000]", false),
            ("[65536, 65536]", false),
            ("[1, 0]", false),
            ("[]", false),
            ("[1, 1, 1, 1, 1, 1, 1, 1, 1]", false),
            ("[9223372036854775807, 9223372036854775807]", false),
        ]
        .into_iter()
        .enumerate()
        {
            let v = i as u64 + 1;
            touch(
                &m.join(v.to_string()).join(MODEL_TOML),
                &format!("[model]\nstatic_shape = {{ x = {shape} }}\n"),
            );
            let r = settings(&m, Some(v));
            assert_eq!(r.is_ok(), ok, "{shape}: {r:?}");
            if let Err(e) = r {
                assert!(e.contains("model.static_shape.x"), "{e}");
            }
        }
    }

    #[test]
    fn names_are_single_safe_components() {
        assert!(check_name("add_sub-1.x").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
