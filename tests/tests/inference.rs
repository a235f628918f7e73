//! Inference end to end: the real kilnd serving a repository built by
//! scripts/make-tiny-models.py (plus the demo MiniLM from .dev/models), driven by the
//! unmodified tritonclient over `unix://` (tests/python/kserve_client.py) and by kilnctl:
//! outputs against in-process OpenVINO, every malformed-request class, statistics,
//! repository load/unload, budget refusal and release, NPU fallback, calibration reuse,
//! polling for new versions, batching and a missing runtime.

use kiln_tests::{Kilnd, Start, repo_root, test_config};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const SETUP: &str = "run `scripts/setup.sh test` (creates .venv with openvino and tritonclient, and builds .dev/models/minilm)";

fn venv() -> PathBuf {
    let v = repo_root().join(".venv");
    assert!(
        v.join("bin/python").is_file(),
        "{} is missing: {SETUP}",
        v.join("bin/python").display()
    );
    v
}

fn minilm() -> PathBuf {
    let m = repo_root().join(".dev/models/minilm");
    assert!(
        m.join("1/model.xml").is_file() && m.join("1/tokenizer.json").is_file(),
        "the demo model {} is missing: {SETUP}",
        m.display()
    );
    m
}

/// Tiny models (and optionally a link to MiniLM) in `<dir>/repo`.
fn repository(dir: &Path, with_minilm: bool) -> PathBuf {
    let repo = dir.join("repo");
    let out = Command::new(venv().join("bin/python"))
        .arg(repo_root().join("scripts/make-tiny-models.py"))
        .arg("--out")
        .arg(&repo)
        .output()
        .expect("run make-tiny-models.py");
    assert!(
        out.status.success(),
        "make-tiny-models.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if with_minilm {
        std::os::unix::fs::symlink(minilm(), repo.join("minilm")).unwrap();
    }
    repo
}

const MAX_MESSAGE: u64 = 1 << 20;

/// kilnd on `repo`; `models` adds keys to [models], `openvino` replaces the [openvino]
/// keys (default: the project venv), `extra` adds other tables.
fn start(
    dir: &Path,
    repo: &Path,
    models: &str,
    openvino: Option<&str>,
    extra: &str,
    args: &[&str],
) -> Kilnd {
    let conf = dir.join("kiln.toml");
    let ov = match openvino {
        Some(o) => o.to_string(),
        None => format!("python_prefixes = [\"{}\"]", venv().display()),
    };
    let body = format!(
        "[daemon]\nsocket_group = \"\"\nmax_message_bytes = {MAX_MESSAGE}\n[models]\nrepository = \"{}\"\n{models}\n[openvino]\n{ov}\n{extra}",
        repo.display(),
    );
    std::fs::write(&conf, test_config(dir, &body)).unwrap();
    Kilnd::start(Start {
        config: Some(conf),
        state_dir: Some(dir.join("state")),
        socket: Some(dir.join("kiln.sock")),
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

fn ok_json(k: &Kilnd, args: &[&str]) -> Value {
    let out = k.kilnctl(args);
    assert!(
        out.status.success(),
        "kilnctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        k.stderr()
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kilnctl {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Whether every CPU runs bf16 natively (AVX512-BF16 or AMX), as the HAL reads it.
fn cpu_runs_bf16() -> bool {
    let out = Command::new(kiln_tests::bin("kilnd"))
        .args(["probe", "--json"])
        .output()
        .expect("run kilnd probe");
    assert!(out.status.success(), "kilnd probe failed");
    let inv: Value = serde_json::from_slice(&out.stdout).expect("probe JSON");
    inv["cpus"].as_array().unwrap().iter().all(|c| {
        c["isa"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "avx512_bf16" || f == "amx_bf16")
    })
}

fn model<'a>(list: &'a Value, name: &str, version: u64) -> &'a Value {
    list["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name && m["version"] == version)
        .unwrap_or_else(|| panic!("{name} v{version} not listed: {list:#}"))
}

#[test]
fn tritonclient_gets_correct_outputs_metadata_statistics_and_repository_control() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), true);
    // The same weights, asking for bf16.
    let bf16 = repo.join("static_matmul_bf16/1");
    std::fs::create_dir_all(&bf16).unwrap();
    for f in ["model.xml", "model.bin"] {
        std::fs::copy(repo.join("static_matmul/1").join(f), bf16.join(f)).unwrap();
    }
    std::fs::write(
        repo.join("static_matmul_bf16/kiln-model.toml"),
        "[model]\nprecision = \"bf16\"\n",
    )
    .unwrap();
    let k = start(t.path(), &repo, "", None, "", &[]);

    // Precision in effect: f32 for every model that sets none, whatever the CPU; the demo
    // MiniLM says `auto` and reports what the CPU plugin picked.
    let list = ok_json(&k, &["models", "list", "--json"]);
    let loaded: Vec<&Value> = list["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["state"] == "READY")
        .collect();
    let bf16_cpu = cpu_runs_bf16();
    let mut precisions = Vec::new();
    for m in &loaded {
        let (name, p) = (
            m["name"].as_str().unwrap(),
            m["precision"].as_str().unwrap(),
        );
        match name {
            "minilm" => assert!(["f32", "bf16", "f16"].contains(&p), "{m}"),
            "static_matmul_bf16" if bf16_cpu => assert_eq!(p, "bf16", "{m}"),
            "static_matmul_bf16" => {}
            _ => assert_eq!(p, "f32", "a model without a precision setting: {m}"),
        }
        precisions.push(format!("{name}={p}"));
    }
    assert!(loaded.len() >= 6, "{list:#}");
    let mut script = Command::new(venv().join("bin/python"));
    script
        .arg(repo_root().join("tests/python/kserve_client.py"))
        .arg("--socket")
        .arg(&k.socket)
        .arg("--repo")
        .arg(&repo)
        .arg("--max-message-bytes")
        .arg(MAX_MESSAGE.to_string())
        .arg("--minilm");
    for p in &precisions {
        script.arg("--precision").arg(p);
    }
    if bf16_cpu {
        script.arg("--bf16-cpu");
    }
    let out = script.output().expect("run the tritonclient script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "tritonclient checks failed ({}):\n{stdout}\n{}\nkilnd:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        k.stderr()
    );
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 20,
        "{stdout}"
    );
    let forced = if bf16_cpu {
        "ok precision = bf16 is served in bf16 and reported so"
    } else {
        "skip: precision = bf16 check (this CPU has neither AVX512-BF16 nor AMX)"
    };
    assert!(stdout.contains(forced), "{stdout}");
    eprintln!("{forced}");

    // kilnctl embed: tokenised with tokenizer.json here, served by kilnd.
    let e = ok_json(
        &k,
        &[
            "embed",
            "--json",
            "I play the guitar",
            "Guitars are fun to play",
            "Interest rates rose again",
        ],
    );
    let v: Vec<Vec<f64>> = serde_json::from_value(e["embeddings"].clone()).unwrap();
    assert_eq!((v.len(), v[0].len()), (3, 384));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for x in &v {
        assert!((dot(x, x) - 1.0).abs() < 1e-3, "embeddings are unit length");
    }
    assert!(
        dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.2,
        "guitar sentences must be closer than guitar vs rates: {} vs {}",
        dot(&v[0], &v[1]),
        dot(&v[0], &v[2])
    );
    let status = k.status_json();
    let inference = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inference")
        .expect("component inference");
    assert_eq!(inference["state"], "ok", "{inference}");
}

#[test]
fn a_load_beyond_the_budget_is_refused_with_numbers_and_unload_frees() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), true);
    // 64 MiB: the tiny model fits, MiniLM (90 MB of weights) does not.
    let k = start(
        t.path(),
        &repo,
        "load_at_start = false",
        None,
        "[budget]\nconservative_bytes = 67108864\ngranularity_bytes = 1048576\n",
        &[],
    );
    let list = ok_json(&k, &["models", "list", "--json"]);
    assert_eq!(list["budget"]["budget_bytes"], 64 << 20);
    assert_eq!(list["budget"]["reserved_bytes"], 0);
    assert_eq!(model(&list, "add_sub", 2)["state"], "UNAVAILABLE");

    ok_json(&k, &["models", "load", "add_sub", "--json"]);
    let list = ok_json(&k, &["models", "list", "--json"]);
    let reserved = list["budget"]["reserved_bytes"].as_u64().unwrap();
    assert!(reserved > 0, "{list:#}");
    assert_eq!(model(&list, "add_sub", 2)["reservation_bytes"], reserved);
    assert_eq!(
        list["budget"]["reservations"][0]["owner"],
        "model add_sub v2"
    );

    let out = k.kilnctl(&["models", "load", "minilm"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("resource exhausted") && err.contains("minilm") && err.contains("0.06 GiB"),
        "refusal must name the model and the budget: {err}"
    );
    let list = ok_json(&k, &["models", "list", "--json"]);
    assert_eq!(
        list["budget"]["reserved_bytes"], reserved,
        "a refused load holds nothing"
    );
    assert_eq!(model(&list, "minilm", 1)["state"], "UNAVAILABLE");
    assert!(
        model(&list, "minilm", 1)["reason"]
            .as_str()
            .unwrap()
            .contains("not loaded")
    );

    ok_json(&k, &["models", "unload", "add_sub", "--json"]);
    let list = ok_json(&k, &["models", "list", "--json"]);
    assert_eq!(
        list["budget"]["reserved_bytes"], 0,
        "unload returns the reservation"
    );
    assert_eq!(list["budget"]["reservations"].as_array().unwrap().len(), 0);
    assert_eq!(model(&list, "add_sub", 2)["state"], "UNAVAILABLE");
    let out = k.kilnctl(&["infer", "add_sub", "--input", "INPUT0=[[1]]"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unavailable"));
}

#[test]
fn npu_preference_falls_back_to_cpu_with_the_reason_and_calibration_is_reused() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), false);
    let npu = repo.join("npu_add/1");
    std::fs::create_dir_all(&npu).unwrap();
    for f in ["model.xml", "model.bin"] {
        std::fs::copy(repo.join("add_sub/2").join(f), npu.join(f)).unwrap();
    }
    std::fs::write(
        repo.join("npu_add/kiln-model.toml"),
        "[model]\ndevice = \"NPU\"\nstatic_shape = { INPUT0 = [1, 16], INPUT1 = [1, 16] }\n",
    )
    .unwrap();
    let fixture = repo_root().join("tests/fixtures/latitude-5450");
    let hal = fixture.display().to_string();
    let k = start(t.path(), &repo, "", None, "", &["--hal-root", &hal]);
    let list = ok_json(&k, &["models", "list", "--json"]);
    let m = model(&list, "npu_add", 1);
    assert_eq!(m["state"], "READY", "{m:#}");
    assert_eq!(m["device"], "CPU");
    let why = m["fallback_reason"].as_str().unwrap();
    assert!(
        why.contains("instead of NPU")
            && why.contains("OpenVINO does not report")
            && why.contains("HAL sees NPU"),
        "{why}"
    );
    let human = String::from_utf8_lossy(&k.kilnctl(&["models", "list"]).stdout).to_string();
    assert!(human.contains("instead of NPU"), "{human}");
    let out = ok_json(
        &k,
        &[
            "infer",
            "npu_add",
            "--json",
            "--input",
            &format!("INPUT0=[{}]", vec!["2"; 16].join(",")),
            "--input",
            &format!("INPUT1=[{}]", vec!["1"; 16].join(",")),
            "--shape",
            "INPUT0=1,16",
            "--shape",
            "INPUT1=1,16",
        ],
    );
    assert_eq!(out["outputs"][0]["data"][0], 3.0);
    assert_eq!(out["outputs"][1]["data"][15], 1.0);
    let measured = m["calibrated_per_s"].as_f64().unwrap();
    assert!(measured > 0.0, "{m:#}");
    drop(k);

    // Same state dir: the stored figure is reused, not measured again.
    let k = start(t.path(), &repo, "", None, "", &["--hal-root", &hal]);
    let list = ok_json(&k, &["models", "list", "--json"]);
    assert_eq!(
        model(&list, "npu_add", 1)["calibrated_per_s"]
            .as_f64()
            .unwrap(),
        measured
    );
    assert_eq!(
        model(&list, "static_matmul", 1)["device"],
        "CPU",
        "automatic placement on this machine's only OpenVINO device"
    );
}

#[test]
fn poll_control_serves_new_versions_and_batching_merges_requests() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), false);
    std::fs::write(
        repo.join("add_sub/kiln-model.toml"),
        "[batching]\nmax_batch = 8\nmax_queue_delay_us = 100000\n",
    )
    .unwrap();
    let k = start(
        t.path(),
        &repo,
        "control = \"poll\"\npoll_interval_ms = 200",
        None,
        "",
        &[],
    );
    let list = ok_json(&k, &["models", "list", "--json"]);
    assert_eq!(model(&list, "add_sub", 2)["max_batch"], 8);

    // Eight concurrent clients within the 100 ms queue delay end up in fewer executions.
    let row = format!("[{}]", vec!["1"; 16].join(","));
    let input0 = format!("INPUT0=[{row}]");
    let input1 = format!("INPUT1=[{row}]");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (sock, a, b) = (k.socket.clone(), input0.clone(), input1.clone());
            std::thread::spawn(move || {
                Command::new(kiln_tests::bin("kilnctl"))
                    .arg("--socket")
                    .arg(sock)
                    .args(["infer", "add_sub", "--json", "--input", &a, "--input", &b])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["outputs"][0]["data"][0], 2.0);
    }
    let stats = ok_json(&k, &["models", "stats", "add_sub", "--json"]);
    let s = &stats[0];
    assert_eq!(s["success_count"], 8);
    assert!(
        s["execution_count"].as_u64().unwrap() < 8,
        "concurrent requests must share executions: {s}"
    );
    assert!(s["p99_us"].as_u64().unwrap() >= s["p50_us"].as_u64().unwrap());

    // A new version folder is picked up; latest:1 retires version 2.
    let v3 = repo.join("add_sub/3");
    std::fs::create_dir_all(&v3).unwrap();
    for f in ["model.xml", "model.bin"] {
        std::fs::copy(repo.join("add_sub/2").join(f), v3.join(f)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = ok_json(&k, &["models", "list", "--json"]);
        if model(&list, "add_sub", 3)["state"] == "READY"
            && model(&list, "add_sub", 2)["state"] != "READY"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "version 3 not served within 10 s: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn without_openvino_kilnd_runs_and_model_calls_say_what_is_missing() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), false);
    let k = start(
        t.path(),
        &repo,
        "",
        Some("library = \"/nonexistent/openvino\""),
        "",
        &[],
    );
    let status = k.status_json();
    let c = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "inference")
        .expect("component inference")
        .clone();
    assert_eq!(c["state"], "disabled");
    let detail = c["detail"].as_str().unwrap();
    assert!(
        detail.contains("/nonexistent/openvino") && detail.contains("pip install"),
        "{detail}"
    );
    let out = k.kilnctl(&["infer", "add_sub", "--input", "INPUT0=[[1]]"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("unavailable") && err.contains("/nonexistent/openvino"),
        "{err}"
    );
    let out = k.kilnctl(&["models", "load", "add_sub"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("pip install"));
    assert_eq!(k.status_json()["state"], "running");
}

/// Thread name → `Cpus_allowed_list` for every thread of `pid`.
fn thread_affinities(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = e.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        out.push((comm.trim().to_string(), allowed));
    }
    out
}

#[test]
fn daemon_threads_on_efficiency_cpus_inference_and_search_on_performance_cpus() {
    // The 5450's topology with CPU 1 moved to the E-core list, so that the two CPUs every
    // test machine has are one performance and one efficiency CPU.
    let t = tempfile::tempdir().unwrap();
    let hal = kiln_tests::copy_fixture("latitude-5450", &t.path().join("hal"));
    std::fs::write(hal.join("sys/devices/cpu_core/cpus"), "0,2-11\n").unwrap();
    std::fs::write(hal.join("sys/devices/cpu_atom/cpus"), "1,12-21\n").unwrap();
    let repo = repository(t.path(), false);
    let hal_arg = hal.display().to_string();
    let k = start(t.path(), &repo, "", None, "", &["--hal-root", &hal_arg]);

    let status = k.status_json();
    let threads = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "threads")
        .unwrap_or_else(|| panic!("no threads component: {status:#}"));
    assert_eq!(threads["state"], "ok", "{threads:#}");
    let detail = threads["detail"].as_str().unwrap();
    assert!(
        detail.contains("background on CPUs 1 (efficiency CPUs)")
            && detail.contains("vector search on CPUs 0 (performance CPUs)"),
        "{detail}"
    );

    // An inference runs on a worker; compilation has already run on a compute thread.
    let row = format!("[[{}]]", vec!["1"; 16].join(","));
    let (a, b) = (format!("INPUT0={row}"), format!("INPUT1={row}"));
    let out = ok_json(
        &k,
        &["infer", "add_sub", "--json", "--input", &a, "--input", &b],
    );
    assert_eq!(out["outputs"][0]["data"][0], 2.0, "{out:#}");

    let threads = thread_affinities(k.child.id());
    let on = |prefix: &str| -> Vec<&String> {
        threads
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, a)| a)
            .collect()
    };
    // The async runtime is "kilnd"; OpenVINO's pools are started by compiling threads, so
    // they are named "kiln-compute".
    let (runtime, infer, search, compute) = (
        on("kilnd"),
        on("infer-"),
        on("kiln-vec-"),
        on("kiln-compute"),
    );
    assert!(
        !runtime.is_empty() && !infer.is_empty() && !search.is_empty(),
        "{threads:?}"
    );
    assert!(runtime.iter().all(|a| *a == "1"), "background: {threads:?}");
    assert!(infer.iter().all(|a| *a == "0"), "inference: {threads:?}");
    assert!(
        search.iter().all(|a| *a == "0"),
        "vector search: {threads:?}"
    );
    assert!(compute.iter().all(|a| *a == "0"), "OpenVINO: {threads:?}");
    // Nothing the daemon runs may sit on a CPU outside both sets.
    assert!(
        threads.iter().all(|(_, a)| a == "0" || a == "1"),
        "{threads:?}"
    );

    // Jobs get what they ask for, not the supervisor's background CPUs.
    for (cpus, want) in [("any", "0-1"), ("e:1", "1"), ("p:1", "0")] {
        let out = k.kilnctl(&[
            "jobs",
            "submit",
            "--json",
            "--memory",
            "64M",
            "--cpus",
            cpus,
            "--",
            "/bin/sh",
            "-c",
            "grep Cpus_allowed_list /proc/self/status",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let job: Value = serde_json::from_slice(&out.stdout).unwrap();
        let id = job["id"].as_u64().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        let shown = loop {
            let j = ok_json(&k, &["jobs", "show", &id, "--json"]);
            if j["state"] == "succeeded" || j["state"] == "failed" {
                break j;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {j:#}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(shown["state"], "succeeded", "{shown:#}");
        let log = String::from_utf8_lossy(&k.kilnctl(&["jobs", "logs", &id]).stdout).to_string();
        assert!(
            log.contains(&format!("Cpus_allowed_list:\t{want}\n")),
            "--cpus {cpus}: {log}"
        );
    }
}

#[test]
fn per_model_figures_are_in_the_prometheus_metrics() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), false);
    let msock = t.path().join("metrics.sock");
    let extra = format!("[metrics]\nlisten = \"unix:{}\"\n", msock.display());
    let k = start(t.path(), &repo, "", None, &extra, &[]);
    let row = format!("[[{}]]", vec!["2"; 16].join(","));
    let (a, b) = (format!("INPUT0={row}"), format!("INPUT1={row}"));
    for _ in 0..3 {
        ok_json(
            &k,
            &["infer", "add_sub", "--json", "--input", &a, "--input", &b],
        );
    }
    let bad = k.kilnctl(&["infer", "add_sub", "--input", "INPUT0=[[1]]"]);
    assert!(!bad.status.success());

    let body = kiln_tests::scrape(&msock);
    let l = r#"{model="add_sub",version="2",device="CPU",precision="f32"}"#;
    for want in [
        format!("kiln_model_inferences_total{l} 3\n"),
        format!("kiln_model_requests_ok_total{l} 3\n"),
        format!("kiln_model_compute_infer_seconds_total{l} "),
        r#"kiln_model_request_latency_seconds{model="add_sub",version="2",device="CPU",precision="f32",quantile="0.99"}"#.to_string(),
    ] {
        assert!(body.contains(&want), "missing {want:?} in:\n{body}");
    }
    // Other loaded models are listed too, with nothing counted yet.
    assert!(
        body.contains(r#"kiln_model_inferences_total{model="dtypes",version="1",device="CPU",precision="f32"} 0"#),
        "{body}"
    );
}

#[test]
fn the_bus_offers_models_with_the_same_fields_as_grpc() {
    let t = tempfile::tempdir().unwrap();
    let repo = repository(t.path(), false);
    let bus = kiln_tests::PrivateBus::start();
    let conf = t.path().join("kiln.toml");
    let msock = t.path().join("metrics.sock");
    let body = format!(
        "[daemon]\nsocket_group = \"\"\n[models]\nrepository = \"{}\"\n[openvino]\npython_prefixes = [\"{}\"]\n[metrics]\nlisten = \"unix:{}\"\n",
        repo.display(),
        venv().display(),
        msock.display()
    );
    std::fs::write(&conf, test_config(t.path(), &body)).unwrap();
    let k = Kilnd::start(Start::in_dir(t.path(), conf, Some(&bus)));
    let grpc = ok_json(&k, &["models", "list", "--json"]);
    let rt = kiln_tests::runtime();
    rt.block_on(async {
        let p = bus
            .kiln_proxy("/org/kiln/Kiln1/models", "org.kiln.Kiln1.Models")
            .await;
        let list = |p: zbus::Proxy<'static>| async move {
            let s: String = p.call("ListModels", &()).await.expect("ListModels");
            serde_json::from_str::<Value>(&s).unwrap()
        };
        let over_bus = list(p.clone()).await;
        let over_bus = over_bus.as_array().unwrap();
        let over_grpc = grpc["models"].as_array().unwrap();
        assert_eq!(over_bus.len(), over_grpc.len(), "{over_bus:#?}");
        for g in over_grpc {
            let b = over_bus
                .iter()
                .find(|b| b["name"] == g["name"] && b["version"] == g["version"])
                .unwrap_or_else(|| panic!("{g} not on the bus"));
            for (key, value) in g.as_object().unwrap() {
                assert_eq!(
                    &b[key], value,
                    "field {key} of {} v{}",
                    g["name"], g["version"]
                );
            }
        }
        // Unload and load through the bus; the gRPC view follows.
        let () = p
            .call("UnloadModel", &("add_sub",))
            .await
            .expect("UnloadModel");
        assert_eq!(
            model(&ok_json(&k, &["models", "list", "--json"]), "add_sub", 2)["state"],
            "UNAVAILABLE"
        );
        let loaded: String = p
            .call("LoadModel", &("add_sub", ""))
            .await
            .expect("LoadModel");
        let loaded: Value = serde_json::from_str(&loaded).unwrap();
        assert_eq!(loaded[0]["version"], 2, "{loaded}");
        assert_eq!(loaded[0]["precision"], "f32", "{loaded}");
        assert_eq!(
            model(&ok_json(&k, &["models", "list", "--json"]), "add_sub", 2)["state"],
            "READY"
        );
        let stats: String = p.call("Stats", &("add_sub", "")).await.expect("Stats");
        assert!(stats.contains("\"precision\":\"f32\""), "{stats}");
        // Errors carry the engine's kind and message.
        let e = p
            .call::<_, _, String>("LoadModel", &("nosuch", ""))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("NotFound") && e.contains("nosuch"), "{e}");
    });
    // Every bus call is counted like a gRPC call: the canonical status number as `code`.
    let body = kiln_tests::scrape(&msock);
    for want in [
        r#"kiln_rpc_calls_total{transport="dbus",method="Models.ListModels",code="0"} 1"#,
        r#"kiln_rpc_calls_total{transport="dbus",method="Models.LoadModel",code="0"} 1"#,
        r#"kiln_rpc_calls_total{transport="dbus",method="Models.LoadModel",code="5"} 1"#,
        r#"kiln_rpc_calls_total{transport="grpc",method="/kiln.v1.Models/List",code="0"} 3"#,
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
}
