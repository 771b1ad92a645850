#!/bin/bash
# build.sh — build the offline installation bundle of jgw.
#
#   ops/bundle/build.sh [--out DIR] [--python PYTHON]
#
# Produces DIR/jgw-VERSION-bundle.tar.gz (default DIR: dist/): a wheelhouse of jgw and every runtime
# dependency, the systemd units, sysusers/tmpfiles entries, Prometheus rules, the Grafana dashboard,
# runbooks, docs, example configs, install.sh and SHA256SUMS. install.sh installs it with no network
# (pip --no-index). This script needs PyPI (or a mirror) once, at build time.
#
# Build on the same Debian release, CPU architecture and Python minor version as the target machines
# (Debian 12, x86_64, Python 3.11): some dependencies (cryptography, cffi) are binary wheels.
#
# Security: downloads packages from the configured Python package index; the bundle lists the
# SHA-256 of every file, which install.sh checks before installing anything.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$repo/dist"
python=""

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done

if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || { echo "build.sh: $python is older than Python 3.11" >&2; exit 69; }

version=$("$python" -c 'import tomllib, sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml")
name="jgw-$version"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage/wheels" "$stage/share" "$out"

echo "build.sh: building wheels for $name with $("$python" --version)" >&2
# jgw itself plus all runtime dependencies as wheels (no test or dev extras).
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$stage/wheels" "$repo"
# pip, setuptools and wheel are not needed on the target: python3 -m venv brings its own pip.

cp "$here/install.sh" "$stage/install.sh"
chmod 0755 "$stage/install.sh"
mkdir -p "$stage/systemd"
cp "$repo/systemd/jgw.service" "$repo/systemd/jgw@.service" "$stage/systemd/"
cp -r "$repo/systemd/sysusers.d" "$repo/systemd/tmpfiles.d" "$stage/systemd/"
mkdir -p "$stage/share/prometheus" "$stage/share/grafana" "$stage/share/runbooks" "$stage/share/docs" \
    "$stage/share/config-examples"
cp "$repo/ops/prometheus/rules.yml" "$repo/ops/prometheus/rules_test.yml" "$stage/share/prometheus/"
cp "$repo/ops/grafana/jgw-dashboard.json" "$stage/share/grafana/"
cp "$repo"/ops/runbooks/*.md "$stage/share/runbooks/"
for doc in "$repo"/docs/*.md; do [ -e "$doc" ] && cp "$doc" "$stage/share/docs/"; done
if [ -d "$repo/config/examples" ]; then
    cp -r "$repo/config/examples/." "$stage/share/config-examples/"
fi
[ -e "$repo/README.md" ] && cp "$repo/README.md" "$stage/README.md"
printf '%s\n' "$version" > "$stage/VERSION"

(cd "$stage" && find . -type f ! -name SHA256SUMS -print0 | LC_ALL=C sort -z | xargs -0 sha256sum > SHA256SUMS)

tarball="$out/$name-bundle.tar.gz"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@${SOURCE_DATE_EPOCH:-0}" \
    -C "$work" -czf "$tarball.tmp" "$name"
mv "$tarball.tmp" "$tarball"
echo "build.sh: wrote $tarball ($(du -h "$tarball" | cut -f1), $(ls "$stage/wheels" | wc -l) wheels)" >&2
echo "$tarball"
