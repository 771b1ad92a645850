"""Everything a node needs from its certs directory, loaded and checked in one call.

``load_node_material(certs_dir, node_id, now, overlap=...)`` is what the daemon calls at start and
on SIGHUP (validate off to the side, then swap): it resolves ``live`` (and ``previous``) once to
their immutable ``archive/gen-NNNN`` directories, so a rotation running at the same moment cannot
mix two generations; loads the trust store and refuses an expired or mis-signed CRL; checks every
slot of the live generation and every peer; and returns a frozen ``NodeMaterial`` with

- ``keyring``: the ``gateway.keyring.Keyring`` for the envelope (signing identity of the live
  generation; decryption keys of the live one and, for ``overlap`` after the switch, the previous
  one; peers' keys, their previous generation too while still valid; the CRL-checked trust hook);
- ``tls``: the files for ``gateway.pki.tls.client_context`` (stdlib ``ssl`` for pika);
- ``expiries`` and ``crls``: inputs for ``jgw_certificate_expiry_timestamp_seconds{purpose,subject}``
  and ``jgw_crl_next_update_timestamp_seconds{issuer}``. ``subject`` is a node id or a CA's CN,
  both bounded by configuration.

Any refusal of this node's own material or of its trust store raises ``CertificateError`` (exit 78)
or ``KeyFileModeError`` (exit 77) naming the file and the reason; the caller keeps its old material.
A peer whose current certificates are refused is left out of the keyring and reported in
``peer_problems`` (unless ``strict_peers``): its routes fail, the others keep running.

Security: reads private keys (0600 enforced) and peers' certificates; everything returned has been
verified against the configured anchors with CRLs. Never logs; reprs show ids, not keys.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.config import TlsConfig
from gateway.keyring import DecryptionKey, Keyring, SigningIdentity
from gateway.pki import hybrid
from gateway.pki.errors import CertificateError, os_errors
from gateway.pki.files import key_matches, read_certificates, read_private_key
from gateway.pki.generation import SLOT_BY_NAME, Generation, load_generation
from gateway.pki.keyring_trust import StoreTrust
from gateway.pki.layout import CertsDir, cert_name, key_name
from gateway.pki.peers import PeerMaterial, load_peers
from gateway.pki.tls import TlsFiles, for_broker
from gateway.pki.trust import DEFAULT_CLOCK_SKEW, TrustStore, utc

DEFAULT_OVERLAP = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertificateExpiry:
    """One certificate for the expiry metric. ``role``: own, peer, anchor or intermediate."""

    purpose: str
    subject: str
    not_after: dt.datetime
    role: str


@dataclass(frozen=True)
class CrlInfo:
    issuer: str
    this_update: dt.datetime
    next_update: dt.datetime
    path: Path


@dataclass(frozen=True)
class PreviousKeys:
    """Decryption keys of the previous generation, kept for messages already encrypted to them."""

    generation: str
    until: dt.datetime
    keys: tuple[DecryptionKey, ...] = field(repr=False)


@dataclass(frozen=True)
class NodeMaterial:
    node_id: str
    certs_dir: Path
    loaded_at: dt.datetime
    live: Generation
    previous: PreviousKeys | None
    trust: TrustStore
    peers: dict[str, PeerMaterial]
    keyring: Keyring
    tls: TlsFiles
    expiries: tuple[CertificateExpiry, ...]
    crls: tuple[CrlInfo, ...]
    notes: tuple[str, ...] = ()
    #: Peers left out because their current material was refused (log each at warning level).
    peer_problems: tuple[CertificateError, ...] = ()

    @property
    def generation(self) -> str:
        return self.live.name

    def ssl_context(self, *, cafiles: Sequence[Path] | None = None,
                    crlfiles: Sequence[Path] | None = None) -> ssl.SSLContext:
        """A fresh client context with the live TLS identity (build a new one per reload). By default
        the broker is verified against the node's trust anchors and CRLs; a broker whose CA is
        configured separately (``[brokers.NAME.tls] ca``/``crl``) passes its own files."""
        files = self.tls
        if cafiles is not None or crlfiles is not None:
            files = dataclasses.replace(
                files, cafiles=tuple(cafiles) if cafiles is not None else files.cafiles,
                crlfiles=tuple(crlfiles) if crlfiles is not None else files.crlfiles)
        return files.client_context()

    def tls_files_for(self, tls: TlsConfig) -> TlsFiles:
        """The files for the broker of ``[brokers.NAME.tls]``: the live TLS identity, verified against
        that table's ``ca``/``crl`` when set, else the node's anchors and CRLs."""
        return for_broker(self.tls, tls)

    def ssl_context_for(self, tls: TlsConfig) -> ssl.SSLContext:
        """A fresh client context for that broker (see ``tls_files_for``)."""
        return self.tls_files_for(tls).client_context()

    def __repr__(self) -> str:
        return (f"NodeMaterial(node_id={self.node_id!r}, generation={self.generation!r}, "
                f"previous={self.previous.generation if self.previous else None!r}, "
                f"peers={sorted(self.peers)!r})")


def load_trust(certs_dir: Path, now: dt.datetime, *,
               clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW) -> TrustStore:
    return TrustStore.load(CertsDir(certs_dir).trust, now, clock_skew=clock_skew)


def activated_at(cd: CertsDir) -> dt.datetime:
    """When ``live`` last changed: the time its symlink was made (a rotation or rollback)."""
    return dt.datetime.fromtimestamp(os.lstat(cd.pointer_path("live")).st_mtime, dt.UTC)


def load_node_material(certs_dir: Path, node_id: str, now: dt.datetime, *,
                       overlap: dt.timedelta = DEFAULT_OVERLAP,
                       clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
                       strict_peers: bool = False) -> NodeMaterial:
    """Load and fully validate a node's material as of ``now``. Raises on the first problem with
    this node's own material or its trust store. A peer whose current certificates are refused is
    left out and listed in ``peer_problems`` (one peer's expired certificate must not stop every
    route at the next restart); ``strict_peers`` makes that an error too."""
    with os_errors("certs"):
        return _load(certs_dir, node_id, utc(now), overlap, clock_skew, strict_peers)


def _load(certs_dir: Path, node_id: str, now: dt.datetime, overlap: dt.timedelta,
          clock_skew: dt.timedelta, strict_peers: bool) -> NodeMaterial:
    cd = CertsDir(certs_dir)
    notes: list[str] = []
    if cd.journal.exists():
        notes.append("an interrupted rotation awaits repair (any jgw certs command repairs it)")
    trust = TrustStore.load(cd.trust, now, clock_skew=clock_skew)
    live_name = cd.live_dir().name
    live_switched = activated_at(cd)
    live = load_generation(cd.generation_dir(live_name), node_id, trust, at=now)
    previous: PreviousKeys | None = None
    prev_name = cd.pointer("previous")
    if prev_name is not None and prev_name != live_name:
        until = live_switched + overlap
        if now < until:
            keys, note = _previous_keys(cd.generation_dir(prev_name), trust, now)
            if note:
                notes.append(note)
            if keys:
                previous = PreviousKeys(prev_name, until, keys)
    peer_problems: list[CertificateError] = []
    peers = load_peers(cd.peers, trust, at=now, own_id=node_id,
                       problems=None if strict_peers else peer_problems)
    for peer in peers.values():
        notes.extend(peer.notes)
    keyring = _keyring(node_id, live, previous, peers, trust)
    tls_ident = live["tls-client"]
    crl_files = tuple(sorted(c.path for c in trust.crls))
    tls = TlsFiles(cert=tls_ident.cert_path, key=tls_ident.key_path,
                   cafiles=tuple(sorted({ca.path for ca in trust.cas if ca.anchor})), crlfiles=crl_files)
    return NodeMaterial(node_id=node_id, certs_dir=certs_dir, loaded_at=now, live=live, previous=previous,
                        trust=trust, peers=peers, keyring=keyring, tls=tls,
                        expiries=tuple(_expiries(node_id, live, peers, trust)),
                        crls=tuple(CrlInfo(c.issuer.name, c.last_update, c.next_update, c.path)
                                   for c in trust.crls),
                        notes=tuple(notes), peer_problems=tuple(peer_problems))


def _keyring(node_id: str, live: Generation, previous: PreviousKeys | None,
             peers: dict[str, PeerMaterial], trust: TrustStore) -> Keyring:
    sign = live["signing"]
    mldsa_ident = live.identities.get("signing-mldsa65")
    sign_key, ml_key = sign.key, mldsa_ident.key if mldsa_ident else None
    assert isinstance(sign_key, ec.EllipticCurvePrivateKey)  # slot check: P-256
    assert ml_key is None or isinstance(ml_key, mldsa.MLDSA65PrivateKey)
    signing = SigningIdentity.create(sign_key, sign.cert, ml_key, mldsa_ident.cert if mldsa_ident else None)
    decryption: list[DecryptionKey] = list(previous.keys) if previous else []
    enc_key = live["encryption"].key
    assert isinstance(enc_key, ec.EllipticCurvePrivateKey)
    decryption.append(DecryptionKey.p256(enc_key))
    if live.hybrid is not None:
        decryption.append(DecryptionKey.hybrid(live.hybrid.mlkem, live.hybrid.x25519))
    return Keyring.build(node_id, signing, StoreTrust(trust), decryption,
                         [peer.keys() for peer in peers.values()])


def _previous_keys(directory: Path, trust: TrustStore, now: dt.datetime
                   ) -> tuple[tuple[DecryptionKey, ...], str | None]:
    """The previous generation's decryption keys. Its certificate may have expired since (the key
    still opens messages encrypted to it); a revoked one is left out, since its key may be known."""
    slot = SLOT_BY_NAME["encryption"]
    try:
        certs = read_certificates(directory / cert_name(slot.name), slot.name)
        key = read_private_key(directory / key_name(slot.name))
        if not key_matches(certs[0], key) or not isinstance(key, ec.EllipticCurvePrivateKey):
            return (), f"previous generation {directory.name}: encryption key does not match; not kept"
        try:
            trust.verify(certs[0], slot.purpose, at=now, chain=certs[1:])
        except CertificateError as err:
            if err.code == "revoked":
                return (), f"previous generation {directory.name}: encryption certificate revoked; not kept"
        keys = [DecryptionKey.p256(key)]
        ml_path, x_path = directory / hybrid.MLKEM_KEY_FILE, directory / hybrid.X25519_KEY_FILE
        if ml_path.exists() and x_path.exists():
            ml, xk = read_private_key(ml_path), read_private_key(x_path)
            if isinstance(ml, mlkem.MLKEM768PrivateKey) and isinstance(xk, x25519.X25519PrivateKey):
                keys.append(DecryptionKey.hybrid(ml, xk))
        return tuple(keys), None
    except CertificateError as err:
        return (), f"previous generation {directory.name}: {err.code}: {err.reason}; not kept"


def _expiries(node_id: str, live: Generation, peers: dict[str, PeerMaterial], trust: TrustStore
              ) -> list[CertificateExpiry]:
    out = [CertificateExpiry(name, node_id, ident.verified.not_after, "own")
           for name, ident in live.identities.items()]
    for peer in peers.values():
        out += [CertificateExpiry(slot, peer.node_id, v.not_after, "peer")
                for slot, v in peer.current.items()]
    out += [CertificateExpiry("ca", ca.name, ca.cert.not_valid_after_utc,
                              "anchor" if ca.anchor else "intermediate") for ca in trust.cas]
    return out

