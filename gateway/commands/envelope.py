"""``jgw envelope inspect|verify|open|seal``: sealed envelopes by hand, for operators and auditors.

inspect  prints the signed header and sizes; needs no key and checks nothing cryptographic.
verify   checks signatures, the batch proof and the sender's certificate chain at the signed
         created-at (or ``--at``); needs no private key.
open     verify, then decrypt with this node's key and write the payload; the replay window is
         checked only with ``--window`` (an auditor opening a years-old message passes none).
seal     makes one envelope (a batch of one) from a file.

Keys and certificates are named by file (``--sign-key``, ``--ca``, ``--peer NODE=FILE``, ...), or,
for verify and open, taken from a node's certificates directory with ``--certs DIR --node ID``
(its anchors, CRLs, peers and live/previous decryption keys, loaded as the daemon loads them).

Security: reads the envelope (hostile) and named key files; private key files must be 0600. Prints
header fields (ids, names, digests, sizes), never payload bytes unless ``open --out -`` asks.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config import NAME_RE
from gateway.envelope import codec, keyfiles
from gateway.envelope.errors import REASONS
from gateway.envelope.inner import Contents
from gateway.envelope.opener import Opener, OpenPolicy
from gateway.envelope.sealer import Sealer, SealItem
from gateway.errors import DataError, NoInputError, UsageError
from gateway.ids import new_message_id
from gateway.keyring import SUITE_NAMES, CaTrust, Keyring, PeerKeys
from gateway.options import parse_duration
from gateway.pki.material import load_node_material

DESCRIPTION = """\
sealed envelopes by hand, for operators and auditors:

  inspect  print the signed header and sizes; needs no key, checks nothing cryptographic
  verify   check the signatures, the batch proof and the sender's certificate chain at the
           signed created-at; needs no private key
  open     verify, then decrypt with this node's key and write the payload; the replay window
           is checked only with --window (an auditor opening a years-old message gives none)
  seal     make one envelope (a batch of one) from a file

keys and certificates are named by file: --sign-key, --ca, --peer NODE=FILE, --key, ...
or, for verify and open, come from a node's certificates directory: --certs DIR --node ID
"""

EXIT_CODES = "\n".join(f"  {code:>3}  {reason:<22} {meaning}" for reason, (meaning, code) in
                       sorted(REASONS.items(), key=lambda r: r[1][1]))
EPILOG = f"""exit codes (which check failed):
    0  ok
{EXIT_CODES}
   64  usage          66  a named file is missing     77  a private key file is not 0600
   78  key material that does not fit: a key or certificate file that is not what it should
       be, key and certificate differ, an ML-KEM key without its X25519 key, a missing peer key,
       a certificate that does not name its node
"""

MAX_ENVELOPE_FILE = 256 * 1024 * 1024


def register(sub: Any) -> None:
    parser = sub.add_parser("envelope", help="inspect, verify, open or seal an envelope by hand",
                            description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    verbs = parser.add_subparsers(dest="envelope_command", metavar="VERB", required=True)

    p = verbs.add_parser("inspect", help="print the signed header (no key needed, nothing verified)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("file", type=Path, help="envelope file ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of text")
    p.set_defaults(func=cmd_inspect)

    p = verbs.add_parser("verify", help="check signatures, batch proof and certificate chain (no key)",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("file", type=Path, help="envelope file ('-' for stdin)")
    _trust_args(p)
    p.add_argument("--node", help="with --certs: the node whose certificates directory it is")
    p.set_defaults(func=cmd_verify)

    p = verbs.add_parser("open", help="verify, then decrypt with this node's key",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("file", type=Path, help="envelope file ('-' for stdin)")
    _trust_args(p)
    p.add_argument("--node", required=True, help="this node's id (must be a recipient)")
    p.add_argument("--key", type=Path, action="append", default=[], metavar="FILE",
                   help="decryption key file (0600); repeat for previous generations; a pq-hybrid key is its "
                        "two files (encryption-mlkem768.key, encryption-x25519.key) or one file holding both")
    p.add_argument("--window", metavar="DURATION", help="also check created-at is within DURATION of --at")
    p.add_argument("--at", metavar="TIME", help="ISO 8601 time to judge the window at (default: now)")
    p.add_argument("--skew", metavar="DURATION", default="5m", help="clock-skew allowance (default 5m)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE",
                   help="write the payload to this new file, mode 0600 ('-': stdout); every output is "
                        "checked before any is written, and never overwrites")
    p.add_argument("--meta", type=Path, metavar="FILE", help="write properties and headers here as JSON")
    p.set_defaults(func=cmd_open)

    p = verbs.add_parser("seal", help="seal one payload file for named recipients",
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("--node", required=True, help="this node's id (the signed sender)")
    p.add_argument("--route", required=True, help="route name to sign into the header")
    p.add_argument("--suite", choices=SUITE_NAMES, default="default")
    p.add_argument("--sign-key", type=Path, required=True, metavar="FILE", help="EC P-256 signing key (0600)")
    p.add_argument("--sign-cert", type=Path, required=True, metavar="FILE")
    p.add_argument("--mldsa-key", type=Path, metavar="FILE", help="ML-DSA-65 signing key (pq-hybrid)")
    p.add_argument("--mldsa-cert", type=Path, metavar="FILE")
    p.add_argument("--to", action="append", required=True, metavar="NODE=FILE",
                   help="recipient and its public material: a PEM file, its key statement "
                        "(encryption-hybrid.json, with the signing certificates that signed it) or its peer "
                        "directory (peers/ID/); repeat per file and per recipient")
    p.add_argument("--in", dest="input", type=Path, required=True, metavar="FILE",
                   help="payload file ('-': stdin)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="envelope file to write")
    p.add_argument("--message-id", help="message id (default: a new UUID)")
    p.add_argument("--content-type")
    p.add_argument("--correlation-id")
    p.add_argument("--header", action="append", default=[], metavar="KEY=VALUE", help="a text header")
    p.set_defaults(func=cmd_seal)


def _trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--certs", type=Path, metavar="DIR",
                   help="a node's certificates directory (node.certs_dir): trust, peers and its own keys, "
                        "as the daemon loads them; with --node, instead of --ca/--intermediate/--crl/--peer/--key")
    p.add_argument("--ca", type=Path, action="append", default=[], metavar="FILE",
                   help="trust anchor certificate(s); repeat as needed")
    p.add_argument("--intermediate", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument("--crl", type=Path, action="append", default=[], metavar="FILE")
    p.add_argument("--peer", action="append", default=[], metavar="NODE=FILE",
                   help="a sender's signing certificate(s): a PEM file or its peer directory (peers/ID/); "
                        "repeat per file and per node")
    p.add_argument("--sender", action="append", default=[], metavar="NODE",
                   help="only accept these senders (default: any --peer)")
    p.add_argument("--route", action="append", default=[], metavar="NAME",
                   help="only accept these signed route names")
    p.add_argument("--suite", action="append", default=[], choices=SUITE_NAMES,
                   help="only accept these suites")


# -- helpers ---------------------------------------------------------------------------------------


def _read_envelope(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read(MAX_ENVELOPE_FILE + 1)
    try:
        if path.stat().st_size > MAX_ENVELOPE_FILE:
            raise DataError(f"{path}: larger than {MAX_ENVELOPE_FILE} bytes; not an envelope")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise NoInputError(f"{path}: file not found") from exc
    except OSError as exc:
        raise NoInputError(f"{path}: cannot read: {exc.strerror}") from exc


def _node_file(text: str, option: str) -> tuple[str, Path]:
    node, sep, file = text.partition("=")
    if not sep or not NAME_RE.match(node) or not file:
        raise UsageError(f"{option} {text!r}: expected NODE=FILE with a node id matching {NAME_RE.pattern}")
    return node, Path(file)


def _peers(specs: Sequence[str], option: str) -> list[PeerKeys]:
    files: dict[str, list[Path]] = {}
    for spec in specs:
        node, path = _node_file(spec, option)
        files.setdefault(node, []).append(path)
    return [keyfiles.peer_keys(node, paths) for node, paths in files.items()]


def _at(args: argparse.Namespace) -> float:
    if not args.at:
        return time.time()
    try:
        when = dt.datetime.fromisoformat(args.at)
    except ValueError as exc:
        raise UsageError(f"--at {args.at!r}: expected an ISO 8601 time such as "
                         "2031-04-01T09:00:00+09:00") from exc
    if when.tzinfo is None:
        raise UsageError(f"--at {args.at!r}: give a UTC offset (e.g. +09:00 or Z)")
    return when.timestamp()


def _duration(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def _verify_keyring(args: argparse.Namespace, node_id: str | None, keys: Sequence[Path] = ()) -> Keyring:
    if args.certs is not None:
        named = [f"--{o}" for o in ("ca", "intermediate", "crl", "peer") if getattr(args, o)]
        named += ["--key"] if keys else []
        if named:
            raise UsageError(f"--certs takes trust, peers and keys from {args.certs}; drop {', '.join(named)}")
        if node_id is None:
            raise UsageError("--certs needs --node: the node whose certificates directory it is")
        material = load_node_material(args.certs, node_id, dt.datetime.now(dt.UTC))
        return material.keyring
    if not args.ca:
        raise UsageError("give --ca FILE (and --peer NODE=FILE), or --certs DIR --node ID")
    trust = CaTrust(keyfiles.load_certificates(args.ca), keyfiles.load_certificates(args.intermediate),
                    keyfiles.load_crls(args.crl))
    decryption = keyfiles.decryption_keys(keys)
    return Keyring.build(node_id or "auditor", None, trust, decryption, _peers(args.peer, "--peer"))


def _policy(args: argparse.Namespace, window: float | None = None, skew: float = 300.0) -> OpenPolicy:
    return OpenPolicy(senders=frozenset(args.sender) or None, suites=frozenset(args.suite) or None,
                      routes=frozenset(args.route) or None, replay_window=window, clock_skew=skew)


def _header_dict(env: codec.Envelope) -> dict[str, Any]:
    h = env.header
    block = env.signature_block
    return {
        "version": codec.VERSION, "suite": env.suite.name, "message_id": h.message_id, "route": h.route,
        "sender": h.sender, "created_at": h.created_at.isoformat().replace("+00:00", "Z"),
        "recipients": [{"node": r.node_id, "key_id": r.key_id.hex()} for r in h.recipients],
        "signing_key_ids": [k.hex() for k in h.signing_key_ids], "signatures": list(env.suite.signatures),
        "epoch_id": h.epoch_id.hex(), "payload_digest": "sha256:" + h.payload_digest.hex(),
        "content_type": h.content_type, "correlation_id": h.correlation_id,
        "order_key": h.order_key.hex() if h.order_key is not None else None,
        "batch": {"leaf": block.leaf_index, "size": block.tree_size, "root": block.root.hex(),
                  "proof_hashes": len(block.path)},
        "sizes": {"envelope": len(env.encode()), "key_block_entries": len(env.key_block),
                  "payload": len(env.payload)},
    }


def _print_fields(fields: dict[str, Any], out: Any = None) -> None:
    out = out or sys.stdout
    for key, value in fields.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            value = ", ".join(" ".join(f"{k}={v}" for k, v in item.items()) for item in value)
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, dict):
            value = " ".join(f"{k}={v}" for k, v in value.items())
        print(f"{key.replace('_', '-')}: {'-' if value is None else value}", file=out)


# -- verbs -----------------------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    env = codec.parse(_read_envelope(args.file))
    fields = _header_dict(env)
    if args.json:
        print(json.dumps(fields, ensure_ascii=False, indent=2))
    else:
        _print_fields(fields)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.node is not None and not NAME_RE.match(args.node):
        raise UsageError(f"--node {args.node!r}: not a node id")
    keyring = _verify_keyring(args, args.node if args.certs is not None else "auditor")
    verified = Opener(_policy(args)).verify(_read_envelope(args.file), keyring)
    Opener(_policy(args)).authorise(verified.envelope)
    h = verified.envelope.header
    block = verified.envelope.signature_block
    print(f"ok: {' + '.join(verified.envelope.suite.signatures)} signature(s) by {h.sender} verify over "
          f"batch root (leaf {block.leaf_index} of {block.tree_size}); certificate(s) trusted at "
          f"{h.created_at.isoformat().replace('+00:00', 'Z')}")
    for cert in verified.certificates:
        print(f"  signer: {cert.subject.rfc4514_string()} serial {cert.serial_number:x} "
              f"valid {cert.not_valid_before_utc:%Y-%m-%d}..{cert.not_valid_after_utc:%Y-%m-%d}")
    return 0


def cmd_open(args: argparse.Namespace) -> int:
    if not NAME_RE.match(args.node):
        raise UsageError(f"--node {args.node!r}: not a node id")
    if args.certs is None and not args.key:
        raise UsageError("give --key FILE (this node's decryption key), or --certs DIR")
    outputs = _new_outputs([("--out", args.out), ("--meta", args.meta)])
    keyring = _verify_keyring(args, args.node, args.key or ())
    skew = _duration(args.skew, "--skew")
    opener = Opener(_policy(args, _duration(args.window, "--window"), skew if skew is not None else 300.0))
    opened = opener.open(_read_envelope(args.file), keyring, _at(args))
    c = opened.contents
    data = {"--out": c.body}
    if args.meta:
        data["--meta"] = json.dumps(_meta(c), ensure_ascii=False, indent=2).encode("utf-8") + b"\n"
    _write_new_files([(path, data[option]) for option, path in outputs])
    if _is_stdout(args.out):
        sys.stdout.buffer.write(c.body)
        sys.stdout.buffer.flush()
    h = opened.envelope.header
    print(f"ok: opened {h.message_id} from {h.sender} ({len(c.body)} bytes, {len(c.headers)} headers) "
          f"with key {opened.recipient_key_id}", file=sys.stderr)
    return 0


def cmd_seal(args: argparse.Namespace) -> int:
    if not NAME_RE.match(args.node) or not NAME_RE.match(args.route):
        raise UsageError("--node and --route must be names matching " + NAME_RE.pattern)
    if _is_stdout(args.out):
        raise UsageError("seal --out names a file; an envelope is not written to stdout")
    outputs = _new_outputs([("--out", args.out)])
    identity = keyfiles.signing_identity(args.sign_key, args.sign_cert, args.mldsa_key, args.mldsa_cert)
    peers = _peers(args.to, "--to")
    keyring = Keyring.build(args.node, identity, CaTrust([]), (), peers)
    headers: dict[str, Any] = {}
    for spec in args.header:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {spec!r}: expected KEY=VALUE")
        headers[key] = value
    if str(args.input) == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            body = args.input.read_bytes()
        except FileNotFoundError as exc:
            raise NoInputError(f"{args.input}: file not found") from exc
    contents = Contents(body, headers, content_type=args.content_type, correlation_id=args.correlation_id)
    sealer = Sealer(suite=args.suite, route=args.route, recipients=[p.node_id for p in peers])
    (result,) = sealer.seal([SealItem(args.message_id or new_message_id(), contents)], keyring, time.time())
    if not isinstance(result, bytes):
        raise result
    _write_new_files([(path, result) for _, path in outputs])
    print(f"ok: sealed {len(body)} bytes for {', '.join(p.node_id for p in peers)} into {args.out} "
          f"({len(result)} bytes, suite {args.suite})", file=sys.stderr)
    return 0


def _is_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == "-"


def _new_outputs(named: Sequence[tuple[str, Path | None]]) -> list[tuple[str, Path]]:
    """Check every output file before anything is decrypted or written: each must be new, in an
    existing directory, and named once. Returns the (option, path) pairs to write ('-' left out)."""
    out: list[tuple[str, Path]] = []
    seen: dict[tuple[Path, str], str] = {}
    for option, path in named:
        if path is None or _is_stdout(path):
            continue
        if os.path.lexists(path):
            raise UsageError(f"{option} {path}: exists; refusing to overwrite (nothing was written)")
        parent = path.parent
        if not parent.is_dir():
            raise NoInputError(f"{option} {path}: directory {parent} does not exist (nothing was written)")
        where = (parent.resolve(), path.name)
        if where in seen:
            raise UsageError(f"{option} and {seen[where]} name the same file {path}")
        seen[where] = option
        out.append((option, path))
    return out


def _write_new_files(files: Sequence[tuple[Path, bytes]]) -> None:
    """Write each file complete or not at all, readable by its owner only (a payload may be personal
    data), never over an existing file: a 0600 temporary file in the same directory, fsync, then a
    hard link to the final name (which fails if the name appeared meanwhile), so the name shows only
    a complete file. If any file cannot be placed, those already placed are removed again."""
    temps: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for path, data in files:
            temp = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                raise NoInputError(f"{path}: cannot create: {exc.strerror}") from exc
            temps.append((temp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for temp, path in temps:
            try:
                os.link(temp, path)
            except FileExistsError as exc:
                raise UsageError(f"{path}: appeared while opening; refusing to overwrite "
                                 "(nothing was written)") from exc
            except OSError as exc:
                raise NoInputError(f"{path}: cannot create: {exc.strerror}") from exc
            placed.append(path)
        for directory in {path.parent for _, path in temps}:
            _fsync_dir(directory)
    except BaseException:
        for path in placed:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    finally:
        for temp, _ in temps:
            with contextlib.suppress(OSError):
                temp.unlink()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _meta(c: Contents) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return {"base64": base64.b64encode(value).decode("ascii")}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        return {type(value).__name__: str(value)}

    return {"content_type": c.content_type, "content_encoding": c.content_encoding,
            "correlation_id": c.correlation_id, "type": c.type, "app_id": c.app_id, "timestamp": c.timestamp,
            "headers": plain(dict(c.headers))}
