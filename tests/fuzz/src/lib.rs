//! Fuzz targets: every parser that takes outside bytes, each a function of one byte slice
//! that must never panic, hang or grow without bound, whatever it is given. `main.rs` drives
//! them on stable Rust by mutating the seed corpora in `tests/fuzz/corpus/<target>/`.
//! Touches a temporary directory (the file-based parsers) and nothing else.

use std::io::Write;
use std::path::Path;

use kiln_engine::models::validate;
use kiln_hal::ports::{Dtype, PortInfo};
use prost::Message;

/// A target: name, and what it does with one input.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8], &Scratch),
}

/// Where file-based targets write their input.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    /// A copy of the recorded Latitude 5450 tree, and its files (for `sysfs`).
    tree: std::sync::OnceLock<(std::path::PathBuf, Vec<std::path::PathBuf>)>,
    /// A vector store with one collection of dimension 4 (for `vectors`).
    store: std::sync::OnceLock<kiln_vectors::VectorStore>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("a temporary directory"),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
            tree: std::sync::OnceLock::new(),
            store: std::sync::OnceLock::new(),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "h2",
        run: h2_rewriter,
    },
    Target {
        name: "kserve",
        run: kserve_infer,
    },
    Target {
        name: "model_toml",
        run: model_toml,
    },
    Target {
        name: "kiln_toml",
        run: kiln_toml,
    },
    Target {
        name: "job_json",
        run: job_json,
    },
    Target {
        name: "cpu_list",
        run: cpu_list,
    },
    Target {
        name: "sysfs",
        run: sysfs,
    },
    Target {
        name: "vectors",
        run: vectors,
    },
];

/// HTTP/2 frame and HPACK bytes through the `:authority` rewriter: whatever arrives, it
/// passes bytes on or ends the connection, and never holds more than its limits.
fn h2_rewriter(data: &[u8], s: &Scratch) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let mut fix = kiln_h2_authority::AuthorityFix::new(server);
        let bound = 2 * (data.len() + 24) + (64 << 10);
        let data = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let _ = client.write_all(&data).await;
            let _ = client.shutdown().await;
            // Keep the peer open until the reader is done.
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        });
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0usize;
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::from_secs(2), fix.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            total += n;
            assert!(
                total <= bound,
                "the rewriter produced {total} bytes from {bound}/2"
            );
        }
        drop(fix);
        let _ = writer.await;
    });
}

/// A protobuf `ModelInferRequest` as kilnd decodes and validates it against a model with a
/// batched FP32 and an INT64 input.
fn kserve_infer(data: &[u8], _: &Scratch) {
    let Ok(r) = kiln_api::inference::ModelInferRequest::decode(data) else {
        return;
    };
    let mut req = kilnd::grpc_inference::infer_request_of(r);
    let port = |name: &str, dtype, shape: &[i64]| PortInfo {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        rank_dynamic: false,
    };
    let inputs = [
        port("x", Dtype::F32, &[-1, 4]),
        port("ids", Dtype::I64, &[-1, -1]),
    ];
    let outputs = [port("y", Dtype::F32, &[-1, 4])];
    let _ = validate::inputs("m", &inputs, &outputs, &mut req, 1 << 20, true);
}

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("scratch file");
    f.write_all(data).expect("scratch write");
    p
}

/// `kiln-model.toml` at the model and at the version level.
fn model_toml(data: &[u8], s: &Scratch) {
    let m = s.dir.path().join("model");
    let v = m.join("1");
    std::fs::create_dir_all(&v).expect("scratch model dir");
    write(&m, "kiln-model.toml", data);
    let _ = kiln_engine::models::repo::settings(&m, None);
    write(&v, "kiln-model.toml", data);
    let _ = kiln_engine::models::repo::settings(&m, Some(1));
}

/// `kiln.toml`, loaded as the daemon loads it (the file, then validation).
fn kiln_toml(data: &[u8], s: &Scratch) {
    let main = write(s.dir.path(), "kiln.toml", data);
    let sources = kiln_engine::ConfigSources::new(Some(main), kiln_engine::Overrides::default());
    let _ = kiln_engine::config::load(&sources);
}

/// A job request as D-Bus hands it over (JSON), with the engine's defaults, validated.
fn job_json(data: &[u8], _: &Scratch) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = kiln_engine::jobs::JobRequest::from_json(text) else {
        return;
    };
    let Ok(mut spec) = req.into_spec(1 << 30) else {
        return;
    };
    let limits = kiln_jobs::Limits::new(48 << 30, 4, 8, 2, 14);
    let _ = spec.validate(&limits);
}

/// Kernel CPU lists (`sys/devices/system/cpu/online` and friends) from recorded trees.
fn cpu_list(data: &[u8], _: &Scratch) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(ids) = kiln_hal::parse_cpu_list(text) {
        let again = kiln_hal::parse_cpu_list(&kiln_hal::format_cpu_list(&ids));
        assert_eq!(
            again.as_ref(),
            Some(&ids),
            "format then parse is the identity"
        );
    }
}

fn copy_tree(from: &Path, to: &Path, files: &mut Vec<std::path::PathBuf>) {
    std::fs::create_dir_all(to).expect("scratch tree");
    for e in std::fs::read_dir(from).expect("fixture tree").flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            copy_tree(&src, &dst, files);
        } else if ft.is_symlink() {
            let _ = std::os::unix::fs::symlink(std::fs::read_link(&src).expect("link"), &dst);
        } else {
            std::fs::copy(&src, &dst).expect("fixture file");
            files.push(dst);
        }
    }
}

/// The HAL's sysfs and procfs parsers on the recorded 5450 tree with one of its files
/// replaced by the input (the first byte picks the file): the probe reports the problem
/// and never panics.
fn sysfs(data: &[u8], s: &Scratch) {
    let (root, files) = s.tree.get_or_init(|| {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/latitude-5450");
        let root = s.dir.path().join("tree");
        let mut files = Vec::new();
        copy_tree(&fixture, &root, &mut files);
        files.sort();
        (root, files)
    });
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let file = &files[pick as usize % files.len()];
    let before = std::fs::read(file).expect("tree file");
    std::fs::write(file, body).expect("tree write");
    if let Ok(hal) = kiln_hal::Hal::new(root.clone(), kiln_hal::BudgetPolicy::default()) {
        let _ = hal.probe();
    }
    std::fs::write(file, before).expect("tree restore");
}

/// Vector add and search payloads (ids, floats, metadata, k) from the input against a
/// collection of dimension 4: refused with a reason or done, never a panic.
fn vectors(data: &[u8], s: &Scratch) {
    use kiln_vectors::{Metric, Quantisation, StoreOptions, VectorStore};
    let store = s.store.get_or_init(|| {
        let st = VectorStore::open_with(s.dir.path().join("collections"), StoreOptions::default())
            .expect("a store");
        st.create("c", 4, Metric::Cosine, Quantisation::Int8)
            .expect("a collection");
        st
    });
    let word = |i: usize| {
        let b = data.get(i * 4..i * 4 + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let n_ids = word(0).unwrap_or(0) as usize % 9;
    let ids: Vec<u64> = (0..n_ids)
        .map(|i| u64::from(word(1 + i).unwrap_or(i as u32)))
        .collect();
    let mut floats: Vec<f32> = (0..data.len() / 4)
        .filter_map(|i| word(i).map(f32::from_bits))
        .take(64)
        .collect();
    if data.first().copied().unwrap_or(0) & 2 == 2 {
        // Half the inputs carry exactly one vector per id, to get past the count checks.
        floats.resize(ids.len() * 4, 0.25);
    }
    let meta = (data.first().copied().unwrap_or(0) & 1 == 1)
        .then(|| ids.iter().map(|i| format!("m{i}")).collect::<Vec<_>>());
    let _ = store.add("c", &ids, &floats, meta);
    let k = i64::from(word(2).unwrap_or(1) as i32);
    let _ = store.search("c", &floats, k);
    let _ = store.delete("c", &ids);
}
