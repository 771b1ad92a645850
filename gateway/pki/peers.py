"""Peers' public material: whose signatures we accept and to whom we encrypt.

    peers/<node-id>/signing.pem                  required   ECDSA P-256 signing certificate
    peers/<node-id>/encryption.pem               required   EC P-256 encryption certificate (HPKE)
    peers/<node-id>/signing-mldsa65.pem          pq-hybrid  ML-DSA-65 signing certificate
    peers/<node-id>/encryption-hybrid.json       pq-hybrid  hybrid KEM key statement (gateway.pki.hybrid)
    peers/<node-id>/<any of these>.previous.<ext>           the peer's previous generation

Every certificate in ``peers/<node-id>/`` must name that node as its one subjectAltName URI
``urn:jgw:node:<node-id>`` (the binding rule, docs/envelope.md section 9; ``name-mismatch``
otherwise), and the key statement must name it and be signed by those certificates. Current files
must pass every check, or that peer is refused (``load_peers`` raises, or records
it and leaves the peer out, so one peer's expired certificate stops only its own routes). A
previous file that no longer passes (it expired, it was revoked) is left out with a note: it exists
only for the overlap while the peer rotates. Unknown files are refused, so a misnamed certificate
is not silently ignored.

Security: reads certificates that came from other sites; trusts them only through
``TrustStore.verify`` with the peer's node id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import NAME_RE
from gateway.keyring import EncryptionKey, PeerKeys
from gateway.pki import hybrid
from gateway.pki.errors import CertificateError
from gateway.pki.files import read_certificates
from gateway.pki.generation import SLOT_BY_NAME
from gateway.pki.hybrid import HybridPublicKey
from gateway.pki.trust import TrustStore, VerifiedCertificate

PEER_SLOTS: tuple[str, ...] = ("signing", "encryption", "signing-mldsa65")
HYBRID_STEM = hybrid.STATEMENT_FILE.removesuffix(".json")


def peer_file_names() -> set[str]:
    names = set()
    for slot in PEER_SLOTS:
        names |= {f"{slot}.pem", f"{slot}.previous.pem"}
    return names | {hybrid.STATEMENT_FILE, f"{HYBRID_STEM}.previous.json"}


@dataclass(frozen=True)
class PeerMaterial:
    node_id: str
    directory: Path
    current: dict[str, VerifiedCertificate]
    previous: dict[str, VerifiedCertificate]
    hybrid: HybridPublicKey | None = None
    hybrid_previous: HybridPublicKey | None = None
    notes: tuple[str, ...] = field(default=())

    def keys(self) -> PeerKeys:
        """The keyring's view: previous generation first, so the current one is the one encrypted to."""
        signing = [v.cert for gen in (self.previous, self.current) for slot, v in gen.items()
                   if slot != "encryption"]
        encryption: list[EncryptionKey] = []
        for gen, hyb in ((self.previous, self.hybrid_previous), (self.current, self.hybrid)):
            if "encryption" in gen:
                public = gen["encryption"].cert.public_key()
                encryption.append(EncryptionKey.p256(public))  # type: ignore[arg-type]  # slot check: P-256
            if hyb is not None:
                encryption.append(EncryptionKey.hybrid(hyb.mlkem, hyb.x25519))
        return PeerKeys.build(self.node_id, signing, encryption)


def load_peer(directory: Path, trust: TrustStore, *, at: dt.datetime, now: dt.datetime | None = None
              ) -> PeerMaterial:
    node_id = directory.name
    if not NAME_RE.match(node_id):
        raise CertificateError(str(directory), "peer", "layout", f"directory name must be a node id "
                                                                 f"({NAME_RE.pattern})")
    known = peer_file_names()
    for path in sorted(directory.iterdir()):
        if path.name.startswith("."):
            continue
        if path.name not in known:
            raise CertificateError(str(path), "peer", "layout",
                                   f"unknown file; a peer directory holds {', '.join(sorted(known))}")
    notes: list[str] = []
    current: dict[str, VerifiedCertificate] = {}
    previous: dict[str, VerifiedCertificate] = {}
    for slot_name in PEER_SLOTS:
        slot = SLOT_BY_NAME[slot_name]
        for gen, suffix in ((current, ".pem"), (previous, ".previous.pem")):
            path = directory / f"{slot_name}{suffix}"
            if not path.exists():
                if gen is current and slot.required:
                    raise CertificateError(str(path), slot_name, "missing",
                                           f"peer {node_id} needs a {slot_name} certificate")
                continue
            try:
                certs = read_certificates(path, slot_name)
                verified = trust.verify(certs[0], slot.purpose, at=at, now=now, node_id=node_id,
                                        chain=certs[1:], file=str(path))
                if not slot.key_ok(certs[0].public_key()):
                    raise CertificateError(str(path), slot_name, "wrong-purpose",
                                           f"the {slot_name} certificate must carry {slot.key_desc}")
            except CertificateError as err:
                if gen is current:
                    raise
                notes.append(f"peer {node_id}: ignoring {path.name} ({err.code}: {err.reason})")
                continue
            gen[slot_name] = verified
    has_mldsa = "signing-mldsa65" in current
    has_statement = (directory / hybrid.STATEMENT_FILE).exists()
    if has_mldsa != has_statement:
        missing = hybrid.STATEMENT_FILE if has_mldsa else "signing-mldsa65.pem"
        raise CertificateError(str(directory), "pq-hybrid", "layout",
                               f"peer {node_id}: the pq-hybrid material comes all together; "
                               f"{missing} is missing")
    signers = [v.cert for gen in (current, previous) for v in gen.values()]
    hyb = hyb_prev = None
    if has_statement:
        hyb = hybrid.read_statement(directory / hybrid.STATEMENT_FILE, node_id, signers)
    prev_path = directory / f"{HYBRID_STEM}.previous.json"
    if prev_path.exists():
        try:
            hyb_prev = hybrid.read_statement(prev_path, node_id, signers)
        except CertificateError as err:
            notes.append(f"peer {node_id}: ignoring {prev_path.name} ({err.code}: {err.reason})")
    return PeerMaterial(node_id, directory, current, previous, hyb, hyb_prev, tuple(notes))


def load_peers(peers_dir: Path, trust: TrustStore, *, at: dt.datetime, now: dt.datetime | None = None,
               own_id: str | None = None, problems: list[CertificateError] | None = None
               ) -> dict[str, PeerMaterial]:
    """Every peer. A peer whose current material is refused raises, or, when ``problems`` is a list,
    is recorded there and left out (its routes fail; the rest of the node keeps working)."""
    if not peers_dir.is_dir():
        return {}
    peers: dict[str, PeerMaterial] = {}
    for directory in sorted(p for p in peers_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            if directory.name == own_id:
                raise CertificateError(str(directory), "peer", "layout",
                                       "this node's own id; it is not a peer")
            peers[directory.name] = load_peer(directory, trust, at=at, now=now)
        except CertificateError as err:
            if problems is None:
                raise
            problems.append(err)
    return peers
