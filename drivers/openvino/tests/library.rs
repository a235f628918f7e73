//! Library discovery and loading failures. This test binary never loads a real OpenVINO, so
//! every failure path is reached the way a fresh kilnd process would reach it.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_openvino::{ErrorKind, LibrarySearch, OvError, Runtime};

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn discovery_error_lists_searched_paths() {
    let bogus = PathBuf::from("/nonexistent/kiln/libopenvino_c.so");
    let err = Runtime::load(&LibrarySearch::new(Some(bogus.clone()), vec![])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let msg = err.to_string();
    assert!(msg.contains(&bogus.display().to_string()), "{msg}");
    assert!(msg.contains(".venv/bin/pip install"), "{msg}");
    assert!(msg.contains("[openvino] library"), "{msg}");

    let empty = tmp("empty-prefix");
    let msg = Runtime::load(&LibrarySearch::new(None, vec![empty.clone()]))
        .unwrap_err()
        .to_string();
    for pattern in [
        "lib/python3*/site-packages/openvino/libs/libopenvino_c.so.*",
        "lib64/python3*/site-packages/openvino/libs/libopenvino_c.so.*",
        "local/lib/python3*/dist-packages/openvino/libs/libopenvino_c.so.*",
    ] {
        assert!(
            msg.contains(&format!("{}/{pattern}", empty.display())),
            "{pattern} missing from: {msg}"
        );
    }

    let msg = Runtime::load(&LibrarySearch::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no configured library"), "{msg}");
}

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = tmp("not-a-library");
    let fake = dir.join("libopenvino_c.so.9999");
    std::fs::write(&fake, b"not a library").unwrap();
    // Found through a configured directory: the versioned name is globbed.
    let err = Runtime::load(&LibrarySearch::new(Some(dir), vec![])).unwrap_err();
    assert!(matches!(err, OvError::LibraryUnusable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&fake.display().to_string()), "{msg}");
    assert!(msg.contains("dlopen failed"), "{msg}");
}

#[test]
fn a_library_missing_c_api_functions_is_refused() {
    // A real shared library that exports only one of the functions kiln needs.
    let dir = tmp("partial-library");
    let src = dir.join("partial.c");
    std::fs::write(
        &src,
        "int ov_core_create(void **core) { (void)core; return 0; }\n",
    )
    .unwrap();
    let lib = dir.join("libopenvino_c.so.2641");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .status()
        .expect("the C compiler `cc` (needed by cargo anyway) runs");
    assert!(status.success());
    let err = Runtime::load(&LibrarySearch::new(Some(lib.clone()), vec![])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    let msg = err.to_string();
    assert!(msg.contains("lacks C API functions"), "{msg}");
    assert!(msg.contains("ov_core_compile_model"), "{msg}");
    assert!(!msg.contains("\"ov_core_create\""), "{msg}");
    assert!(msg.contains("scripts/requirements.txt"), "{msg}");
}
