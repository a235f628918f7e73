#!/bin/bash
# Installs what is needed, then runs every test: formatting, clippy, the Rust
# unit and integration tests (real kilnd, kilnctl, dbus-daemon, zfs-fuse,
# OpenVINO), and the installed-package test under systemd-nspawn.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
"$repo/scripts/setup.sh" test

step() { echo; echo "=== $* ==="; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings

step "build binaries for the integration tests"
cargo build --workspace --bins -q

step "cargo test"
cargo test --workspace --no-fail-fast

step "installed-package test (systemd-nspawn)"
"$repo/packaging/test-nspawn.sh"
