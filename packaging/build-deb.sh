#!/bin/bash
# Builds the kiln .deb: release kilnd + kilnctl, the generated man pages and
# completions (kiln-gendocs), then cargo-deb with the metadata in
# packaging/Cargo.toml. Progress goes to stderr; the last line on stdout is
# the path of the .deb.
#
# Usage: packaging/build-deb.sh
# Env:   CARGO_TARGET_DIR (default <repo>/target, shared with the team)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}
cargo_deb_version=3.8.0

die() { echo "build-deb: $*" >&2; exit 1; }

[[ -f $repo/configs/kiln.toml ]] || die "configs/kiln.toml is missing; it is the default config the package installs"
command -v dpkg-shlibdeps >/dev/null || die "dpkg-shlibdeps not found; install it: apt-get install dpkg-dev"
if ! cargo deb --version >/dev/null 2>&1; then
    echo "# installing cargo-deb $cargo_deb_version" >&2
    cargo install cargo-deb --locked --version "$cargo_deb_version" >&2 ||
        die "could not install cargo-deb; run: cargo install cargo-deb --locked"
fi

cd "$repo"
version=$(cargo pkgid -p kiln-packaging | sed 's/.*[#@]//')
changelog_version=$(sed -n '1s/^kiln (\([^)]*\)).*/\1/p' "$here/debian/changelog")
[[ $changelog_version == "$version-1" ]] ||
    die "packaging/debian/changelog starts at ${changelog_version:-?} but the package is $version-1; add a changelog entry for $version-1"

echo "# building release kilnd and kilnctl (target dir $CARGO_TARGET_DIR)" >&2
cargo build --release -p kilnd -p kilnctl >&2

docs=$CARGO_TARGET_DIR/release/kiln-docs
rm -rf "$docs"
echo "# generating man pages and completions into $docs" >&2
cargo run --release -q -p kiln-packaging --bin kiln-gendocs -- \
    --config "$repo/configs/kiln.toml" --version "$version" "$docs" >&2
# Debian wants man pages gzipped, reproducibly (-n: no name or timestamp).
find "$docs/man" -type f ! -name '*.gz' -exec gzip -9nf {} +

echo "# running cargo-deb" >&2
out=$(cargo deb -p kiln-packaging --no-build --output "$CARGO_TARGET_DIR/debian/")
deb=$(printf '%s\n' "$out" | tail -n 1)
[[ -n $deb && -f $deb ]] || die "cargo-deb produced no .deb (see the output above)"
echo "$deb"
