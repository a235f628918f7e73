//! The vectors hub against a fake index: reservations that follow what collections hold,
//! adds refused by the budget or failed by the index with nothing lost, bounded searches
//! and an index that cannot open.

use crate::ErrorKind;
use crate::auth::Caller;
use crate::engine::ComponentState;
use crate::testing::{TestEngine, engine};
use kiln_testkit::fakes::FakeBackend;
use std::sync::atomic::Ordering;

const CONFIG: &str = "[budget]\nconservative_bytes = 1048576\ngranularity_bytes = 4096\n\n[vectors]\nmax_hits = 100\n";

async fn started() -> TestEngine {
    let t = engine(FakeBackend::default(), CONFIG);
    t.engine.start_vectors().await;
    t
}

fn root() -> Caller {
    Caller::internal()
}

#[tokio::test]
async fn a_collection_s_reservation_follows_what_it_holds() {
    let t = started().await;
    let e = &t.engine;
    let c = e.vectors_create(&root(), "docs", 4, "", "").await.unwrap();
    assert_eq!((c.info.dim, c.reservation_bytes), (4, 0));
    assert_eq!(c.info.metric.name(), "inner_product", "the default metric");
    let vectors = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0];
    let n = e
        .vectors_add(&root(), "docs", vec![10, 11, 12], vectors, None)
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(e.vectors_reservation("docs"), 3 * 4 * 4);
    assert_eq!(e.budget().status().reserved_bytes, 48);
    let hits = e
        .vectors_search(&root(), "docs", vec![0.0, 1.0, 0.0, 0.0], 2)
        .await
        .unwrap();
    let ids: Vec<u64> = hits[0].iter().map(|h| h.id).collect();
    assert_eq!(ids, [11, 12]);
    assert_eq!(
        e.vectors_delete(&root(), "docs", vec![10]).await.unwrap(),
        2
    );
    assert_eq!(
        e.vectors_reservation("docs"),
        2 * 4 * 4,
        "shrinks with deletes"
    );
    let listed = e.vectors_list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].reservation_bytes, 32,
        "the list carries reservations"
    );
    e.vectors_drop(&root(), "docs").await.unwrap();
    assert_eq!(
        e.budget().status().reserved_bytes,
        0,
        "dropping returns it all"
    );
    let gone = e.vectors_stats("docs").unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone:?}");
}

#[tokio::test]
async fn an_add_the_budget_cannot_hold_is_refused_and_changes_nothing() {
    let t = started().await;
    let e = &t.engine;
    e.vectors_create(&root(), "big", 1024, "ip", "none")
        .await
        .unwrap();
    // 300 vectors × 1024 × 4 bytes = 1.2 MB > the 1 MiB budget.
    let err = e
        .vectors_add(
            &root(),
            "big",
            (0..300).collect(),
            vec![0.5; 300 * 1024],
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceExhausted, "{err:?}");
    assert!(
        err.message.contains("cannot add 300 vectors") && err.message.contains("unchanged"),
        "{}",
        err.message
    );
    assert_eq!(e.vectors_stats("big").unwrap().info.count, 0);
    assert_eq!(e.vectors_reservation("big"), 0);
    // A smaller add still fits.
    e.vectors_add(&root(), "big", vec![1], vec![0.5; 1024], None)
        .await
        .unwrap();
    assert_eq!(e.vectors_reservation("big"), 4096);
}

#[tokio::test]
async fn an_add_the_index_fails_keeps_the_reservation_at_what_it_holds() {
    let t = started().await;
    let e = &t.engine;
    e.vectors_create(&root(), "c", 2, "", "").await.unwrap();
    e.vectors_add(&root(), "c", vec![1], vec![1.0, 0.0], None)
        .await
        .unwrap();
    *t.index.fail_next_add.lock().unwrap() = Some("disk full writing a segment".into());
    let err = e
        .vectors_add(&root(), "c", vec![2, 3], vec![0.0; 4], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal, "{err:?}");
    assert!(err.message.contains("disk full"), "{}", err.message);
    assert_eq!(
        e.vectors_stats("c").unwrap().info.count,
        1,
        "nothing half-added"
    );
    assert_eq!(
        e.vectors_reservation("c"),
        8,
        "the grown reservation went back"
    );
}

#[tokio::test]
async fn a_search_beyond_max_hits_never_reaches_the_index() {
    let t = started().await;
    let e = &t.engine;
    e.vectors_create(&root(), "c", 1, "", "").await.unwrap();
    e.vectors_add(&root(), "c", (0..200).collect(), vec![1.0; 200], None)
        .await
        .unwrap();
    let before = t.index.searches.load(Ordering::SeqCst);
    // 2 queries × k 60 = 120 hits > max_hits 100.
    let err = e
        .vectors_search(&root(), "c", vec![1.0, 1.0], 60)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err:?}");
    assert!(err.message.contains("max_hits"), "{}", err.message);
    assert_eq!(t.index.searches.load(Ordering::SeqCst), before);
    assert_eq!(
        e.vectors_search(&root(), "c", vec![1.0, 1.0], 50)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_index_that_cannot_open_disables_vectors_with_its_reason() {
    let t = engine(FakeBackend::default(), CONFIG);
    *t.index.open_fails.lock().unwrap() = Some("manifest of `docs` is corrupt".into());
    t.engine.start_vectors().await;
    let c = t
        .engine
        .status()
        .components
        .into_iter()
        .find(|c| c.name == "vectors")
        .unwrap();
    assert_eq!(c.state, ComponentState::Disabled, "{c:?}");
    assert!(c.detail.contains("corrupt"), "{c:?}");
    let err = t.engine.vectors_list().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
    assert!(err.message.contains("corrupt"), "{}", err.message);
    let err = t
        .engine
        .vectors_create(&root(), "x", 2, "", "")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err:?}");
}

#[tokio::test]
async fn searching_needs_read_access() {
    let t = started().await;
    let e = &t.engine;
    e.vectors_create(&root(), "c", 1, "", "").await.unwrap();
    e.vectors_add(
        &root(),
        "c",
        vec![1],
        vec![1.0],
        Some(vec!["a private note".into()]),
    )
    .await
    .unwrap();
    let outsider = Caller {
        transport: crate::auth::Transport::Dbus,
        uid: Some(60003),
        gid: Some(60003),
        pid: Some(1),
        bus_name: Some(":1.9".into()),
    };
    let before = t.index.searches.load(Ordering::SeqCst);
    let err = e
        .vectors_search(&outsider, "c", vec![1.0], 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    let err = e
        .search_text(&outsider, "c", vec!["x".into()], 1, None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err:?}");
    assert_eq!(
        t.index.searches.load(Ordering::SeqCst),
        before,
        "nothing was searched"
    );
    let hits = e.vectors_search(&root(), "c", vec![1.0], 1).await.unwrap();
    assert_eq!(hits[0][0].metadata.as_deref(), Some("a private note"));
}
