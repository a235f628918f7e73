#!/usr/bin/env bash
# Record the files kiln-hal reads from this machine into DEST, laid out like /, so that
# `kilnd probe --hal-root DEST` and the HAL tests see this machine. Symlinks on the way
# (sysfs class links, `device`, `driver`) are recreated relative, so the tree is
# self-contained. Only the files listed in docs/hal-trees.md are copied.
#
# Usage: scripts/record-machine-tree.sh [--pid PID] [--from ROOT] [--force] DEST
#   --pid PID    record PID's cgroup as proc/self/cgroup (e.g. kilnd's); default: this shell
#   --from ROOT  re-record an existing tree instead of this machine (trims it to what
#                the HAL reads)
#   --force      write into a DEST that already has files
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-2}"; }
die() { echo "record-machine-tree: $*" >&2; exit 1; }
warn() { echo "record-machine-tree: warning: $*" >&2; }

pid=$$ force=0 dest="" R=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pid) [ $# -ge 2 ] || die "--pid needs a process id"; pid=$2; shift 2 ;;
    --force) force=1; shift ;;
    --from) [ $# -ge 2 ] || die "--from needs a tree directory"; [ -d "$2" ] || die "--from $2 is not a directory"
            R=$(cd "$2" && pwd -P); [ "$R" != / ] || R=""; shift 2 ;;
    -h|--help) usage 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$dest" ] || die "one DEST only (got '$dest' and '$1')"; dest=$1; shift ;;
  esac
done
[ -n "$dest" ] || { echo "record-machine-tree: missing DEST" >&2; usage 2; }
[ "$(uname -s)" = Linux ] || die "this records a Linux machine; run it on one"
if [ -n "$R" ]; then
  cgroup_file="$R/proc/self/cgroup"
else
  cgroup_file="/proc/$pid/cgroup"
  [ -r "$cgroup_file" ] || die "no process $pid (or its cgroup is unreadable); pass --pid of a running process"
fi
if [ -d "$dest" ] && [ -n "$(ls -A "$dest")" ] && [ "$force" -ne 1 ]; then
  die "$dest is not empty; choose a new directory or pass --force"
fi
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
case "$dest/" in /proc/*|/sys/*) die "DEST must not be inside /proc or /sys" ;; esac
[ -z "$R" ] || [ "$dest" != "$R" ] || die "DEST must differ from --from"

# Paths below are machine paths (/sys/...); "$R$path" is where they are read.

# Recreate symlink $1 (absolute path on this machine) inside DEST, relative.
mirror_link() {
  local link=$1 target
  [ -L "$dest$link" ] && return 0
  target=$(readlink "$R$link")
  case "$target" in
    /*) target=$(realpath -s --relative-to="$(dirname "$link")" "$target") ;;
  esac
  mkdir -p "$dest$(dirname "$link")"
  ln -s "$target" "$dest$link"
}

# Walk the directories of $1, mirroring symlinks; prints the physical path.
resolve() {
  local path=$1 cur="" part
  local -a parts
  IFS=/ read -r -a parts <<< "${path#/}"
  for part in "${parts[@]}"; do
    [ -n "$part" ] || continue
    cur="$cur/$part"
    if [ -L "$R$cur" ]; then
      mirror_link "$cur"
      cur=$(readlink -f "$R$cur")
      cur=${cur#"$R"}
    fi
  done
  printf '%s\n' "$cur"
}

# Copy the content of file $1 (may go through symlinks); missing files are skipped.
record() {
  local src=$1 phys
  [ -e "$R$src" ] || return 0
  phys=$(resolve "$src")
  [ -f "$R$phys" ] || return 0
  mkdir -p "$dest$(dirname "$phys")"
  if ! cat "$R$phys" > "$dest$phys" 2>/dev/null; then
    rm -f "$dest$phys"
    warn "cannot read $src; skipped (run as root?)"
  fi
}

# Record symlink $1 itself (e.g. a `driver` link), its parents mirrored.
record_link() {
  local src=$1 parent
  [ -L "$R$src" ] || return 0
  parent=$(resolve "$(dirname "$src")")
  mkdir -p "$dest$parent"
  [ -L "$dest$parent/$(basename "$src")" ] || ln -s "$(readlink "$R$src")" "$dest$parent/$(basename "$src")"
}

shopt -s nullglob

# CPUs
for f in /proc/cpuinfo /proc/stat /proc/meminfo /proc/pressure/memory \
         /sys/devices/system/cpu/online /sys/devices/cpu_core/cpus /sys/devices/cpu_atom/cpus; do
  record "$f"
done
for c in "$R"/sys/devices/system/cpu/cpu[0-9]*; do
  c=${c#"$R"}
  record "$c/topology/core_id"
  record "$c/topology/thread_siblings_list"
  record "$c/cache/index3/shared_cpu_list"
done

# Memory cgroup of the chosen process
mkdir -p "$dest/proc/self"
if [ -r "$cgroup_file" ]; then cat "$cgroup_file" > "$dest/proc/self/cgroup"; else warn "no $cgroup_file"; fi
v2path=$(awk -F: '$1 == "0" && $2 == "" { print $3 }' "$cgroup_file" 2>/dev/null || true)
v1path=$(awk -F: '{ n = split($2, c, ","); for (i = 1; i <= n; i++) if (c[i] == "memory") print $3 }' "$cgroup_file" 2>/dev/null || true)
ancestors() { # /a/b -> /a/b /a (root excluded)
  local p=$1
  while [ -n "$p" ] && [ "$p" != / ]; do printf '%s\n' "$p"; p=${p%/*}; done
}
if [ -e "$R/sys/fs/cgroup/cgroup.controllers" ]; then
  record /sys/fs/cgroup/cgroup.controllers
  for p in $(ancestors "$v2path"); do record "/sys/fs/cgroup$p/memory.max"; done
  record "/sys/fs/cgroup$v2path/memory.current"
  record "/sys/fs/cgroup$v2path/memory.pressure"
elif [ -n "$v1path" ]; then
  for p in $(ancestors "$v1path"); do record "/sys/fs/cgroup/memory$p/memory.limit_in_bytes"; done
  record "/sys/fs/cgroup/memory$v1path/memory.usage_in_bytes"
  if [ -d "$R/sys/fs/cgroup/unified" ]; then
    mkdir -p "$dest/sys/fs/cgroup/unified"
    record "/sys/fs/cgroup/unified$v2path/memory.pressure"
  fi
fi

# NPUs
for a in "$R"/sys/class/accel/accel[0-9]*; do
  a=${a#"$R"}
  for f in vendor device npu_busy_time_us npu_memory_utilization; do record "$a/device/$f"; done
  record_link "$a/device/driver"
done

# GPUs (i915 and xe files; whichever exist)
for c in "$R"/sys/class/drm/card[0-9]*; do
  c=${c#"$R"}
  case "${c##*/}" in *-*) continue ;; esac
  record "$c/device/vendor"; record "$c/device/device"; record_link "$c/device/driver"
  for k in min max cur act RP0; do
    record "$c/gt/gt0/rps_${k}_freq_mhz"; record "$c/gt_${k}_freq_mhz"
  done
  record "$c/gt/gt0/rc6_residency_ms"; record "$c/power/rc6_residency_ms"
  for k in min max cur act rp0; do record "$c/device/tile0/gt0/freq0/${k}_freq"; done
  record "$c/device/tile0/gt0/gtidle/idle_residency_ms"
done

# USB: every device's vendor (to find sticks), full identity of Movidius sticks
for u in "$R"/sys/bus/usb/devices/*; do
  u=${u#"$R"}
  case "${u##*/}" in usb*|*:*) continue ;; esac
  record "$u/idVendor"
  if [ "$(cat "$R$u/idVendor" 2>/dev/null)" = 03e7 ]; then
    for f in idProduct serial product busnum devnum speed; do record "$u/$f"; done
  fi
done

# Power and thermal
for s in "$R"/sys/class/power_supply/*; do
  s=${s#"$R"}
  for f in type online status capacity; do record "$s/$f"; done
done
for z in "$R"/sys/class/thermal/thermal_zone[0-9]*; do
  z=${z#"$R"}
  record "$z/type"; record "$z/temp"
  for t in "$R$z"/trip_point_*_type; do t=${t#"$R"}; record "$t"; record "${t%_type}_temp"; done
done

echo "recorded $(find "$dest" -type f | wc -l) files and $(find "$dest" -type l | wc -l) links into $dest"
