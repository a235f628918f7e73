//! Vector collections through the real kilnd (CPU only), over kilnctl and gRPC:
//! create/add/search/stats/delete, persistence across a restart, every bad input refused
//! with a clear message and the collection unchanged, the collection's UMA reservation and
//! a budget refusal, and the embedding path (Embed, EmbedAndAdd, SearchText) with the demo
//! MiniLM built by `scripts/setup.sh run`.

use kiln_api::kiln::v1::daemon_client::DaemonClient;
use kiln_api::kiln::v1::vectors_client::VectorsClient;
use kiln_api::kiln::v1::{self as pb};
use kiln_tests::{Kilnd, Start, repo_root, test_config};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tonic::Code;

fn start(dir: &Path, extra: &str) -> Kilnd {
    let conf = dir.join("kiln.toml");
    std::fs::write(&conf, test_config(dir, extra)).unwrap();
    Kilnd::start(Start {
        config: Some(conf),
        state_dir: Some(dir.join("state")),
        socket: Some(dir.join("kiln.sock")),
        ..Default::default()
    })
}

fn ok_json(k: &Kilnd, args: &[&str]) -> Value {
    let out = k.kilnctl(args);
    assert!(
        out.status.success(),
        "kilnctl {args:?} failed: {}\nkilnd:\n{}",
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

/// kilnctl must fail with exit 1 and a message containing every `needles` (lowercase).
fn refused(k: &Kilnd, args: &[&str], needles: &[&str]) {
    let out = k.kilnctl(args);
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert_eq!(out.status.code(), Some(1), "kilnctl {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "kilnctl {args:?}: expected {n:?} in {err}");
    }
}

fn rt() -> tokio::runtime::Runtime {
    kiln_tests::runtime()
}

async fn client(k: &Kilnd) -> VectorsClient<tonic::transport::Channel> {
    VectorsClient::new(
        kilnctl::client::connect(&k.socket)
            .await
            .unwrap_or_else(|f| panic!("{}", f.message)),
    )
}

fn ids_of(v: &Value) -> Vec<u64> {
    v["results"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_u64().unwrap())
        .collect()
}

const ROWS: &str = "[[1,0,0],[0.9,0.1,0],[0,1,0],[0,0,1]]";

#[test]
fn lifecycle_bad_input_budget_and_restart() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    let mut k = start(dir, "");
    let c = ok_json(&k, &["vectors", "create", "docs", "--dim", "3", "--json"]);
    assert_eq!((c["dim"].as_u64(), c["count"].as_u64()), (Some(3), Some(0)));
    assert_eq!(c["metric"], "inner_product");
    let a = ok_json(
        &k,
        &[
            "vectors",
            "add",
            "docs",
            "--ids",
            "1,2,3,4",
            "--vectors",
            ROWS,
            "--metadata",
            "a",
            "--metadata",
            "b",
            "--metadata",
            "c",
            "--metadata",
            "d",
            "--json",
        ],
    );
    assert_eq!(a["count"], 4);
    let s = ok_json(
        &k,
        &[
            "vectors",
            "search",
            "docs",
            "--vector",
            "[1,0.05,0]",
            "-k",
            "2",
            "--json",
        ],
    );
    assert_eq!(ids_of(&s), vec![1, 2]);
    assert_eq!(s["results"][0][0]["metadata"], "a");
    // k larger than the collection returns all of it.
    let all = ok_json(
        &k,
        &[
            "vectors", "search", "docs", "--vector", "[0,0,1]", "-k", "50", "--json",
        ],
    );
    assert_eq!(ids_of(&all).len(), 4);
    assert_eq!(ids_of(&all)[0], 4);

    // Every bad input: refused with the problem named, collection unchanged.
    let before = ok_json(&k, &["vectors", "stats", "docs", "--json"]);
    refused(
        &k,
        &[
            "vectors",
            "add",
            "docs",
            "--ids",
            "9",
            "--vectors",
            "[[1,2]]",
        ],
        &["invalid argument", "dimension 3"],
    );
    refused(
        &k,
        &[
            "vectors",
            "add",
            "docs",
            "--ids",
            "1",
            "--vectors",
            "[[1,2,3]]",
        ],
        &["invalid argument", "id 1 already exists"],
    );
    refused(
        &k,
        &[
            "vectors",
            "add",
            "docs",
            "--ids",
            "7,7",
            "--vectors",
            "[[1,2,3],[1,2,3]]",
        ],
        &["invalid argument", "duplicate id 7"],
    );
    refused(
        &k,
        &["vectors", "delete", "docs", "--ids", "1,99"],
        &["not found", "unknown id 99"],
    );
    refused(
        &k,
        &[
            "vectors", "search", "docs", "--vector", "[1,0,0]", "-k", "0",
        ],
        &["invalid argument", "k must be at least 1"],
    );
    refused(
        &k,
        &[
            "vectors", "search", "docs", "--vector", "[1,0,0]", "-k", "-3",
        ],
        &["invalid argument", "got -3"],
    );
    refused(
        &k,
        &["vectors", "stats", "nope"],
        &["not found", "unknown collection `nope`"],
    );
    refused(
        &k,
        &[
            "vectors",
            "add",
            "nope",
            "--ids",
            "1",
            "--vectors",
            "[[1,2,3]]",
        ],
        &["not found", "unknown collection"],
    );
    refused(
        &k,
        &["vectors", "create", "docs", "--dim", "3"],
        &["already exists"],
    );
    refused(
        &k,
        &[
            "vectors", "create", "x", "--dim", "3", "--metric", "hamming",
        ],
        &["invalid argument", "metric"],
    );
    rt().block_on(async {
        let mut v = client(&k).await;
        let e = v
            .add(pb::AddVectorsRequest {
                name: "docs".into(),
                ids: vec![10, 11],
                vectors: vec![1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0],
                metadata: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("vector 1") && e.message().contains("NaN"),
            "{}",
            e.message()
        );
        let e = v
            .search(pb::SearchVectorsRequest {
                name: "docs".into(),
                queries: vec![f32::NAN, 0.0, 0.0],
                k: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = v
            .search(pb::SearchVectorsRequest {
                name: "docs".into(),
                queries: vec![1.0, 0.0, 0.0],
                k: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = v
            .delete(pb::DeleteVectorsRequest {
                name: "docs".into(),
                ids: vec![42],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        let e = v
            .search(pb::SearchVectorsRequest {
                name: "ghost".into(),
                queries: vec![1.0, 0.0, 0.0],
                k: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        // gRPC search agrees with kilnctl.
        let r = v
            .search(pb::SearchVectorsRequest {
                name: "docs".into(),
                queries: vec![1.0, 0.05, 0.0],
                k: 2,
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<u64> = r.results[0].hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![1, 2]);
        let l = v
            .list(pb::ListCollectionsRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(l.collections.len(), 1);
        assert!(l.threads >= 1 && !l.cpus.is_empty(), "{l:?}");
    });
    let after = ok_json(&k, &["vectors", "stats", "docs", "--json"]);
    assert_eq!(before, after, "a refused request changed the collection");

    // The collection's memory is reserved in the UMA budget.
    let mem = after["memory_bytes"].as_u64().unwrap();
    assert!(
        mem > 0 && after["reservation_bytes"].as_u64() == Some(mem),
        "{after}"
    );
    let held = budget_reservation(&k, "vectors collection docs");
    assert_eq!(held, Some(mem));

    // Delete, then restart on the same directories: the state survives.
    let d = ok_json(&k, &["vectors", "delete", "docs", "--ids", "2", "--json"]);
    assert_eq!(d["count"], 3);
    let s1 = ok_json(
        &k,
        &[
            "vectors",
            "search",
            "docs",
            "--vector",
            "[1,0.05,0]",
            "-k",
            "3",
            "--json",
        ],
    );
    assert_eq!(ids_of(&s1)[0], 1);
    assert!(!ids_of(&s1).contains(&2));
    k.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        k.wait_exit(std::time::Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    drop(k);
    let k = start(dir, "");
    let st = ok_json(&k, &["vectors", "stats", "docs", "--json"]);
    assert_eq!(st["count"], 3, "{st}");
    let s2 = ok_json(
        &k,
        &[
            "vectors",
            "search",
            "docs",
            "--vector",
            "[1,0.05,0]",
            "-k",
            "3",
            "--json",
        ],
    );
    assert_eq!(s1, s2, "search results differ after a restart");
    assert_eq!(
        budget_reservation(&k, "vectors collection docs"),
        st["memory_bytes"].as_u64()
    );
    // Drop releases the reservation.
    ok_json(&k, &["vectors", "drop", "docs", "--json"]);
    refused(&k, &["vectors", "stats", "docs"], &["not found"]);
    assert_eq!(budget_reservation(&k, "vectors collection docs"), None);
}

/// Bytes held by the reservation named `owner` (gRPC Daemon.Status).
fn budget_reservation(k: &Kilnd, owner: &str) -> Option<u64> {
    rt().block_on(async {
        let ch = kilnctl::client::connect(&k.socket)
            .await
            .unwrap_or_else(|f| panic!("{}", f.message));
        let s = DaemonClient::new(ch)
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        s.budget
            .unwrap()
            .reservations
            .iter()
            .find(|r| r.owner == owner)
            .map(|r| r.bytes)
    })
}

#[test]
fn an_add_beyond_the_budget_is_refused_with_the_numbers() {
    let t = tempfile::tempdir().unwrap();
    // A 2 MiB budget.
    let k = start(
        t.path(),
        "[budget]\nconservative_bytes = 2097152\ngranularity_bytes = 1048576\n",
    );
    ok_json(&k, &["vectors", "create", "big", "--dim", "256", "--json"]);
    rt().block_on(async {
        let mut v = client(&k).await;
        let n = 4000u64;
        let e = v
            .add(pb::AddVectorsRequest {
                name: "big".into(),
                ids: (0..n).collect(),
                vectors: vec![0.5; (n * 256) as usize],
                metadata: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("4000 vectors")
                && e.message().contains("GiB")
                && e.message().contains("unchanged"),
            "{}",
            e.message()
        );
        let s = v
            .stats(pb::CollectionStatsRequest { name: "big".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((s.count, s.reservation_bytes), (0, s.memory_bytes));
        // A small add fits.
        let r = v
            .add(pb::AddVectorsRequest {
                name: "big".into(),
                ids: (0..100).collect(),
                vectors: vec![0.5; 100 * 256],
                metadata: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.count, 100);
    });
}

const SETUP: &str = "run `scripts/setup.sh run` (it builds the demo model .dev/models/minilm and the .venv with OpenVINO)";

fn minilm() -> PathBuf {
    let m = repo_root().join(".dev/models/minilm");
    assert!(
        m.join("1/model.xml").is_file() && m.join("1/tokenizer.json").is_file(),
        "the demo model {} is missing: {SETUP}",
        m.display()
    );
    m
}

#[test]
fn embed_and_search_text_with_minilm() {
    let t = tempfile::tempdir().unwrap();
    let venv = repo_root().join(".venv");
    assert!(
        venv.join("bin/python").is_file(),
        "{} is missing: {SETUP}",
        venv.display()
    );
    let repo = t.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::os::unix::fs::symlink(minilm(), repo.join("minilm")).unwrap();
    let k = start(
        t.path(),
        &format!(
            "[daemon]\nsocket_group = \"\"\n[models]\nrepository = \"{}\"\n[openvino]\npython_prefixes = [\"{}\"]\n",
            repo.display(),
            venv.display()
        ),
    );
    ok_json(
        &k,
        &[
            "vectors", "create", "notes", "--dim", "384", "--metric", "cosine", "--json",
        ],
    );
    let docs = [
        (1, "The cat is sleeping on the warm mat."),
        (
            2,
            "Stock markets fell sharply after the interest rate decision.",
        ),
        (3, "The recipe needs two cups of flour and an egg."),
    ];
    for (id, text) in docs {
        let r = ok_json(
            &k,
            &[
                "vectors",
                "add",
                "notes",
                "--text",
                text,
                "--id",
                &id.to_string(),
                "--json",
            ],
        );
        assert_eq!(r["added"], 1);
    }
    let s = ok_json(
        &k,
        &[
            "vectors",
            "search",
            "notes",
            "--text",
            "A kitten naps on a rug.",
            "-k",
            "3",
            "--json",
        ],
    );
    assert_eq!(ids_of(&s)[0], 1, "{s:#}");
    assert_eq!(s["results"][0][0]["metadata"], docs[0].1);
    let s = ok_json(
        &k,
        &[
            "vectors",
            "search",
            "notes",
            "--text",
            "Shares dropped on Wall Street.",
            "-k",
            "1",
            "--json",
        ],
    );
    assert_eq!(ids_of(&s), vec![2], "{s:#}");
    rt().block_on(async {
        let mut v = client(&k).await;
        let e = v
            .embed(pb::EmbedRequest {
                texts: vec!["hello world".into(), "good morning".into()],
                model: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (e.model.as_str(), e.dim, e.vectors.len()),
            ("minilm", 384, 768)
        );
        let norm: f32 = e.vectors[..384].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-2, "norm {norm}");
        // A related sentence ranks above an unrelated one (SearchText over gRPC).
        let r = v
            .search_text(pb::SearchTextRequest {
                name: "notes".into(),
                texts: vec!["baking bread with flour".into()],
                k: 3,
                model: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.results[0].hits[0].id, 3);
        // Wrong dimension for the model, and an unknown model.
        v.create_collection(pb::CreateCollectionRequest {
            name: "small".into(),
            dim: 8,
            ..Default::default()
        })
        .await
        .unwrap();
        let e = v
            .embed_and_add(pb::EmbedAndAddRequest {
                name: "small".into(),
                ids: vec![1],
                texts: vec!["x".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("384"), "{}", e.message());
        let e = v
            .embed(pb::EmbedRequest {
                texts: vec!["x".into()],
                model: "nosuchmodel".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(
            e.message().contains("kilnctl models load nosuchmodel"),
            "{}",
            e.message()
        );
    });
}

#[test]
fn dbus_vectors_object_creates_adds_searches_and_refuses_bad_input() {
    let bus = kiln_tests::PrivateBus::start();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("kiln.toml");
    std::fs::write(&conf, test_config(dir.path(), "")).unwrap();
    let k = Kilnd::start(Start {
        config: Some(conf),
        state_dir: Some(dir.path().join("state")),
        socket: Some(dir.path().join("kiln.sock")),
        bus: Some(bus.address.clone()),
        ..Default::default()
    });
    rt().block_on(async {
        let p = bus
            .kiln_proxy("/org/kiln/Kiln1/vectors", "org.kiln.Kiln1.Vectors")
            .await;
        let info: String = p
            .call("CreateCollection", &("notes", 4u64, "cosine", ""))
            .await
            .unwrap();
        let info: Value = serde_json::from_str(&info).unwrap();
        assert_eq!(info["name"], "notes", "{info:#}");
        let rows: Vec<f64> = vec![1., 0., 0., 0., 0., 1., 0., 0., 0.7, 0.7, 0., 0.];
        let n: u64 = p
            .call("Add", &("notes", vec![10u64, 20, 30], rows))
            .await
            .unwrap();
        assert_eq!(n, 3);
        let hits: String = p
            .call("Search", &("notes", vec![1.0f64, 0.1, 0., 0.], 2i64))
            .await
            .unwrap();
        let hits: Value = serde_json::from_str(&hits).unwrap();
        let ids: Vec<u64> = hits
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [10, 30], "{hits:#}");
        let list: String = p.call("ListCollections", &()).await.unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        // The bus and gRPC (kilnctl --json) show the same fields, the reservation included.
        let grpc = ok_json(&k, &["vectors", "list", "--json"]);
        let over_grpc = &grpc["collections"][0];
        assert_eq!(over_grpc["name"], "notes", "{grpc:#}");
        for (key, value) in over_grpc.as_object().unwrap() {
            assert_eq!(&list[0][key], value, "field {key}: {list:#} vs {grpc:#}");
        }
        assert!(
            list[0]["reservation_bytes"].as_u64().unwrap() > 0,
            "{list:#}"
        );

        // A row of the wrong length is refused with the reason; nothing changes.
        let e = p
            .call::<_, _, u64>("Add", &("notes", vec![40u64], vec![1.0f64, 2.0]))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("InvalidArgument") && e.contains('4'), "{e}");
        let stats: String = p.call("Stats", &("notes",)).await.unwrap();
        let stats: Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["count"], 3, "{stats:#}");
        let e = p
            .call::<_, _, String>("Stats", &("nope",))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("NotFound"), "{e}");

        let left: u64 = p.call("Delete", &("notes", vec![20u64])).await.unwrap();
        assert_eq!(left, 2);
        let () = p.call("DropCollection", &("notes",)).await.unwrap();
        let list: String = p.call("ListCollections", &()).await.unwrap();
        assert_eq!(list, "[]");
    });
    drop(k);
}
