#!/bin/sh
# File-backed zfs-fuse pool for manual tests of the storage backend.
#   scripts/zfs-fuse-pool.sh create DIR [POOL] [SIZE]   (defaults: tank, 512M)
#   scripts/zfs-fuse-pool.sh destroy DIR [POOL]
# Starts `zfs-fuse --no-daemon` if none answers (and stops it on destroy only if this
# script started it). The pool root is not mounted (canmount=off): zfs-fuse deadlocks when
# a dataset mounts inside another zfs-fuse mount. Needs root, /dev/fuse, apt `zfs-fuse`.
set -eu

cmd=${1:-}
dir=${2:-}
pool=${3:-tank}
size=${4:-512M}

usage() {
    echo "usage: $0 create DIR [POOL] [SIZE] | destroy DIR [POOL]" >&2
    exit 2
}

[ -n "$cmd" ] && [ -n "$dir" ] || usage
command -v zfs-fuse >/dev/null || { echo "zfs-fuse not installed: apt-get install zfs-fuse" >&2; exit 1; }

case "$cmd" in
create)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if ! zpool list -H >/dev/null 2>&1; then
        zfs-fuse --no-daemon >"$dir/zfs-fuse.log" 2>&1 &
        echo $! >"$dir/zfs-fuse.pid"
        i=0
        until zpool list -H >/dev/null 2>&1; do
            i=$((i + 1))
            [ "$i" -lt 150 ] || { echo "zfs-fuse did not answer; see $dir/zfs-fuse.log" >&2; exit 1; }
            sleep 0.1
        done
    fi
    truncate -s "$size" "$dir/vdev"
    zpool create -o cachefile=none -O canmount=off -m "$dir/mnt" "$pool" "$dir/vdev"
    echo "pool $pool on $dir/vdev; datasets mount under $dir/mnt"
    echo "kiln.toml: [storage] backend = \"zfs\"  pool = \"$pool\""
    ;;
destroy)
    dir=$(cd "$dir" && pwd)
    i=0
    until zpool destroy -f "$pool" 2>/dev/null || ! zpool list -H "$pool" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 40 ] || { echo "pool $pool stays busy; close files under $dir/mnt" >&2; exit 1; }
        sleep 0.25
    done
    rm -f "$dir/vdev"
    if [ -f "$dir/zfs-fuse.pid" ]; then
        kill "$(cat "$dir/zfs-fuse.pid")" 2>/dev/null || true
        rm -f "$dir/zfs-fuse.pid"
    fi
    echo "pool $pool destroyed"
    ;;
*) usage ;;
esac
