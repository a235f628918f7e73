#!/bin/bash
# Fuzz one target (or all) longer than CI does: scripts/fuzz.sh TARGET [SECONDS]
# Targets: h2, kserve, model_toml, kiln_toml, job_json, cpu_list, sysfs, vectors, all. A crash keeps its
# input under target/fuzz-crashes/ and the script exits 1; add the input to
# tests/fuzz/corpus/TARGET/ once fixed, so every later run tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET [SECONDS] (TARGET: h2, kserve, model_toml, kiln_toml, job_json, cpu_list, sysfs, vectors, all)}
seconds=${2:-300}
cargo build -q -p kiln-fuzz
exec target/debug/kiln-fuzz "$target" "$seconds"
