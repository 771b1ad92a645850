"""The hybrid (ML-KEM-768 + X25519) encryption key of the pq-hybrid suite, and how peers learn it.

Neither an ML-KEM key nor an X25519 key can sign a certificate request, and a 団体's CA will not
issue certificates for them, so the hybrid public key travels in a *key statement*,
``encryption-hybrid.json``, signed by the node's two certified signing keys (ECDSA P-256
``signing.pem`` and ML-DSA-65 ``signing-mldsa65.pem``). A verifier trusts the statement exactly as
far as it trusts those certificates (chain, CRL, purpose, node id, validity), and both signatures
must verify, so a quantum attacker who can forge ECDSA still cannot substitute a key.

    {"format": "jgw-hybrid-kem/1", "node": "<node id>", "created": "<UTC>",
     "mlkem768": "<base64 DER SPKI>", "x25519": "<base64 DER SPKI>", "key_id": "<hybrid key id>",
     "signers": ["<ECDSA key id>", "<ML-DSA key id>"],
     "ecdsa_signature": "<base64 DER ECDSA-SHA256>", "mldsa_signature": "<base64 ML-DSA-65>"}

The signed bytes are ``b"jgw-hybrid-kem/1\\n"`` followed by the JSON object without the two
signature members, serialised with sorted keys and no spaces (``signed_bytes``). ML-DSA signs with
the FIPS 204 context string ``jgw-hybrid-kem/1``. The key id is ``gateway.keyring.hybrid_key_id``.

The private halves are two files of a generation, ``encryption-mlkem768.key`` and
``encryption-x25519.key``, each PKCS#8 PEM as docs/envelope.md section 1 specifies: ML-KEM-768 in the
seed-only form of RFC 9935 (the 64-byte seed d || z of FIPS 203), X25519 as RFC 8410. Together they
are the X-Wing decapsulation key in its component form; the draft's 32-byte X-Wing seed is not used.
The public halves in the statement are DER SubjectPublicKeyInfo (RFC 9935, RFC 8410); the X-Wing
encapsulation key is the raw ML-KEM key followed by the raw X25519 key. ``ecdsa_signature`` is DER
(not the envelope's fixed r || s).

Security: parses a file that may come from a peer (bounded size, strict fields); signs with this
node's signing keys; never prints private keys.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mldsa, mlkem, x25519

from gateway.keyring import hybrid_key_id
from gateway.pki.errors import CertificateError
from gateway.pki.files import key_id, spki
from gateway.pki.privileges import read_input, user_name

FORMAT = "jgw-hybrid-kem/1"
CONTEXT = FORMAT.encode()
MAX_STATEMENT_BYTES = 16 * 1024
STATEMENT_FILE = "encryption-hybrid.json"
MLKEM_KEY_FILE = "encryption-mlkem768.key"
X25519_KEY_FILE = "encryption-x25519.key"
_FIELDS = {"format", "node", "created", "mlkem768", "x25519", "key_id", "signers", "ecdsa_signature",
           "mldsa_signature"}


@dataclass(frozen=True)
class HybridPublicKey:
    node_id: str
    mlkem: mlkem.MLKEM768PublicKey
    x25519: x25519.X25519PublicKey
    key_id: str
    signers: tuple[str, str]
    created: str


def signed_bytes(body: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k not in ("ecdsa_signature", "mldsa_signature")}
    return CONTEXT + b"\n" + json.dumps(unsigned, sort_keys=True, separators=(",", ":")).encode()


def make_statement(node_id: str, mlkem_public: mlkem.MLKEM768PublicKey, x25519_public: x25519.X25519PublicKey,
                   ecdsa_key: ec.EllipticCurvePrivateKey, mldsa_key: mldsa.MLDSA65PrivateKey,
                   now: dt.datetime) -> bytes:
    """The statement for a hybrid public key, signed by both signing keys."""
    body: dict[str, Any] = {
        "format": FORMAT, "node": node_id, "created": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mlkem768": _b64(spki(mlkem_public)), "x25519": _b64(spki(x25519_public)),
        "key_id": hybrid_key_id(mlkem_public, x25519_public),
        "signers": [key_id(ecdsa_key.public_key()), key_id(mldsa_key.public_key())],
    }
    data = signed_bytes(body)
    body["ecdsa_signature"] = _b64(ecdsa_key.sign(data, ec.ECDSA(hashes.SHA256())))
    body["mldsa_signature"] = _b64(mldsa_key.sign(data, CONTEXT))
    return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def read_statement(path: Path, node_id: str, signing_certs: Iterable[x509.Certificate]) -> HybridPublicKey:
    """Parse and verify a statement against ``signing_certs`` (already verified by the caller):
    it must name ``node_id`` and carry valid signatures by an ECDSA and an ML-DSA-65 certificate
    among them."""
    where = str(path)

    def refuse(code: str, reason: str) -> CertificateError:
        return CertificateError(where, "hybrid key statement", code, reason)

    raw = read_input(path)
    if raw is None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError as exc:
            raise refuse("missing", "file not found") from exc
        except OSError as exc:
            raise refuse("unreadable", f"{user_name()} cannot read it: {exc.strerror}") from exc
    if len(raw) > MAX_STATEMENT_BYTES:
        raise refuse("unreadable", f"larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or set(body) != _FIELDS or body["format"] != FORMAT:
            raise ValueError("unexpected members or format")
        mlkem_pub = serialization.load_der_public_key(_unb64(body["mlkem768"]))
        x_pub = serialization.load_der_public_key(_unb64(body["x25519"]))
        if not (isinstance(mlkem_pub, mlkem.MLKEM768PublicKey) and isinstance(x_pub, x25519.X25519PublicKey)):
            raise ValueError("wrong key types")
        signers = body["signers"]
        if not (isinstance(signers, list) and len(signers) == 2 and all(isinstance(s, str) for s in signers)):
            raise ValueError("signers must be two key ids")
        ecdsa_sig, mldsa_sig = _unb64(body["ecdsa_signature"]), _unb64(body["mldsa_signature"])
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        raise refuse("unreadable", f"not a {FORMAT} key statement ({exc})") from exc
    if body["node"] != node_id:
        raise refuse("name-mismatch", f"states the key of node {body['node']!r}, not {node_id!r}")
    if body["key_id"] != hybrid_key_id(mlkem_pub, x_pub):
        raise refuse("bad-signature", "key_id does not match the keys it names")
    by_id = {key_id(c.public_key()): c for c in signing_certs}
    ecdsa_cert, mldsa_cert = by_id.get(signers[0]), by_id.get(signers[1])
    if ecdsa_cert is None or mldsa_cert is None:
        raise refuse("unknown-ca", f"signed by key ids {signers[0]} and {signers[1]}, which are not both "
                                   f"among the node's signing certificates (re-sign it: jgw pki hybrid)")
    data = signed_bytes(body)
    ec_pub, ml_pub = ecdsa_cert.public_key(), mldsa_cert.public_key()
    try:
        if not (isinstance(ec_pub, ec.EllipticCurvePublicKey) and isinstance(ml_pub, mldsa.MLDSA65PublicKey)):
            raise InvalidSignature
        ec_pub.verify(ecdsa_sig, data, ec.ECDSA(hashes.SHA256()))
        ml_pub.verify(mldsa_sig, data, CONTEXT)
    except InvalidSignature as exc:
        raise refuse("bad-signature", "a signature on the statement does not verify") from exc
    return HybridPublicKey(node_id, mlkem_pub, x_pub, body["key_id"], (signers[0], signers[1]),
                           str(body["created"]))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.b64decode(text, validate=True)
