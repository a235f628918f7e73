#!/bin/bash
# Installs what is needed, then runs kilnd in the foreground on the embedded
# development defaults (configs/dev.toml): state, socket and models under
# .dev/ in the checkout, and a private system-like dbus-daemon that loads the
# project's own bus policy. Ctrl-C stops both.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh" run
cd "$repo"
cargo build -q -p kilnd -p kilnctl

run=$repo/.dev/run
mkdir -p "$run"
sed -e "s|@LISTEN@|unix:path=$run/bus.sock|" \
    -e "s|@OWNER@|$(id -un)|" \
    -e "s|@POLICY_DIR@|$repo/packaging/dbus|" \
    "$repo/configs/dbus-private.conf.in" > "$run/bus.conf"
dbus-daemon --config-file="$run/bus.conf" --nofork --nopidfile --nosyslog --print-address=1 > "$run/bus.address" &
bus_pid=$!
trap 'kill $bus_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do [[ -s $run/bus.address ]] && break; sleep 0.1; done
bus=$(head -n1 "$run/bus.address")

cat <<MSG

kilnd is starting on the development defaults. In another terminal:
  export KILN_SOCKET=$run/kiln.sock
  target/debug/kilnctl status
  target/debug/kilnctl reload
  busctl --address=$bus get-property org.kiln.Kiln1 /org/kiln/Kiln1 org.kiln.Kiln1.Manager State
  curl --unix-socket $run/metrics.sock http://localhost/metrics
  .venv/bin/python -c "import tritonclient.grpc as g; c = g.InferenceServerClient('unix://$run/kiln.sock'); print(c.is_server_live(), c.get_server_metadata())"
Ctrl-C stops it.

MSG
target/debug/kilnd --config "$repo/configs/dev.toml" --bus "$bus" &
kilnd_pid=$!
trap 'kill -TERM $kilnd_pid 2>/dev/null || true; wait $kilnd_pid 2>/dev/null || true; kill $bus_pid 2>/dev/null || true' EXIT INT TERM
wait $kilnd_pid
