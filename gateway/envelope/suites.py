"""Suites: the named algorithm sets an envelope is sealed with, and their signature primitives.

``default`` (CRYPTREC e-Government list): ECDSA P-256/SHA-256 signature; HPKE DHKEM(P-256),
HKDF-SHA256, AES-256-GCM. ``pq-hybrid``: ECDSA P-256 *and* ML-DSA-65 co-signatures (both must
verify); HPKE KEM 0x647A, HKDF-SHA256, AES-256-GCM. The payload is AES-256-GCM in both.

KEM 0x647A is X-Wing of draft-connolly-cfrg-xwing-kem-06 (the revision IANA's HPKE registry cites;
``cryptography``'s ``KEM.MLKEM768_X25519``): shared secret = SHA3-256(ss_M || ss_X || ct_X || pk_X ||
XWING_LABEL), label last; enc = ct_M || ct_X. jgw keys are its two components (ML-KEM-768 seed d || z
and an X25519 key), never the draft's 32-byte X-Wing seed. docs/envelope.md section 1 writes it out;
the test vectors check it without an HPKE library.

ECDSA signatures travel as fixed 64-byte r||s with s in the lower half of the group order, and the
verifier refuses a high s: an ECDSA signature then has one encoding only, so a signature cannot be
altered into another valid one (ML-DSA is strongly unforgeable as it is).

Security: wraps cryptography primitives; no I/O. Trusts nothing: callers pass keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric import ec, mldsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from gateway.keyring import SUITE_DEFAULT, SUITE_PQ_HYBRID

SIG_ECDSA_P256 = "ecdsa-p256-sha256"
SIG_MLDSA65 = "ml-dsa-65"

#: The order of the P-256 group; s must be in [1, n/2].
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ECDSA_SIG_BYTES = 64
MLDSA65_SIG_BYTES = 3309
#: ML-DSA context string (FIPS 204 ``ctx``), so these signatures mean nothing to another protocol.
MLDSA_CONTEXT = b"jgw-envelope/1"

EPOCH_KEY_BYTES = 32
HPKE_TAG_BYTES = 16
#: HPKE KEM ids (RFC 9180 section 7.1, IANA): DHKEM(P-256, HKDF-SHA256) and X-Wing.
KEM_ID_P256 = 0x0010
KEM_ID_XWING = 0x647A
#: The X-Wing combiner's label (draft-connolly-cfrg-xwing-kem-06): the 6 bytes \./ /^\ , hashed last.
XWING_LABEL = b"\\.//^\\"


@dataclass(frozen=True, slots=True)
class Suite:
    name: str
    wire_id: int
    kem: hpke.KEM
    #: The HPKE KEM id (``kem`` as RFC 9180 numbers it), for docs/envelope.md and the vectors.
    kem_id: int
    #: Signature algorithms, in the order their key ids and signatures appear.
    signatures: tuple[str, ...]

    @property
    def hpke(self) -> hpke.Suite:
        return hpke.Suite(self.kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    @property
    def key_entry_bytes(self) -> int:
        """Exact size of one key-block entry: HPKE enc || AES-256-GCM(epoch key) with its tag."""
        return self.kem.enc_length() + EPOCH_KEY_BYTES + HPKE_TAG_BYTES

    def signature_bytes(self, index: int) -> int:
        return ECDSA_SIG_BYTES if self.signatures[index] == SIG_ECDSA_P256 else MLDSA65_SIG_BYTES


DEFAULT = Suite(SUITE_DEFAULT, 1, hpke.KEM.P256, KEM_ID_P256, (SIG_ECDSA_P256,))
PQ_HYBRID = Suite(SUITE_PQ_HYBRID, 2, hpke.KEM.MLKEM768_X25519, KEM_ID_XWING, (SIG_ECDSA_P256, SIG_MLDSA65))

BY_NAME: dict[str, Suite] = {s.name: s for s in (DEFAULT, PQ_HYBRID)}
BY_WIRE_ID: dict[int, Suite] = {s.wire_id: s for s in (DEFAULT, PQ_HYBRID)}


def ecdsa_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """Sign with ECDSA P-256/SHA-256; return 64-byte r||s, low-s normalised."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    if s > P256_N // 2:
        s = P256_N - s
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def ecdsa_verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    if len(signature) != ECDSA_SIG_BYTES:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < P256_N and 0 < s <= P256_N // 2):
        return False
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def mldsa_sign(key: mldsa.MLDSA65PrivateKey, data: bytes) -> bytes:
    return key.sign(data, MLDSA_CONTEXT)


def mldsa_verify(key: mldsa.MLDSA65PublicKey, signature: bytes, data: bytes) -> bool:
    if len(signature) != MLDSA65_SIG_BYTES:
        return False
    try:
        key.verify(signature, data, MLDSA_CONTEXT)
    except InvalidSignature:
        return False
    return True
