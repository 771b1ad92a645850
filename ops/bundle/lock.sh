#!/bin/bash
# lock.sh — regenerate the hashed dependency locks the bundle is built from.
#
#   ops/bundle/lock.sh [--python PYTHON]
#
# Writes ops/bundle/requirements.lock (jgw's run-time dependencies, from pyproject.toml),
# ops/bundle/build-requirements.lock (build-time tools published as wheels, from build-requirements.in)
# and ops/bundle/build-sdist-requirements.lock (build-time tools published only as source), each with every
# SHA-256 the package index lists for the pinned versions. build.sh installs from them with
# --require-hashes, so every bundle built from one commit holds the same wheels. Run it after
# changing a dependency in pyproject.toml or build-requirements.in, and commit both locks.
# Needs the package index and pip-tools (pip install pip-tools; a development tool, not shipped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python="$repo/.venv/bin/python"
while [ $# -gt 0 ]; do
    case "$1" in
        --python) python=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "lock.sh: unknown argument: $1 (see --help)" >&2; exit 64 ;;
    esac
done
"$python" -m piptools compile --version >/dev/null 2>&1 \
    || { echo "lock.sh: pip-tools is missing: $python -m pip install pip-tools" >&2; exit 69; }

compile() {  # compile OUTPUT INPUT...
    local out=$1; shift
    (cd "$repo" && "$python" -m piptools compile --quiet --generate-hashes --allow-unsafe --strip-extras \
        --no-emit-index-url --no-emit-find-links --no-emit-trusted-host --resolver=backtracking \
        --output-file "$out" "$@")
}
export CUSTOM_COMPILE_COMMAND="ops/bundle/lock.sh"
compile ops/bundle/requirements.lock pyproject.toml
compile ops/bundle/build-requirements.lock ops/bundle/build-requirements.in
compile ops/bundle/build-sdist-requirements.lock ops/bundle/build-sdist-requirements.in
echo "lock.sh: wrote ops/bundle/requirements.lock, build-requirements.lock and build-sdist-requirements.lock" >&2
