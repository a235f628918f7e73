#!/bin/bash
# Installs what is needed, then runs every test: formatting, clippy, the Rust
# unit and integration tests (real kilnd, kilnctl, dbus-daemon, zfs-fuse,
# OpenVINO), every parser fuzzed for KILN_FUZZ_SECONDS (default 10) each
# (tests/fuzz; scripts/fuzz.sh runs one longer), and the installed-package test
# under systemd-nspawn.
#
# The whole run has a deadline: KILN_TEST_DEADLINE_S seconds (default 4500, CI
# stops at 90 minutes). Past it the step in progress is killed with everything
# it started, and the report names the test binary and the tests that were
# still running. Output is kept in target/test-all.log.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
limit=${KILN_TEST_DEADLINE_S:-4500}
deadline=$(($(date +%s) + limit))
mkdir -p target
log=$repo/target/test-all.log
: >"$log"

# Which tests were unfinished when the deadline passed: the last test binary
# cargo started, its tests without a result line, and those libtest flagged.
report() {
    echo
    echo "=== DEADLINE: ${limit} s passed during step \"$1\"; it was stopped ==="
    local running bin
    running=$(grep -E '^ +Running ' "$log" | tail -n 1 || true)
    [[ -n $running ]] || return 0
    echo "last test binary: ${running#"${running%%[! ]*}"}"
    grep -E 'has been running for over' "$log" | sed 's/^/  slow: /' | tail -n 20 || true
    bin=$(sed -E 's/.*\((.*)\)$/\1/' <<<"$running")
    if [[ -x $bin ]]; then
        local done_list
        done_list=$(awk -v r="$running" 'seen; $0 == r { seen = 1 }' "$log" |
            sed -nE 's/^test (.*) \.\.\. .*/\1/p')
        echo "its tests without a result (running, or waiting to start):"
        "$bin" --list --format terse 2>/dev/null | sed -nE 's/^(.*): test$/\1/p' |
            grep -vxF -f <(printf '%s\n' "$done_list") | sed 's/^/  /' | head -n 40 || true
    fi
}

# step NAME CMD...: CMD under what is left of the deadline, its output kept in the log.
step() {
    local name=$1 left rc
    shift
    echo
    echo "=== $name ===" | tee -a "$log"
    left=$((deadline - $(date +%s)))
    if ((left <= 0)); then
        report "$name"
        exit 124
    fi
    set +e
    timeout --kill-after=30 "$left" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if ((rc == 124 || rc == 137)); then
        report "$name"
        exit 124
    fi
    return "$rc"
}

step "install what the tests need" "$repo/scripts/setup.sh" test
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy --all-targets -- -D warnings" cargo clippy --workspace --all-targets -q -- -D warnings
step "build binaries for the integration tests" cargo build --workspace --bins -q
step "cargo test" cargo test --workspace --no-fail-fast
step "fuzz every parser (${KILN_FUZZ_SECONDS:-10} s each)" cargo run -q -p kiln-fuzz -- all "${KILN_FUZZ_SECONDS:-10}"
step "installed-package test (systemd-nspawn)" "$repo/packaging/test-nspawn.sh"
echo
echo "=== all tests passed in $(($(date +%s) - deadline + limit)) s ==="
