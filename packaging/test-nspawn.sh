#!/bin/bash
# System test of the kiln .deb: static checks (lintian, systemd-analyze
# security/verify), then a real systemd boot of a Debian bookworm rootfs under
# systemd-nspawn that installs, drives and purges the package
# (packaging/nspawn/in-container.sh). Prints "ok - "/"not ok - " per step and
# ends with "N passed, M failed"; exits non-zero if anything failed.
#
# Usage: packaging/test-nspawn.sh [--prereqs-only] [--rootfs-only] [path/to/kiln_*.deb]
#   Without a .deb it runs packaging/build-deb.sh first.
# Env:   KILN_TEST_CACHE (default /var/cache/kiln-test) holds the cached rootfs,
#        KILN_TEST_TIMEOUT (default 600 s) bounds the container run.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${KILN_TEST_CACHE:-/var/cache/kiln-test}
timeout_s=${KILN_TEST_TIMEOUT:-600}
suite=bookworm

passed=0
failed=0
ok() { echo "ok - $*"; passed=$((passed + 1)); }
not_ok() { echo "not ok - $*"; failed=$((failed + 1)); }
die() { echo "test-nspawn: $*" >&2; exit 2; }

# --- prerequisites --------------------------------------------------------
ensure_prereqs() {
    local missing=() cmd pkg
    for pair in systemd-nspawn:systemd-container mmdebstrap:mmdebstrap \
                lintian:lintian dpkg-shlibdeps:dpkg-dev systemd-analyze:systemd; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; run as root or: apt-get install ${missing[*]}"
        echo "# installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    fi
}

prereqs_only=0
rootfs_only=0
deb=""
for arg in "$@"; do
    case $arg in
        --prereqs-only) prereqs_only=1 ;;
        --rootfs-only) rootfs_only=1 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) die "unknown option $arg (see --help)" ;;
        *) deb=$arg ;;
    esac
done
[[ $(id -u) == 0 ]] || die "must run as root (systemd-nspawn and mmdebstrap need it)"
ensure_prereqs
((prereqs_only)) && exit 0

# --- rootfs (cached outside the clone, keyed by a hash of its recipe) -----
# Base packages of the test machine; the .deb's own Depends are added so the
# install inside the container needs no network.
base_pkgs="systemd,systemd-sysv,dbus,libpam-systemd,polkitd,udev,acl"

deb_depends() {
    # Package names of the first alternative of each Depends entry.
    dpkg-deb -f "$1" Depends 2>/dev/null | tr ',' '\n' |
        sed -e 's/|.*//' -e 's/(.*)//' -e 's/:any//' -e 's/[[:space:]]//g' |
        grep -v '^$' | sort -u | paste -sd, -
}

sources_file() {
    local f
    for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [[ -s $f ]] && grep -q "$suite" "$f"; then echo "$f"; return; fi
    done
    die "no apt sources for $suite found in /etc/apt (needed by mmdebstrap)"
}

build_rootfs() {
    local extra=$1 pkgs recipe hash root tmp src
    pkgs=$base_pkgs${extra:+,$extra}
    src=$(sources_file)
    recipe=$(printf '%s\n' "suite=$suite" "variant=minbase" "pkgs=$pkgs" \
        "$(cat "$src")" "$(cat "$here/nspawn/kiln-test.service")")
    hash=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
    root=$cache/rootfs-$hash
    if [[ -f $root/.kiln-rootfs-ok ]]; then
        echo "# rootfs cached: $root" >&2
        echo "$root"
        return
    fi
    mkdir -p "$cache"
    tmp=$root.tmp.$$
    rm -rf "$tmp"
    echo "# building rootfs $root (mmdebstrap $suite, $pkgs)" >&2
    local t0=$SECONDS
    mmdebstrap --variant=minbase --mode=root --include="$pkgs" \
        --customize-hook="copy-in $here/nspawn/kiln-test.service /etc/systemd/system" \
        --customize-hook='chroot "$1" systemctl enable kiln-test.service' \
        --customize-hook='echo kiln-test > "$1/etc/hostname"' \
        --customize-hook='rm -f "$1/etc/machine-id"; : > "$1/etc/machine-id"' \
        "$suite" "$tmp" "$src" >&2
    touch "$tmp/.kiln-rootfs-ok"
    rm -rf "$root"
    mv "$tmp" "$root"
    echo "# rootfs built in $((SECONDS - t0)) s" >&2
    echo "$root"
}

if ((rootfs_only)); then
    build_rootfs "${deb:+$(deb_depends "$deb")}"
    exit 0
fi

# --- the package ------------------------------------------------------------
if [[ -z $deb ]]; then
    deb=$("$here/build-deb.sh" | tail -n 1)
fi
[[ -f $deb ]] || die "no such .deb: $deb (build it with packaging/build-deb.sh)"
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
echo "# package: $deb"

work=$(mktemp -d /tmp/kiln-nspawn.XXXXXX)
trap 'rm -rf "$work"' EXIT
unpacked=$work/unpacked
dpkg-deb -x "$deb" "$unpacked"

# --- static checks ------------------------------------------------------------
lintian_out=$work/lintian.txt
lintian --pedantic --no-tag-display-limit "$deb" >"$lintian_out" 2>&1 || true
sed 's/^/# lintian: /' "$lintian_out"
lint_errors=$(grep -c '^E: ' "$lintian_out" || true)
lint_warnings=$(grep -c '^W: ' "$lintian_out" || true)
echo "# lintian: $lint_errors errors, $lint_warnings warnings"
if [[ $lint_errors == 0 ]] && ! grep -q 'lintian: .*error\|Traceback\|^internal error' "$lintian_out"; then
    ok "lintian: 0 errors ($lint_warnings warnings)"
else
    not_ok "lintian: $lint_errors errors"
fi

unit=$(find "$unpacked" -path '*/systemd/system/kilnd.service' | head -n 1)
if [[ -z $unit ]]; then
    not_ok "package ships kilnd.service"
else
    ok "package ships ${unit#"$unpacked"}"
    sec_out=$work/security.txt
    # systemd 252 takes the threshold on its internal 0-100 scale: 20 = 2.0.
    if systemd-analyze security --offline=true --threshold=20 --root="$unpacked" \
        "${unit#"$unpacked"}" >"$sec_out" 2>&1; then sec_rc=0; else sec_rc=$?; fi
    score=$(grep -o 'Overall exposure level for kilnd.service: [0-9.]*' "$sec_out" | awk '{print $NF}')
    echo "# exposure score: ${score:-unknown}"
    if [[ $sec_rc == 0 && -n $score ]]; then
        ok "systemd-analyze security --offline=true --threshold=2.0: $score"
    else
        grep -v '^✓' "$sec_out" | sed 's/^/# /'
        not_ok "systemd-analyze security: ${score:-no score} (rc $sec_rc)"
    fi
    # verify resolves the units kilnd.service references (sysinit.target,
    # dbus.service, ...): give it the distribution's units beside the package's.
    cp -rn /lib/systemd/system/. "$(dirname "$unit")/"
    if systemd-analyze verify --root="$unpacked" --man=no "${unit#"$unpacked"}" \
        >"$work/verify.txt" 2>&1 && [[ ! -s $work/verify.txt ]]; then
        ok "systemd-analyze verify --root=<unpacked .deb>"
    else
        sed 's/^/# verify: /' "$work/verify.txt"
        not_ok "systemd-analyze verify --root=<unpacked .deb>"
    fi
fi

# --- boot the rootfs and run the in-container test ---------------------------
root=$(build_rootfs "$(deb_depends "$deb")")
results=$work/results
mkdir -p "$results" "$work/deb"
cp "$deb" "$work/deb/"
cp "$here/nspawn/in-container.sh" "$work/in-container.sh"
chmod 0755 "$work/in-container.sh"
echo "# booting $root under systemd-nspawn"
t0=$SECONDS
set +e
timeout --kill-after=10 "$timeout_s" systemd-nspawn -D "$root" -b --register=no --keep-unit \
    --console=pipe --volatile=overlay --private-network \
    --bind="$results:/results" --bind-ro="$work/deb:/kiln-deb" \
    --bind-ro="$work/in-container.sh:/usr/local/sbin/kiln-in-container-test" \
    >"$work/console.txt" 2>&1
nspawn_rc=$?
set -e
echo "# container ran $((SECONDS - t0)) s, exit code $nspawn_rc"
if [[ -s $results/steps.txt ]]; then
    grep -E '^(ok|not ok) - |^# ' "$results/steps.txt" || true
    inner_pass=$(grep -c '^ok - ' "$results/steps.txt" || true)
    inner_fail=$(grep -c '^not ok - ' "$results/steps.txt" || true)
    passed=$((passed + inner_pass))
    failed=$((failed + inner_fail))
else
    echo "# no results from the container; console follows"
    tail -n 80 "$work/console.txt" | sed 's/^/# console: /'
fi
if [[ $nspawn_rc == 0 && -f $results/done ]]; then
    ok "container test exited 0"
else
    [[ -s $results/journal.txt ]] && tail -n 60 "$results/journal.txt" | sed 's/^/# journal: /'
    not_ok "container test exit code $nspawn_rc"
fi
if [[ -n ${KILN_TEST_KEEP:-} ]]; then
    mkdir -p "$KILN_TEST_KEEP"
    cp -r "$results" "$work/console.txt" "$lintian_out" "$KILN_TEST_KEEP/"
fi

echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
