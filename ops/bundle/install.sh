#!/bin/bash
# install.sh — install jgw from this offline bundle (no network needed).
#
#   sudo ./install.sh [--prefix /opt/jgw] [--root DIR] [--no-systemd]
#
#   --prefix DIR    where the virtualenv and shared files go (default /opt/jgw)
#   --root DIR      install the system files (units, sysusers, tmpfiles) under DIR instead of /
#                   (for building images; nothing is started)
#   --no-systemd    only the virtualenv and shared files (for a trial as a normal user)
#
# What it does: checks SHA256SUMS; creates PREFIX/venv with python3 -m venv and installs the bundled
# wheels with pip --no-index (pip never contacts an index); copies runbooks, docs, the READMEs they
# cite, Prometheus rules, the Grafana dashboard, example configs and the CRL fetch helper to
# PREFIX/share; installs the systemd units (jgw-crl-fetch.timer too, not enabled), creates the jgw
# user (systemd-sysusers) and /etc/jgw{,/certs} (systemd-tmpfiles), links /usr/local/bin/jgw to the
# venv's jgw and installs bash/zsh completion and the jgw(1) manual page under /usr/local/share.
# It never writes /etc/jgw/jgw.toml and never starts the service: see
# PREFIX/share/runbooks/first-start.en.md (ja: first-start.ja.md). Running it again upgrades in place.
#
# Needs: Debian 12 (or later), python3 >= 3.11 and python3-venv (apt-get install python3-venv).
# Exit codes: 0 ok, 64 usage, 65 bundle damaged, 69 missing prerequisite, 77 not root.
#
# Security: installs only files whose SHA-256 matches SHA256SUMS; pip runs with --no-index and no
# configuration file, so no package can come from anywhere but this bundle.
set -euo pipefail

bundle=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/jgw
root=""
with_systemd=1
python=${PYTHON:-python3}

die() { code=$1; shift; echo "install.sh: $*" >&2; exit "$code"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=$2; shift 2 ;;
        --root) root=$(cd "$2" && pwd); shift 2 ;;
        --no-systemd) with_systemd=0; shift ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) die 64 "unknown argument: $1 (see --help)" ;;
    esac
done
case "$prefix" in /*) ;; *) die 64 "--prefix must be an absolute path, got $prefix" ;; esac

version=$(cat "$bundle/VERSION")
echo "install.sh: installing jgw $version into $prefix" >&2

(cd "$bundle" && sha256sum --quiet --strict -c SHA256SUMS) \
    || die 65 "bundle damaged: SHA256SUMS does not match (copy the archive again)"

if [ "$with_systemd" = 1 ] && [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    die 77 "run as root (sudo), or use --no-systemd for a trial installation"
fi
command -v "$python" >/dev/null || die 69 "$python not found: apt-get install python3"
"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die 69 "$python is $("$python" --version 2>&1); jgw needs Python 3.11 or later"
"$python" -c 'import ensurepip, venv' 2>/dev/null \
    || die 69 "python3-venv is missing: apt-get install python3-venv (from the Debian DVD or local mirror)"

# 1. The virtualenv, from the bundled wheels only.
if [ ! -x "$prefix/venv/bin/python" ]; then
    mkdir -p "$prefix"
    "$python" -m venv "$prefix/venv"
fi
env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT \
    PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$prefix/venv/bin/python" -m pip install --quiet --no-index --no-cache-dir \
    --find-links "$bundle/wheels" --upgrade "jgw==$version" \
    || die 69 "pip could not install jgw $version from $bundle/wheels (was the bundle built for this Python?)"

# 2. Shared files (replaced as a whole on upgrade).
rm -rf "$prefix/share.new"
mkdir -p "$prefix/share.new"
cp -r "$bundle/share/." "$prefix/share.new/"
rm -rf "$prefix/share.old"
[ -d "$prefix/share" ] && mv "$prefix/share" "$prefix/share.old"
mv "$prefix/share.new" "$prefix/share"
rm -rf "$prefix/share.old"

# 3. systemd: units, service account, /etc/jgw.
if [ "$with_systemd" = 1 ]; then
    etc="$root/etc"
    mkdir -p "$etc/systemd/system" "$etc/sysusers.d" "$etc/tmpfiles.d"
    for unit in jgw.service jgw@.service jgw-crl-fetch.service jgw-crl-fetch.timer; do
        sed -e "s#/opt/jgw/venv/bin/jgw#$prefix/venv/bin/jgw#" -e "s#/opt/jgw/share/#$prefix/share/#" \
            "$bundle/systemd/$unit" > "$etc/systemd/system/$unit.new"
        chmod 0644 "$etc/systemd/system/$unit.new"
        mv "$etc/systemd/system/$unit.new" "$etc/systemd/system/$unit"
    done
    install -m 0644 "$bundle/systemd/sysusers.d/jgw.conf" "$etc/sysusers.d/jgw.conf"
    install -m 0644 "$bundle/systemd/tmpfiles.d/jgw.conf" "$etc/tmpfiles.d/jgw.conf"
    systemd-sysusers ${root:+--root="$root"} jgw.conf
    systemd-tmpfiles ${root:+--root="$root"} --create jgw.conf
    if [ -z "$root" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi

    # 4. `jgw` on PATH, its completion (bash, zsh) and manual page, where Debian looks for local ones.
    usr_local="$root/usr/local"
    mkdir -p "$usr_local/bin" "$usr_local/share/bash-completion/completions" "$usr_local/share/zsh/site-functions" \
        "$usr_local/share/man/man1"
    if [ -e "$usr_local/bin/jgw" ] && [ ! -L "$usr_local/bin/jgw" ]; then
        echo "install.sh: $usr_local/bin/jgw exists and is not our link: left alone" >&2
    else
        ln -sfn "$prefix/venv/bin/jgw" "$usr_local/bin/jgw"
    fi
    install -m 0644 "$bundle/share/completion/jgw.bash" "$usr_local/share/bash-completion/completions/jgw"
    install -m 0644 "$bundle/share/completion/_jgw" "$usr_local/share/zsh/site-functions/_jgw"
    install -m 0644 "$bundle/share/man/man1/jgw.1" "$usr_local/share/man/man1/jgw.1"
fi

"$prefix/venv/bin/jgw" --version
cat >&2 <<NEXT
install.sh: done. Next:
  1. write /etc/jgw/jgw.toml (examples: $prefix/share/config-examples/), then: $prefix/venv/bin/jgw check-config /etc/jgw/jgw.toml
  2. certificates, first time: $prefix/share/runbooks/first-certificates.en.md (ja: first-certificates.ja.md)
  3. allow your brokers' addresses: systemctl edit jgw   ([Service] IPAddressAllow=...)
  4. systemctl enable --now jgw; systemctl status jgw
  Runbooks: $prefix/share/runbooks/first-start.en.md / first-start.ja.md
  Manual: man jgw (after a --no-systemd trial: man -l $prefix/share/man/man1/jgw.1)
NEXT
