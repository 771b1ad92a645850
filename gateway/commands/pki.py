"""``jgw pki csr|hybrid`` for staff, and ``jgw pki init-dev|issue-dev|crl-dev`` for development only.

``csr`` makes a new key (0600, never leaves the machine) and a certificate request for one slot of
this node, in staging; the request goes to the 団体's CA. ``hybrid`` makes or re-signs the pq-hybrid
KEM key statement in staging. The ``*-dev`` verbs run a throw-away CA for tests, the demo and
rotation rehearsals, and say DEVELOPMENT ONLY in everything they print and write.

Security: creates private keys (0600); the dev CA key is unencrypted by design (development only).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from cryptography import x509

from gateway.commands.certs import add_target_arguments, guarded, now, target
from gateway.errors import DataError, NoInputError, UsageError
from gateway.pki.csr import create_csr, create_hybrid
from gateway.pki.devca import DevCa
from gateway.pki.devinit import init_dev
from gateway.pki.files import pem_certificates, read_certificate, write_atomic
from gateway.pki.generation import SLOT_BY_NAME
from gateway.pki.layout import CertsDir
from gateway.pki.rotation import changing

#: the slots every node needs on its first installation (signing-mldsa65 only with suite pq-hybrid)
FIRST_SLOTS = ("tls-client", "signing", "encryption")
DEV_BANNER = "DEVELOPMENT ONLY: throw-away keys and certificates; never use them with real data."


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("pki", help="keys and certificate requests (csr, hybrid); a development CA (*-dev)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    verbs = p.add_subparsers(dest="pki_command", metavar="VERB")

    c = verbs.add_parser("csr", help="new key and certificate request for one slot, in staging",
                         description="Create a new private key (mode 0600, in staging/) and a certificate "
                                     "request (staging/SLOT.csr) naming the node as CN and as subjectAltName "
                                     "URI urn:jgw:node:ID. Send the .csr to the CA; install what it issues "
                                     "with jgw certs install.")
    add_target_arguments(c)
    c.add_argument("--purpose", required=True, choices=tuple(SLOT_BY_NAME), help="which slot")
    c.add_argument("--force", action="store_true", help="replace a new key that is still waiting for its "
                                                        "certificate (its pending request becomes useless)")
    c.set_defaults(func=guarded(cmd_csr))

    h = verbs.add_parser("hybrid", help="make or re-sign the pq-hybrid KEM key statement in staging",
                         description="Sign staging's hybrid KEM public key (ML-KEM-768 + X25519) with "
                                     "staging's signing and signing-mldsa65 keys. Run it after new signing "
                                     "certificates are staged; --new-keys also makes a new KEM key pair.")
    add_target_arguments(h)
    h.add_argument("--new-keys", action="store_true", help="generate a new hybrid KEM key pair")
    h.set_defaults(func=guarded(cmd_hybrid))

    d = verbs.add_parser("init-dev",
                         help="DEVELOPMENT ONLY: a dev CA, a broker certificate and node certs dirs",
                         description="DEVELOPMENT ONLY. Create DIR/ca (a throw-away CA with its CRL), "
                                     "DIR/broker (a RabbitMQ server certificate) and, per --node, DIR/NODE: "
                                     "a complete certs directory with the other nodes as peers.")
    d.add_argument("directory", type=Path, metavar="DIR")
    d.add_argument("--node", action="append", required=True, metavar="ID", help="a node id (repeat)")
    d.add_argument("--days", type=float, default=90, help="certificate lifetime (default %(default)s)")
    d.add_argument("--crl-days", type=float, default=30, help="CRL lifetime (default %(default)s)")
    d.add_argument("--broker-host", action="append", metavar="HOST",
                   help="name or address in the broker certificate (repeat; default localhost, 127.0.0.1)")
    d.add_argument("--no-pq", action="store_true", help="leave out the pq-hybrid suite material")
    d.set_defaults(func=guarded(cmd_init_dev))

    i = verbs.add_parser("issue-dev", help="DEVELOPMENT ONLY: the dev CA signs a request (rehearsals)")
    i.add_argument("ca_dir", type=Path, metavar="CADIR", help="DIR/ca made by init-dev")
    i.add_argument("csr", type=Path, metavar="CSR")
    i.add_argument("--purpose", required=True, choices=tuple(SLOT_BY_NAME))
    i.add_argument("--node", required=True, metavar="ID")
    i.add_argument("--days", type=float, default=90)
    i.add_argument("--out", type=Path, required=True, help="where to write the certificate")
    i.set_defaults(func=guarded(cmd_issue_dev))

    r = verbs.add_parser("crl-dev", help="DEVELOPMENT ONLY: revoke certificates and write a new CRL")
    r.add_argument("ca_dir", type=Path, metavar="CADIR")
    r.add_argument("--revoke", action="append", default=[], type=Path, metavar="CERT",
                   help="a certificate to revoke (repeat)")
    r.add_argument("--reason", default="key_compromise", choices=("unspecified", "key_compromise",
                                                                    "superseded", "cessation_of_operation"))
    r.add_argument("--days", type=float, default=30, help="CRL lifetime (default %(default)s)")
    r.set_defaults(func=guarded(cmd_crl_dev))

    def no_verb(args: argparse.Namespace) -> int:
        p.print_help()
        return 64

    p.set_defaults(func=no_verb)


def cmd_csr(args: argparse.Namespace) -> int:
    t = target(args)
    cd = CertsDir(t.certs_dir)
    with changing(cd) as repaired:
        result = create_csr(cd, t.node_id, args.purpose, force=args.force)
    for line in repaired:
        print(f"repaired: {line}")
    if result.staging_created and result.carried_from:
        print(f"created {cd.staging} from the live generation {result.carried_from} (the other slots carry "
              f"over)")
    elif result.staging_created:
        print(f"created {cd.staging}: there is no live generation yet (a first installation), so nothing "
              f"carries over; make a request for every slot the node uses ({', '.join(FIRST_SLOTS)})")
    print(f"new {args.purpose} key: {result.key_path} (mode 0600, key id {result.key_id}); it never leaves "
          f"this machine")
    print(f"certificate request: {result.csr_path}")
    where = args.config or f"--certs-dir {t.certs_dir} --node {t.node_id}"
    print(f"next: have the CA issue it (profile {args.purpose}, subjectAltName URI "
          f"urn:jgw:node:{t.node_id}), then: jgw certs install {where} ISSUED.pem")
    return 0


def cmd_hybrid(args: argparse.Namespace) -> int:
    t = target(args)
    cd = CertsDir(t.certs_dir)
    with changing(cd) as repaired:
        path = create_hybrid(cd, t.node_id, now(), new_keys=args.new_keys)
    for line in repaired:
        print(f"repaired: {line}")
    print(f"wrote {path}, signed by staging's signing and signing-mldsa65 keys")
    return 0


def cmd_init_dev(args: argparse.Namespace) -> int:
    hosts = tuple(args.broker_host or ("localhost", "127.0.0.1"))
    pki = init_dev(args.directory, args.node, now(), days=args.days, crl_days=args.crl_days,
                   broker_hosts=hosts, pq_hybrid=not args.no_pq)
    print(DEV_BANNER)
    print(f"dev CA:      {pki.ca.directory} (CA key unencrypted; CRL {pki.ca.crl_path.name})")
    print(f"broker:      {pki.broker_cert}, {pki.broker_key} (server certificate for {', '.join(hosts)}), "
          f"CA {pki.broker_ca}")
    for node, path in pki.nodes.items():
        peers = ", ".join(n for n in pki.nodes if n != node) or "-"
        print(f"node {node}: {path} (live gen-0001; peers: {peers})")
    print("RabbitMQ EXTERNAL login uses the TLS certificate's CN, which is the node id: create that user "
          "with rabbitmqctl add_user ID x; rabbitmqctl clear_password ID; "
          "rabbitmqctl set_permissions -p / ID '.*' '.*' '.*'")
    return 0


def cmd_issue_dev(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca_dir)
    try:
        csr = x509.load_pem_x509_csr(args.csr.read_bytes())
    except FileNotFoundError as exc:
        raise NoInputError(f"{args.csr}: file not found") from exc
    except ValueError as exc:
        raise DataError(f"{args.csr}: not a PEM certificate request ({exc})") from exc
    try:
        cert = ca.issue_csr(csr, SLOT_BY_NAME[args.purpose].purpose, now(), node_id=args.node, days=args.days)
    except ValueError as exc:
        raise DataError(f"{args.csr}: {exc}") from exc
    write_atomic(args.out, pem_certificates([cert]))
    print(DEV_BANNER)
    print(f"issued {args.purpose} certificate for {args.node} (serial {cert.serial_number:x}, "
          f"{args.days:g} days): {args.out}")
    return 0


def cmd_crl_dev(args: argparse.Namespace) -> int:
    ca = _open_ca(args.ca_dir)
    moment = now()
    for path in args.revoke:
        cert = read_certificate(path)
        if cert.issuer != ca.cert.subject:
            raise UsageError(f"{path}: not issued by this dev CA")
        ca.revoke(cert.serial_number, args.reason)
        print(f"revoked serial {cert.serial_number:x} ({args.reason})")
    crl = ca.write_crl(moment, next_update=moment + dt.timedelta(days=args.days))
    print(DEV_BANNER)
    print(f"wrote {crl} ({len(ca.revoked)} revoked, next update in {args.days:g} days); install it on each "
          f"node with: jgw certs install CONFIG --crl {crl}")
    return 0


def _open_ca(directory: Path) -> DevCa:
    if not (directory / "state.json").exists():
        raise NoInputError(f"{directory}: not a dev CA made by jgw pki init-dev (no state.json)")
    return DevCa.open(directory)

