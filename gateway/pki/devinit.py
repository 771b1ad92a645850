"""``jgw pki init-dev``: a complete, throw-away PKI for tests, the demo and rotation rehearsals.

    DIR/DEVELOPMENT-ONLY.txt
    DIR/ca/           the dev CA: ca.pem, ca.key (unencrypted!), crl.pem, state.json
    DIR/broker/       a RabbitMQ server certificate (CN and SAN from --broker-host), its key, ca.pem
    DIR/<node-id>/    a complete certs directory per node (see certs/README.md): anchors, CRL, the
                      other nodes as peers, and generation gen-0001 live

Each node's generation goes through the same path staff use (staging, full validation, rotation),
so what init-dev makes is exactly what the daemon will accept.

Security: DEVELOPMENT ONLY; writes private keys 0600 under DIR. Refuses to write into a directory
that is not empty.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.config import NAME_RE
from gateway.errors import UsageError
from gateway.pki import hybrid
from gateway.pki.devca import DEV_NOTICE, DevCa, new_key
from gateway.pki.files import pem_certificates, write_atomic, write_private_key
from gateway.pki.generation import SLOTS, load_generation
from gateway.pki.install import export_public
from gateway.pki.layout import CertsDir, cert_name, key_name
from gateway.pki.purpose import Purpose
from gateway.pki.rotation import rotate
from gateway.pki.trust import TrustStore

ANCHOR_FILE = "dev-ca.pem"


@dataclass
class DevPki:
    directory: Path
    ca: DevCa
    nodes: dict[str, Path] = field(default_factory=dict)
    broker_cert: Path = Path()
    broker_key: Path = Path()
    broker_ca: Path = Path()


def init_dev(directory: Path, node_ids: Sequence[str], now: dt.datetime, *, days: float = 90,
             crl_days: float = 30, broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
             pq_hybrid: bool = True) -> DevPki:
    """Create a dev CA, a broker server certificate and one certs directory per node."""
    for node in node_ids:
        if not NAME_RE.match(node):
            raise UsageError(f"--node {node!r}: a node id must match {NAME_RE.pattern}")
    if len(set(node_ids)) != len(node_ids) or not node_ids:
        raise UsageError("give one or more distinct --node ids")
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory}: exists and is not empty; init-dev only writes into a new directory")
    directory.mkdir(parents=True, exist_ok=True, mode=0o755)
    (directory / "DEVELOPMENT-ONLY.txt").write_text(DEV_NOTICE)
    ca = DevCa.create(directory / "ca", now)
    ca.write_crl(now, next_update=now + dt.timedelta(days=crl_days))
    pki = DevPki(directory, ca)

    broker = directory / "broker"
    broker.mkdir(mode=0o755)
    server_key = new_key()
    server = ca.issue(server_key.public_key(), Purpose.TLS_SERVER, now, cn=broker_hosts[0],
                      hosts=broker_hosts, days=days)
    pki.broker_key, pki.broker_cert = broker / "server.key", broker / "server.pem"
    pki.broker_ca = broker / "ca.pem"
    write_private_key(pki.broker_key, server_key)
    write_atomic(pki.broker_cert, pem_certificates([server]))
    shutil.copyfile(ca.cert_path, pki.broker_ca)

    for node in node_ids:
        pki.nodes[node] = make_node(directory / node, node, ca, now, days=days, pq_hybrid=pq_hybrid)
    for node in node_ids:
        for other in node_ids:
            if other != node:
                export_public(CertsDir(pki.nodes[other]).live_dir(), pki.nodes[node] / "peers" / other)
    return pki


def install_trust(cd: CertsDir, ca: DevCa) -> None:
    cd.anchors.mkdir(parents=True, exist_ok=True)
    cd.crls.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert_path, cd.anchors / ANCHOR_FILE)
    shutil.copyfile(ca.crl_path, cd.crls / ANCHOR_FILE)


def stage_generation(staging: Path, node_id: str, ca: DevCa, now: dt.datetime, *, days: float = 90,
                     pq_hybrid: bool = True) -> None:
    """Issue a complete generation for ``node_id`` into ``staging`` (fresh keys for every slot)."""
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    keys = {}
    for slot in SLOTS:
        if not slot.required and not pq_hybrid:
            continue
        key: ec.EllipticCurvePrivateKey | mldsa.MLDSA65PrivateKey = (
            mldsa.MLDSA65PrivateKey.generate() if slot.name == "signing-mldsa65" else new_key())
        cert = ca.issue(key.public_key(), slot.purpose, now, node_id=node_id, days=days)
        write_private_key(staging / key_name(slot.name), key)
        write_atomic(staging / cert_name(slot.name), pem_certificates([cert]))
        keys[slot.name] = key
    if pq_hybrid:
        ml_key, x_key = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        write_private_key(staging / hybrid.MLKEM_KEY_FILE, ml_key)
        write_private_key(staging / hybrid.X25519_KEY_FILE, x_key)
        sign, ml_sign = keys["signing"], keys["signing-mldsa65"]
        assert isinstance(sign, ec.EllipticCurvePrivateKey) and isinstance(ml_sign, mldsa.MLDSA65PrivateKey)
        statement = hybrid.make_statement(node_id, ml_key.public_key(), x_key.public_key(), sign, ml_sign,
                                          now)
        write_atomic(staging / hybrid.STATEMENT_FILE, statement)


def make_node(root: Path, node_id: str, ca: DevCa, now: dt.datetime, *, days: float = 90,
              pq_hybrid: bool = True) -> Path:
    """A certs directory for ``node_id`` with the dev CA as anchor and gen-0001 live."""
    cd = CertsDir(root)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    install_trust(cd, ca)
    stage_generation(cd.staging, node_id, ca, now, days=days, pq_hybrid=pq_hybrid)
    trust = TrustStore.load(cd.trust, now)
    rotate(cd, lambda d: load_generation(d, node_id, trust, at=now))
    (cd.peers).mkdir(exist_ok=True)
    return root
