"""``jgw certs install|status|rotate|rollback|export|ssh-key``: the certificate lifecycle for network
staff, and the same staged switch for jgw's SFTP client keys (``ssh-key``, ``gateway.files.clientkey``).

Each verb takes the node's config file (for ``node.id``, ``node.certs_dir`` and ``node.state_dir``)
or ``--certs-dir DIR --node ID``. Verbs that change the directory hold its lock, repair what an
interrupted run left, and accept ``--dry-run``, which runs every check and changes nothing.
``rotate`` and ``rollback`` then send SIGHUP to the daemon named by ``<state_dir>/jgw.pid``.

Run as root, a verb first reads the files you name (they may be readable by root only) and loads
everything it needs, then switches to the user that owns the certs directory (jgw) before it
touches anything, so new files belong to the daemon's user. A file that user cannot read is
refused with its name and the user's.

Exit codes: 0 done (status: everything in order); 1 status found something to act on (expired,
expiring within --warn-days, refused, CRL due within --crl-warn-hours, repair pending);
75 another certs command holds the lock; 77 a private key readable by others; 78 a certificate,
key or CRL refused (the message names the file and the reason); 66 nothing staged / nothing to
roll back to.

Security: changes only the node's certs directory; signals only the jgw daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from gateway import config as config_mod
from gateway.amqp.blocking import check_login
from gateway.errors import ConfigError, JgwError, NoInputError, UnavailableError, UsageError
from gateway.files import clientkey
from gateway.files.clientkey import KeyFiles
from gateway.files.errors import FileError
from gateway.files.settings import SftpServer
from gateway.files.sftp import SftpLink, SftpPeer
from gateway.pki.errors import os_errors
from gateway.pki.generation import SLOT_BY_NAME, load_generation
from gateway.pki.install import (
    Installed,
    export_public,
    install_anchor,
    install_crl,
    install_node_certificate,
    install_peer_file,
)
from gateway.pki.layout import CertsDir
from gateway.pki.privileges import become_owner
from gateway.pki.rotation import (
    Outcome,
    changing,
    check_daemon_can_read,
    record,
    rollback,
    rotate,
    signal_daemon,
)
from gateway.pki.status import DEFAULT_CRL_WARN, DEFAULT_WARN, collect, render
from gateway.pki.tls import TlsFiles, for_broker
from gateway.pki.trust import TrustStore

PID_FILE = "jgw.pid"


@dataclass(frozen=True)
class Target:
    """Which node's certs directory a command works on."""

    certs_dir: Path
    node_id: str
    state_dir: Path | None
    config: config_mod.Config | None


def add_target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?",
                   help="the node's config file (node.id, node.certs_dir, node.state_dir)")
    p.add_argument("--certs-dir", type=Path,
                   help="the certs directory (instead of, or overriding, the config)")
    p.add_argument("--node", help="the node id (instead of, or overriding, the config)")


def target(args: argparse.Namespace, inputs: Iterable[Path] = ()) -> Target:
    """The node the command works on. Run as root, this reads ``inputs`` (the files staff named) and
    imports every module the verb may need, then switches to the certs directory's owner
    (``gateway.pki.privileges``)."""
    cfg = config_mod.load(args.config) if args.config else None
    certs_dir = args.certs_dir or (cfg.node.certs_dir if cfg else None)
    node_id = args.node or (cfg.node.id if cfg else None)
    if certs_dir is None or node_id is None:
        raise UsageError("name the node: give its config file, or --certs-dir DIR --node ID")
    if not config_mod.NAME_RE.match(node_id):
        raise UsageError(f"--node {node_id!r}: a node id must match {config_mod.NAME_RE.pattern}")
    state_dir = getattr(args, "state_dir", None) or (cfg.node.state_dir if cfg else None)
    become_owner(Path(certs_dir), inputs)
    return Target(Path(certs_dir), node_id, Path(state_dir) if state_dir else None, cfg)


def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a verb with file-system errors translated into one line with the file (77, 75 or 78)."""
    def run(args: argparse.Namespace) -> int:
        with os_errors("certs"):
            return fn(args)
    return run


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _IntermixedParser(argparse.ArgumentParser):
    """Options may stand between the config file and the files, as the runbook writes them
    (``install CONFIG --peer ID FILE...``): argparse's own matching would take CONFIG as the only
    FILE and refuse the rest as unrecognized (exit 2)."""

    _inside = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._inside or self._subparsers is not None:  # intermixed parsing calls back in; it
            return super().parse_known_args(args, namespace)  # cannot parse a parser of verbs (ssh-key)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("certs", help="install, check, rotate and roll back this node's certificates",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="certs_command", metavar="VERB", parser_class=_IntermixedParser)

    ins = verbs.add_parser("install", help="check issued certificates (or a peer's, a CRL, an anchor) and "
                                           "install them; node certificates go to staging",
                           description=_INSTALL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(ins)
    ins.add_argument("files", nargs="+", metavar="FILE", type=Path,
                     help="certificate, CRL or key statement files")
    kind = ins.add_mutually_exclusive_group()
    kind.add_argument("--peer", metavar="ID", help="the files are peer ID's certificates / key statement")
    kind.add_argument("--crl", action="store_true", help="the files are CRLs (PEM or DER; stored as PEM)")
    kind.add_argument("--anchor", action="store_true", help="the files are CA certificates to trust")
    ins.add_argument("--purpose", choices=tuple(SLOT_BY_NAME), help="the slot (default: found from the key)")
    ins.add_argument("--key", type=Path,
                     help="the certificate's private key, when it was not made by jgw pki csr")
    ins.add_argument("--dry-run", action="store_true", help="run every check, install nothing (simulated)")
    ins.set_defaults(func=guarded(cmd_install))

    st = verbs.add_parser("status", help="every certificate and CRL: purpose, days left, who trusts it",
                          description="Show every trust anchor, CRL, certificate of the live, previous and "
                                      "staged generations and of every peer, with days left and state. "
                                      "Exit 1 when something the node uses now is refused, expired, expires "
                                      "within --warn-days, a CRL is due within --crl-warn-hours, or a repair "
                                      "is pending; 0 otherwise. Items marked (info) do not affect the "
                                      "result.")
    add_target_arguments(st)
    st.add_argument("--warn-days", type=float, default=DEFAULT_WARN.days, help="default %(default)s")
    st.add_argument("--crl-warn-hours", type=float, default=DEFAULT_CRL_WARN.total_seconds() / 3600,
                    help="default %(default)s")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=guarded(cmd_status))

    for name, func, what in (("rotate", cmd_rotate, "make the staged generation live (keeps the previous)"),
                             ("rollback", cmd_rollback, "return to the previous generation")):
        r = verbs.add_parser(name, help=what,
                             description=_ROTATE_HELP if name == "rotate" else _ROLLBACK_HELP,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_target_arguments(r)
        r.add_argument("--state-dir", type=Path,
                       help="where the daemon writes jgw.pid (default: node.state_dir)")
        r.add_argument("--dry-run", action="store_true", help="run every check, change nothing (simulated)")
        r.add_argument("--no-signal", action="store_true", help="do not send SIGHUP to the daemon")
        r.add_argument("--check-brokers", action="store_true",
                       help="before switching, log in to every TLS broker of the config with the new TLS "
                            "certificate (EXTERNAL) and stop if one refuses it")
        r.set_defaults(func=guarded(func))

    ex = verbs.add_parser("export", help="copy public certificates for peers to install",
                          description="Write this node's public material for its peers. Default: the live "
                                      "generation, everything. --staging: only the staged signing "
                                      "certificates, for peers to install BEFORE jgw certs rotate (then they "
                                      "accept old and new signatures); export the live generation again "
                                      "after the rotation for the encryption certificate.")
    add_target_arguments(ex)
    ex.add_argument("--out", type=Path, required=True, help="directory to write (e.g. a USB stick)")
    ex.add_argument("--staging", action="store_true", help="the staged signing certificates only")
    ex.set_defaults(func=guarded(cmd_export))
    sk = verbs.add_parser("ssh-key", help="make, prove and switch jgw's SFTP client keys ([sftp.NAME] client_key)",
                          description=_SSH_KEY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = sk.add_subparsers(dest="ssh_key_command", metavar="STEP", parser_class=_IntermixedParser)
    for name, func, what in (("new", cmd_ssh_key_new, "stage a new key and print its public half for the server"),
                             ("rotate", cmd_ssh_key_rotate, "log in with the staged key, then make it live"),
                             ("rollback", cmd_ssh_key_rollback, "log in with the previous key, then make it live"),
                             ("status", cmd_ssh_key_status, "each server's live, staged and previous key")):
        v = steps.add_parser(name, help=what, description=what)
        v.add_argument("config", help="the node's config file")
        v.add_argument("server", nargs="?" if name == "status" else None, metavar="SERVER",
                       help="the [sftp.NAME] server" + (" (default: every one)" if name == "status" else ""))
        if name in ("rotate", "rollback"):
            v.add_argument("--dry-run", action="store_true", help="log in and check, change nothing")
            v.add_argument("--no-check", action="store_true",
                           help="switch without logging in first (the server cannot be reached from here)")
        v.set_defaults(func=guarded(func), certs_dir=None, node=None)

    def no_step(args: argparse.Namespace) -> int:
        sk.print_help()
        return 64

    sk.set_defaults(func=no_step)

    def no_verb(args: argparse.Namespace) -> int:
        p.print_help()
        return 64

    p.set_defaults(func=no_verb)


_INSTALL_HELP = """\
Check each FILE and install it; failures do not stop the others, and a summary ends the run.

  jgw certs install CONFIG issued/*.pem               this node's certificates -> staging/
  jgw certs install CONFIG --peer city-b city-b/*     a peer's certificates -> peers/city-b/
  jgw certs install CONFIG --crl ca.crl               a CA's new CRL -> trust/crls/
  jgw certs install CONFIG --anchor new-root.pem      a new trust anchor -> trust/anchors/
  jgw certs install --certs-dir DIR --node ID FILE... without a config file

Checks: chain to a trust anchor, CRL, purpose (key usage), key match, validity, node id in the
subjectAltName. Node certificates are only staged: jgw certs rotate makes them live.
"""

_ROTATE_HELP = """\
Validate the staged generation fully (every slot: chain, CRL, purpose, key match and mode, validity,
node id; optionally the brokers' acceptance of the new TLS certificate), archive it as the next
generation, keep the current one as 'previous', switch 'live' in one atomic rename, then send SIGHUP
to the daemon, which loads the new material off to the side and switches over (or keeps the old one
and logs why). An interrupted earlier run is repaired first. --dry-run: simulated rotation.
"""

_ROLLBACK_HELP = """\
Check that the previous generation is still usable, then swap 'live' and 'previous' atomically and
send SIGHUP to the daemon. The generation rolled away from stays 'previous' (its decryption key keeps
opening messages already encrypted to it). --dry-run: simulated rollback.
"""


_SSH_KEY_HELP = """\
jgw logs in to each [sftp.NAME] server with its own key (client_key, in the certs directory). Rotate
it without a gap:

  jgw certs ssh-key new CONFIG SERVER       stage a new key (CLIENT_KEY.new); prints its public line
      the server's administrators add that line to the account's authorized_keys
  jgw certs ssh-key rotate CONFIG SERVER    log in with the staged key; only if the server takes it,
                                            make it live (the old key stays as CLIENT_KEY.previous)
      the administrators remove the old line; sessions already open are not affected
  jgw certs ssh-key rollback CONFIG SERVER  log in with the previous key, then make it live again
  jgw certs ssh-key status CONFIG           fingerprints of every server's keys

The daemon reads the key at each new connection: no reload, no session dropped. Exit codes: 0 done;
1 status found a live key missing or refused; 64 unknown server; 66 nothing staged / no previous key;
69 the server cannot be reached (nothing changed); 75 another certs command holds the lock; 77 a key
readable by others; 78 the server refuses the key or its host key is not the pinned one (nothing
changed).
"""


def _validator(t: Target) -> Callable[[Path], object]:
    def validate(directory: Path) -> object:
        moment = now()
        trust = TrustStore.load(CertsDir(t.certs_dir).trust, moment)
        return load_generation(directory, t.node_id, trust, at=moment)
    return validate


def cmd_install(args: argparse.Namespace) -> int:
    if args.certs_dir and args.node and args.config:
        # with --certs-dir and --node no config is read, so the first positional is a FILE too
        args.files.insert(0, Path(args.config))
        args.config = None
    t = target(args, [*args.files, *([args.key] if args.key else [])])
    cd = CertsDir(t.certs_dir)
    done: list[Installed] = []
    failed: list[tuple[Path, JgwError]] = []
    files = sorted(args.files, key=lambda p: p.suffix == ".json")  # certificates before key statements
    with changing(cd, dry_run=args.dry_run) as repaired:
        for line in repaired:
            print(line if args.dry_run else f"repaired: {line}")
        for path in files:
            try:
                if args.crl:
                    done.append(install_crl(cd, path, now(), dry_run=args.dry_run))
                elif args.anchor:
                    done.append(install_anchor(cd, path, now(), dry_run=args.dry_run))
                elif args.peer:
                    done.append(install_peer_file(cd, args.peer, path, now(), slot_name=args.purpose,
                                                  dry_run=args.dry_run))
                else:
                    done.append(install_node_certificate(cd, t.node_id, path, now(), slot_name=args.purpose,
                                                         key_file=args.key, dry_run=args.dry_run))
            except JgwError as err:
                failed.append((path, err))
    for item in done:
        for line in item.lines:
            print(f"{item.source}: {line}")
    for path, error in failed:
        print(f"{path}: FAILED: {error}", file=sys.stderr)
    verb = "checked (simulated, nothing written)" if args.dry_run else "installed"
    print(f"{len(done)} {verb}, {len(failed)} failed")
    if not failed and not args.dry_run and not (args.crl or args.anchor or args.peer):
        print("next: jgw certs status, then jgw certs rotate")
    elif not failed and not args.dry_run:
        print("next: reload the daemon so it picks this up (systemctl reload jgw)")
    return failed[0][1].exit_code if failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    t = target(args)
    report = collect(t.certs_dir, t.node_id, now(), warn=dt.timedelta(days=args.warn_days),
                     crl_warn=dt.timedelta(hours=args.crl_warn_hours))
    if args.json:
        print(json.dumps(report.as_json(), ensure_ascii=False, indent=2))
    else:
        print(render(report))
    return 1 if report.failed else 0


def _check_brokers(t: Target, staged: Path) -> list[str]:
    """Log in to each TLS broker of the config with the staged TLS identity (EXTERNAL)."""
    if t.config is None:
        raise UsageError("--check-brokers needs the config file (it names the brokers)")
    lines = []
    cd = CertsDir(t.certs_dir)
    trust = TrustStore.load(cd.trust, now())
    for broker in t.config.brokers.values():
        if broker.tls is None:
            continue
        node_files = TlsFiles(cert=staged / "tls-client.pem", key=staged / "tls-client.key",
                              cafiles=tuple(ca.path for ca in trust.cas if ca.anchor),
                              crlfiles=tuple(c.path for c in trust.crls))
        ctx = for_broker(node_files, broker.tls).client_context()
        for url in broker.urls:
            parts = urlsplit(url)
            host = parts.hostname or "localhost"
            port = parts.port or 5671
            vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"  # as the daemon logs in
            check_login(host, port, ctx, server_hostname=broker.tls.server_hostname or host, vhost=vhost)
            lines.append(f"broker {broker.name} ({host}:{port}) accepts the new TLS certificate")
    return lines


def _report(out: Outcome, t: Target, args: argparse.Namespace) -> int:
    label = f"simulated {out.action}" if out.simulated else out.action
    for line in out.lines:
        print(f"{label}: {line}")
    if out.simulated:
        print(f"{label}: nothing changed")
        return 0
    if args.no_signal:
        print("daemon not signalled (--no-signal): reload it yourself (systemctl reload jgw)")
    elif t.state_dir is None:
        print("daemon not signalled: no state directory known (give the config or --state-dir); "
              "reload it yourself (systemctl reload jgw)")
    else:
        print(signal_daemon(t.state_dir / PID_FILE))
    print("next: jgw certs status; check the daemon's log and jgw_reloads_total{result=\"success\"}")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    t = target(args)
    cd = CertsDir(t.certs_dir)
    validate = _validator(t)
    pre: list[str] = []

    def full_check(directory: Path) -> object:
        result = validate(directory)
        if t.state_dir is not None:  # the archived copies will belong to us
            check_daemon_can_read(t.state_dir / PID_FILE, {os.geteuid()})
        if args.check_brokers:
            pre.extend(_check_brokers(t, directory))
        return result

    out = rotate(cd, full_check, dry_run=args.dry_run)
    out.lines[:0] = pre
    return _report(out, t, args)


def cmd_rollback(args: argparse.Namespace) -> int:
    t = target(args)
    cd = CertsDir(t.certs_dir)
    validate = _validator(t)
    pre: list[str] = []

    def full_check(directory: Path) -> object:
        result = validate(directory)
        if t.state_dir is not None:
            check_daemon_can_read(t.state_dir / PID_FILE, {p.stat().st_uid for p in directory.glob("*.key")})
        if args.check_brokers:
            pre.extend(_check_brokers(t, directory))
        return result

    out = rollback(cd, full_check, dry_run=args.dry_run)
    out.lines[:0] = pre
    return _report(out, t, args)


def cmd_export(args: argparse.Namespace) -> int:
    t = target(args)
    cd = CertsDir(t.certs_dir)
    source = cd.staging if args.staging else cd.live_dir()
    if not source.is_dir():
        raise NoInputError(f"{source}: nothing staged")
    _validator(t)(source)
    copied = export_public(source, args.out, signing_only=args.staging)
    for path in copied:
        print(f"wrote {path}")
    what = "staged signing certificates" if args.staging else f"public material ({source.name})"
    print(f"{what} of {t.node_id}; at each peer: jgw certs install CONFIG --peer {t.node_id} {args.out}/*, "
          f"then systemctl reload jgw")
    if args.staging:
        print("after jgw certs rotate, export again (without --staging) for the new encryption certificate")
    return 0


# ---------------------------------------------------------------------------- SFTP client keys

def _sftp_servers(args: argparse.Namespace) -> tuple[Target, list[SftpServer]]:
    t = target(args)
    assert t.config is not None  # the config argument is required for these verbs
    servers = t.config.files.sftp
    if args.server is None:
        return t, [servers[name] for name in sorted(servers)]
    if args.server not in servers:
        known = ", ".join(sorted(servers)) or "none"
        raise UsageError(f"{t.config.file}: no [sftp.{args.server}] server (configured: {known})")
    return t, [servers[args.server]]


def _prove(server: SftpServer, key: Path, what: str) -> str:
    """Log in to ``server`` with ``key`` and open SFTP, as the daemon does; the line to show. Refuses
    (69, 78) when the server cannot be reached or does not take the key: nothing is changed then."""
    link = SftpLink(SftpPeer(server.host, server.port, server.user, key, server.known_hosts,
                             connect_timeout=server.connect_timeout))

    async def attempt() -> FileError | None:
        try:
            await link.sftp()
        except FileError as exc:
            return exc
        finally:
            await link.reset()
        return None

    failed = asyncio.run(attempt())
    if failed is None:
        return f"{server.where} accepts the {what} key"
    if failed.reason == "auth-refused":
        raise ConfigError(str(key), f"sftp.{server.name}",
                          f"{server.where} does not accept the {what} key yet: add {key}.pub (or the line "
                          f"jgw certs ssh-key new printed) to the account's authorized_keys; nothing changed")
    if failed.transient:
        raise UnavailableError(f"{server.where}: cannot log in to check the {what} key ({failed}); nothing "
                               f"changed (--no-check switches without the check)")
    raise ConfigError(str(key), f"sftp.{server.name}", f"{failed}; nothing changed")


def cmd_ssh_key_new(args: argparse.Namespace) -> int:
    t, (server,) = _sftp_servers(args)
    files = KeyFiles(server.client_key)
    with CertsDir(t.certs_dir).locked():
        staged, made = clientkey.stage(files, f"jgw-{t.node_id}-{server.name}-{now():%Y%m%d}")
        if made:
            record(CertsDir(t.certs_dir), f"ssh-key new: sftp.{server.name} {staged.fingerprint}")
    print(f"{'staged' if made else 'already staged (not replaced)'}: {staged.path} {staged.fingerprint}")
    print(f"add this line to the authorized_keys of {server.user} at {server.host}:{server.port}:")
    print(staged.public_line)
    print(f"next: jgw certs ssh-key rotate {t.config.file if t.config else 'CONFIG'} {server.name}")
    return 0


def _switch(args: argparse.Namespace, verb: str) -> int:
    t, (server,) = _sftp_servers(args)
    files = KeyFiles(server.client_key)
    cd = CertsDir(t.certs_dir)
    label = f"simulated ssh-key {verb}" if args.dry_run else f"ssh-key {verb}"
    with cd.locked():
        candidate = files.staged if verb == "rotate" else files.previous
        if not candidate.exists():
            raise NoInputError(f"{candidate}: " + ("no key staged (jgw certs ssh-key new first)" if verb == "rotate"
                                                  else "no previous key to roll back to"))
        clientkey.read_key(candidate)
        if args.no_check:
            print(f"{label}: not checked at {server.where} (--no-check)")
        else:
            print(f"{label}: {_prove(server, candidate, 'staged' if verb == 'rotate' else 'previous')}")
        if args.dry_run:
            print(f"{label}: nothing changed")
            return 0
        old, new = clientkey.switch(files) if verb == "rotate" else clientkey.swap_back(files)
        was = old.fingerprint if old else "none"
        record(cd, f"ssh-key {verb}: sftp.{server.name} {was} -> {new.fingerprint}")
    print(f"{label}: {files.live} is now {new.fingerprint} (was {was}, kept as {files.previous.name})")
    print("the daemon uses it from its next connection to the server; sessions open now are not affected")
    if old is not None:
        print(f"next: the server's administrators remove the line of {was} from authorized_keys")
    return 0


def cmd_ssh_key_rotate(args: argparse.Namespace) -> int:
    return _switch(args, "rotate")


def cmd_ssh_key_rollback(args: argparse.Namespace) -> int:
    return _switch(args, "rollback")


def cmd_ssh_key_status(args: argparse.Namespace) -> int:
    t, servers = _sftp_servers(args)
    if not servers:
        print(f"{t.config.file if t.config else 'the config'}: no [sftp.NAME] servers")
        return 0
    worst = 0
    for server in servers:
        files = KeyFiles(server.client_key)
        print(f"sftp.{server.name} ({server.where})")
        for what, path, required in (("live", files.live, True), ("staged", files.staged, False),
                                     ("previous", files.previous, False)):
            if not path.exists() and not required:
                continue
            try:
                key = clientkey.info(path)
                age = (now() - dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC)).days
                print(f"  {what:<9} {key.fingerprint}  {path}  ({age} days old)")
            except JgwError as exc:
                print(f"  {what:<9} REFUSED  {exc}")
                worst = 1 if required else worst
    return worst
