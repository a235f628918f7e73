//! The models hub against a fake inference backend: loading, placement, budgets, serving,
//! unloading and a missing runtime, with no OpenVINO in the process.

use super::*;
use crate::ErrorKind;
use crate::testing::{TestEngine, engine};
use kiln_testkit::fakes::{FakeBackend, SCALE, write_model};
use std::sync::atomic::Ordering;

const BUDGET: &str = "[budget]\nconservative_bytes = 16777216\ngranularity_bytes = 4096\n";

fn request(model: &str, values: &[f32]) -> InferRequest {
    InferRequest {
        model_name: model.into(),
        inputs: vec![InferInput {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, values.len() as i64],
            contents: Some(Values::Fp32(values.to_vec())),
        }],
        ..Default::default()
    }
}

fn reserved(t: &TestEngine) -> u64 {
    t.engine.budget().status().reserved_bytes
}

#[tokio::test]
async fn a_loaded_model_serves_through_the_port_and_unloading_returns_its_memory() {
    let t = engine(FakeBackend::default(), BUDGET);
    write_model(&t.repo, "double", 1, &[("x", Dtype::F32, &[-1, 4])], 1000);
    let infos = t
        .engine
        .load_model(&Caller::internal(), "double", &LoadOptions::default())
        .await
        .unwrap();
    assert_eq!(infos.len(), 1);
    let info = &infos[0];
    assert_eq!(
        (info.state, info.device.as_str()),
        (ModelState::Ready, "CPU")
    );
    assert_eq!(info.platform, "fake");
    assert_eq!(info.precision, "f32", "f32 unless configured");
    assert_eq!(info.inputs[0].shape, vec![-1, 4]);
    assert!(info.reservation_bytes >= 1000, "{info:?}");
    assert_eq!(reserved(&t), info.reservation_bytes);

    let resp = t
        .engine
        .model_infer(request("double", &[1.0, 2.0, 3.0, 4.0]))
        .await
        .unwrap();
    assert_eq!(resp.outputs.len(), 1);
    let (name, out) = &resp.outputs[0];
    assert_eq!(name, "x_out");
    assert_eq!(
        out.to_f32().unwrap(),
        vec![SCALE, 2.0 * SCALE, 3.0 * SCALE, 4.0 * SCALE]
    );
    assert_eq!(resp.model_version, "1");

    t.engine
        .unload_model(&Caller::internal(), "double")
        .await
        .unwrap();
    assert_eq!(reserved(&t), 0, "unloading returns the reservation");
    let e = t
        .engine
        .model_infer(request("double", &[1.0; 4]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
    // The scheduler's workers let go of the model once they drain.
    for _ in 0..100 {
        if t.backend.calls.live_models.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(t.backend.calls.live_models.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_input_is_refused_before_it_reaches_the_backend() {
    let t = engine(FakeBackend::default(), BUDGET);
    write_model(&t.repo, "m", 1, &[("x", Dtype::F32, &[-1, 4])], 10);
    t.engine
        .load_model(&Caller::internal(), "m", &LoadOptions::default())
        .await
        .unwrap();
    let before = t.backend.calls.infers.load(Ordering::SeqCst);
    let mut wrong_shape = request("m", &[1.0, 2.0, 3.0]);
    wrong_shape.inputs[0].shape = vec![1, 3];
    let e = t.engine.model_infer(wrong_shape).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
    assert!(e.message.contains('x'), "names the input: {}", e.message);
    let mut wrong_name = request("m", &[1.0; 4]);
    wrong_name.inputs[0].name = "y".into();
    let e = t.engine.model_infer(wrong_name).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(t.backend.calls.infers.load(Ordering::SeqCst), before);
    // The model keeps serving good requests.
    t.engine.model_infer(request("m", &[0.5; 4])).await.unwrap();
}

#[tokio::test]
async fn a_device_that_fails_to_load_falls_back_to_cpu_with_its_reason() {
    let backend = FakeBackend::with_devices(&["CPU", "NPU"]);
    backend.fail_loads_on("NPU", "the NPU firmware refused the graph");
    let t = engine(backend, BUDGET);
    write_model(&t.repo, "m", 1, &[("x", Dtype::F32, &[-1, 4])], 10);
    std::fs::write(
        t.repo.join("m/kiln-model.toml"),
        "[model]\nstatic_shape = { x = [1, 4] }\n",
    )
    .unwrap();
    let opts = LoadOptions {
        device: Some("NPU".into()),
    };
    let info = t
        .engine
        .load_model(&Caller::internal(), "m", &opts)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(info.device, "CPU");
    assert!(
        info.fallback_reason
            .contains("NPU: the NPU firmware refused the graph"),
        "{}",
        info.fallback_reason
    );
    let loads = t.backend.calls.loads.lock().unwrap().clone();
    assert_eq!(
        loads,
        vec![
            ("NPU".to_string(), vec![("x".to_string(), vec![1, 4])]),
            ("CPU".to_string(), vec![])
        ],
        "the NPU gets the static shapes, the CPU the model as it is"
    );
}

#[tokio::test]
async fn a_device_the_backend_does_not_offer_is_named_with_what_it_offers() {
    let t = engine(FakeBackend::default(), BUDGET);
    write_model(&t.repo, "m", 1, &[("x", Dtype::F32, &[1, 4])], 10);
    let opts = LoadOptions {
        device: Some("GPU".into()),
    };
    let info = t
        .engine
        .load_model(&Caller::internal(), "m", &opts)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(info.device, "CPU");
    assert!(
        info.fallback_reason
            .contains("GPU: fake does not report this device")
            && info.fallback_reason.contains("CPU"),
        "{}",
        info.fallback_reason
    );
    assert_eq!(
        t.backend.calls.loads.lock().unwrap().len(),
        1,
        "only CPU was tried"
    );
}

#[tokio::test]
async fn a_model_over_the_budget_is_refused_and_holds_nothing() {
    let t = engine(FakeBackend::default(), BUDGET);
    // 7 MiB of weights: estimated at twice that plus overhead, above the 16 MiB budget.
    write_model(&t.repo, "big", 1, &[("x", Dtype::F32, &[1, 4])], 7 << 20);
    let e = t
        .engine
        .load_model(&Caller::internal(), "big", &LoadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted, "{e:?}");
    assert!(
        e.message.contains("big") && e.message.contains("estimate"),
        "{}",
        e.message
    );
    assert_eq!(reserved(&t), 0);
    assert!(
        t.backend.calls.loads.lock().unwrap().is_empty(),
        "refused before loading"
    );

    // Loading that grows the process past the budget is undone too.
    let backend = FakeBackend::default();
    *backend.memory_delta.lock().unwrap() = 64 << 20;
    let t = engine(backend, BUDGET);
    write_model(&t.repo, "grows", 1, &[("x", Dtype::F32, &[1, 4])], 10);
    let e = t
        .engine
        .load_model(&Caller::internal(), "grows", &LoadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ResourceExhausted, "{e:?}");
    assert!(e.message.contains("compiling it took"), "{}", e.message);
    assert_eq!(reserved(&t), 0);
    assert_eq!(t.backend.calls.live_models.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_missing_runtime_disables_serving_with_its_reason() {
    let backend = FakeBackend::default();
    *backend.missing.lock().unwrap() = Some("no fake runtime installed; install it".into());
    let t = engine(backend, BUDGET);
    write_model(&t.repo, "m", 1, &[("x", Dtype::F32, &[1, 4])], 10);
    t.engine.start_models().await;
    let inference = t
        .engine
        .status()
        .components
        .into_iter()
        .find(|c| c.name == "inference")
        .unwrap();
    assert_eq!(inference.state, ComponentState::Disabled, "{inference:?}");
    assert!(inference.detail.contains("install it"), "{inference:?}");
    let e = t
        .engine
        .load_model(&Caller::internal(), "m", &LoadOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
    assert!(
        e.message.contains("no fake runtime installed"),
        "{}",
        e.message
    );
    let e = t
        .engine
        .model_infer(request("m", &[1.0; 4]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e:?}");
    // The version is still listed, with why it is not serving.
    let list = t.engine.models_list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, ModelState::Unavailable);
}

#[tokio::test]
async fn a_version_without_model_files_is_listed_with_the_backend_rule() {
    let t = engine(FakeBackend::default(), BUDGET);
    write_model(&t.repo, "m", 1, &[("x", Dtype::F32, &[1, 4])], 10);
    std::fs::create_dir_all(t.repo.join("m/2")).unwrap();
    let index = t.engine.repository_index(false).unwrap();
    let v2 = index.iter().find(|e| e.version == "2").unwrap();
    assert_eq!(v2.state, ModelState::Unavailable);
    assert!(v2.reason.contains("fake-model.txt"), "{v2:?}");
    // Latest-one policy: version 2 is selected but cannot load; the load names why.
    let e = t
        .engine
        .load_model(&Caller::internal(), "m", &LoadOptions::default())
        .await
        .unwrap_err();
    assert!(e.message.contains("fake-model.txt"), "{}", e.message);
}
