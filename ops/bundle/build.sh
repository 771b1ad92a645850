#!/bin/bash
# build.sh — build the offline installation bundle of jgw.
#
#   ops/bundle/build.sh [--out DIR] [--python PYTHON]
#
# Produces DIR/jgw-VERSION-bundle.tar.gz and DIR/jgw-VERSION-bundle.tar.gz.sha256 (default DIR: dist/).
# The archive holds a wheelhouse of jgw and every run-time dependency, the systemd units (and a CRL
# fetch timer example), sysusers/tmpfiles entries, Prometheus rules, the Grafana dashboard, runbooks,
# docs, the READMEs the runbooks cite (certs, systemd, catalog), example configs, bash/zsh completion
# and the jgw(1) manual page, install.sh, BUILDINFO and SHA256SUMS. install.sh installs it with no
# network (pip --no-index). This script needs the package index once, at build time.
#
# Reproducible: the dependencies come from ops/bundle/requirements.lock and the build tools from
# ops/bundle/build-*requirements.lock, all pinned with SHA-256 hashes (pip --require-hashes; regenerate
# them with ops/bundle/lock.sh). jgw is built from the files git tracks (not from leftovers in the
# tree) with the locked setuptools, and SOURCE_DATE_EPOCH (default: the commit's time) fixes every
# timestamp, so two builds of one commit give the same wheels and the same archive bytes.
#
# Build on the same Debian release, CPU architecture and Python minor version as the target machines
# (Debian 12, x86_64, Python 3.11): some dependencies (cryptography, cffi) are binary wheels.
#
# Exit codes: 0 built, 64 usage, 69 missing prerequisite or a download/build failed.
#
# Security: downloads packages from the configured Python package index and accepts only files whose
# SHA-256 is in the locks; the bundle lists the SHA-256 of every file, which install.sh checks before
# installing anything.
set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC PYTHONHASHSEED=0 COLUMNS=80

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out="$repo/dist"
python=""

die() { code=$1; shift; echo "build.sh: $*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) die 64 "unknown argument: $1 (see --help)" ;;
    esac
done

if [ -z "$python" ]; then
    if [ -x "$repo/.venv/bin/python" ]; then python="$repo/.venv/bin/python"; else python=python3; fi
fi
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die 69 "$python is older than Python 3.11"

version=$("$python" -c 'import tomllib, sys; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$repo/pyproject.toml")
name="jgw-$version"
commit=unknown
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    commit=$(git -C "$repo" rev-parse HEAD)
    [ -z "$(git -C "$repo" status --porcelain)" ] || commit="$commit-dirty"  # edits or new files: built too
    : "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct)}"
fi
: "${SOURCE_DATE_EPOCH:=$(stat -c %Y "$repo/pyproject.toml")}"
export SOURCE_DATE_EPOCH

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage/wheels" "$stage/share"

# 1. The source: what git tracks (with uncommitted edits), so build/, *.egg-info and other leftovers
#    of a developer's tree cannot end up in the wheel.
mkdir -p "$work/src"
if [ "$commit" != unknown ]; then
    (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
        | tar --null -T - -cf -) | tar -xf - -C "$work/src"
else
    tar -C "$repo" --exclude=./.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude=./var --exclude=./demo-out -cf - . | tar -xf - -C "$work/src"
fi

# 2. A build environment with the locked build tools only (never shipped).
echo "build.sh: building $name ($commit) with $("$python" --version)" >&2
"$python" -m venv "$work/buildenv"
bpy="$work/buildenv/bin/python"
pip_quiet=(--quiet --disable-pip-version-check --no-cache-dir)
"$bpy" -m pip install "${pip_quiet[@]}" --require-hashes --no-deps --only-binary=:all: \
    -r "$here/build-requirements.lock" || die 69 "cannot install the build tools (build-requirements.lock)"
"$bpy" -m pip install "${pip_quiet[@]}" --require-hashes --no-deps --no-build-isolation \
    -r "$here/build-sdist-requirements.lock" >"$work/tools.log" 2>&1 \
    || { cat "$work/tools.log" >&2; die 69 "cannot build the build tools (build-sdist-requirements.lock)"; }

# 3. Wheels: jgw from the source copy; the dependencies exactly as locked, as binary wheels.
"$bpy" -m pip wheel "${pip_quiet[@]}" --no-deps --no-build-isolation --wheel-dir "$stage/wheels" "$work/src" \
    >"$work/wheel.log" 2>&1 || { cat "$work/wheel.log" >&2; die 69 "building the jgw wheel failed"; }
"$bpy" -m pip download "${pip_quiet[@]}" --require-hashes --no-deps --only-binary=:all: \
    --dest "$stage/wheels" -r "$here/requirements.lock" \
    || die 69 "cannot download the locked dependencies (requirements.lock)"

# 4. The wheel set must install alone (as install.sh will do it); then generate completion and man
#    pages from the installed jgw's parser.
"$bpy" -m pip install "${pip_quiet[@]}" --no-index --find-links "$stage/wheels" "jgw==$version" \
    || die 69 "the wheel set does not install by itself (is requirements.lock up to date? ops/bundle/lock.sh)"
(cd "$work" && "$bpy" "$here/gen_docs.py" "$stage/share") >"$work/docs.log" 2>&1 \
    || { cat "$work/docs.log" >&2; die 69 "generating completion and manual pages failed"; }

# 5. Everything else the runbooks name.
cp "$here/install.sh" "$stage/install.sh"
chmod 0755 "$stage/install.sh"
mkdir -p "$stage/systemd"
cp "$repo/systemd/jgw.service" "$repo/systemd/jgw@.service" "$repo/systemd/jgw-crl-fetch.service" \
    "$repo/systemd/jgw-crl-fetch.timer" "$stage/systemd/"
cp -r "$repo/systemd/sysusers.d" "$repo/systemd/tmpfiles.d" "$stage/systemd/"
mkdir -p "$stage/share/prometheus" "$stage/share/grafana" "$stage/share/runbooks" "$stage/share/docs" \
    "$stage/share/config-examples" "$stage/share/certs" "$stage/share/systemd" "$stage/share/catalog" \
    "$stage/share/bin"
cp "$repo/ops/prometheus/rules.yml" "$repo/ops/prometheus/rules_test.yml" "$stage/share/prometheus/"
cp "$repo/ops/grafana/jgw-dashboard.json" "$stage/share/grafana/"
cp "$repo"/ops/runbooks/*.md "$stage/share/runbooks/"
cp "$repo"/docs/*.md "$stage/share/docs/"
cp "$repo"/config/examples/*.toml "$stage/share/config-examples/"
cp "$repo/certs/README.md" "$stage/share/certs/README.md"
cp "$repo/systemd/README.md" "$stage/share/systemd/README.md"
cp "$repo/gateway/catalog_data/README.md" "$stage/share/catalog/README.md"
install -m 0755 "$here/jgw-crl-fetch" "$stage/share/bin/jgw-crl-fetch"
cp "$repo/README.md" "$stage/README.md"
printf '%s\n' "$version" > "$stage/VERSION"
{
    echo "jgw $version"
    echo "commit $commit"
    echo "source_date_epoch $SOURCE_DATE_EPOCH"
    echo "python $("$python" -c 'import platform, sys; print(sys.version.split()[0], platform.machine())')"
    echo "requirements.lock sha256 $(sha256sum < "$here/requirements.lock" | cut -d' ' -f1)"
    for lock in build-requirements.lock build-sdist-requirements.lock; do
        echo "$lock sha256 $(sha256sum < "$here/$lock" | cut -d' ' -f1)"
    done
} > "$stage/BUILDINFO"

(cd "$stage" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)

# 6. The archive: sorted names, one owner, fixed times and modes, gzip without name or time.
tarball="$out/$name-bundle.tar.gz"
tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    --mode='u+rwX,go+rX,go-w' -C "$work" -cf - "$name" | gzip -9 -n > "$tarball.tmp"
mv "$tarball.tmp" "$tarball"
(cd "$out" && sha256sum "$name-bundle.tar.gz" > "$name-bundle.tar.gz.sha256.tmp" \
    && mv "$name-bundle.tar.gz.sha256.tmp" "$name-bundle.tar.gz.sha256")
echo "build.sh: wrote $tarball ($(du -h "$tarball" | cut -f1), $(find "$stage/wheels" -name '*.whl' | wc -l) wheels)," \
    "sha256 $(cut -d' ' -f1 "$tarball.sha256")" >&2
echo "$tarball"
