"""The certificate profiles of jgw: what makes a certificate fit for TLS, signing or encryption.

Each purpose has its own key and its own profile, and the profiles exclude each other: a signing
certificate may not assert keyAgreement, an encryption certificate may not assert digitalSignature,
and neither may carry a TLS extended key usage. So one certificate can never pass for another
purpose, and a leaked TLS key cannot sign envelopes.

    purpose     keyUsage required         keyUsage forbidden               EKU         key
    tls-client  digitalSignature          keyCertSign cRLSign              clientAuth  EC, RSA>=2048, Ed25519
    signing     digitalSignature          keyAgreement keyEncipherment     no TLS EKU  EC, Ed25519, ML-DSA-65
                (nonRepudiation allowed)  dataEncipherment keyCertSign cRLSign
    encryption  keyAgreement              digitalSignature nonRepudiation  no TLS EKU  EC, X25519
                                          keyCertSign cRLSign
    tls-server  digitalSignature          keyCertSign cRLSign              serverAuth  as tls-client

EC means the NIST curves P-256, P-384 and P-521.

The node a certificate belongs to is the one subjectAltName URI ``urn:jgw:node:<id>`` it carries
(``gateway.keyring.certificate_node_ids``: exactly one, byte for byte); the CN and dNSNames are not
node ids (the CN is shown to people and is the RabbitMQ user name, see certs/README.md).

Security: pure checks over parsed certificates; trusts nothing, talks to nothing.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.keyring import NODE_URI_PREFIX as NODE_URI_PREFIX  # re-exported: csr.py, devca.py
from gateway.keyring import certificate_node_ids


class Purpose(StrEnum):
    TLS_CLIENT = "tls-client"
    SIGNING = "signing"
    ENCRYPTION = "encryption"
    TLS_SERVER = "tls-server"


#: The purposes of a node's own generation, each with its own key.
NODE_PURPOSES: tuple[Purpose, ...] = (Purpose.TLS_CLIENT, Purpose.SIGNING, Purpose.ENCRYPTION)
#: The purposes a peer's certificates are installed for (a peer's TLS identity is its broker's concern).
PEER_PURPOSES: tuple[Purpose, ...] = (Purpose.SIGNING, Purpose.ENCRYPTION)

_KU_FIELDS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign")
_REQUIRED: dict[Purpose, tuple[str, ...]] = {
    Purpose.TLS_CLIENT: ("digital_signature",),
    Purpose.SIGNING: ("digital_signature",),
    Purpose.ENCRYPTION: ("key_agreement",),
    Purpose.TLS_SERVER: ("digital_signature",),
}
_FORBIDDEN: dict[Purpose, tuple[str, ...]] = {
    Purpose.TLS_CLIENT: ("key_cert_sign", "crl_sign"),
    Purpose.SIGNING: ("key_agreement", "key_encipherment", "data_encipherment", "key_cert_sign", "crl_sign"),
    Purpose.ENCRYPTION: ("digital_signature", "content_commitment", "key_cert_sign", "crl_sign"),
    Purpose.TLS_SERVER: ("key_cert_sign", "crl_sign"),
}
_TLS_EKUS = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


def parse_purpose(text: str) -> Purpose:
    try:
        return Purpose(text)
    except ValueError:
        known = ", ".join(p.value for p in Purpose)
        raise ValueError(f"unknown purpose {text!r} (known: {known})") from None


def profile_problem(cert: x509.Certificate, purpose: Purpose) -> str | None:
    """Why ``cert`` does not fit ``purpose``, or None when it does."""
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            return "is a CA certificate (basicConstraints CA:TRUE), not an end-entity certificate"
    except x509.ExtensionNotFound:
        pass
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return f"has no keyUsage extension; a {purpose} certificate needs {', '.join(_REQUIRED[purpose])}"
    asserted = {name for name in _KU_FIELDS if getattr(ku, name)}
    missing = [n for n in _REQUIRED[purpose] if n not in asserted]
    if missing:
        return f"keyUsage lacks {', '.join(missing)}, required for {purpose}"
    extra = [n for n in _FORBIDDEN[purpose] if n in asserted]
    if extra:
        return f"keyUsage asserts {', '.join(extra)}, not allowed for {purpose} (one key per purpose)"
    try:
        ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    if purpose is Purpose.TLS_CLIENT and ExtendedKeyUsageOID.CLIENT_AUTH not in ekus:
        return "extendedKeyUsage lacks clientAuth, required for a TLS client certificate"
    if purpose is Purpose.TLS_SERVER and ExtendedKeyUsageOID.SERVER_AUTH not in ekus:
        return "extendedKeyUsage lacks serverAuth, required for a TLS server certificate"
    if purpose in (Purpose.SIGNING, Purpose.ENCRYPTION) and ekus & _TLS_EKUS:
        return f"extendedKeyUsage includes a TLS usage; a {purpose} certificate must not double as a TLS one"
    return key_type_problem(cert.public_key(), purpose)


def key_type_problem(key: object, purpose: Purpose) -> str | None:
    """Why a public key's type does not fit ``purpose``, or None."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, _EC_CURVES):
            return None
        return f"EC curve {key.curve.name} is not allowed (P-256, P-384 or P-521)"
    if purpose in (Purpose.TLS_CLIENT, Purpose.TLS_SERVER):
        if isinstance(key, ed25519.Ed25519PublicKey):
            return None
        if isinstance(key, rsa.RSAPublicKey):
            return None if key.key_size >= 2048 else f"RSA key of {key.key_size} bits is too short (>= 2048)"
    if purpose is Purpose.SIGNING and isinstance(key, ed25519.Ed25519PublicKey | mldsa.MLDSA65PublicKey):
        return None
    if purpose is Purpose.ENCRYPTION and isinstance(key, x25519.X25519PublicKey):
        return None
    return f"a {type(key).__name__.removeprefix('_')} key is not allowed for {purpose}"


def node_ids(cert: x509.Certificate) -> list[str]:
    """The node ids a certificate names (subjectAltName URIs urn:jgw:node:ID); one binds it."""
    return certificate_node_ids(cert)


def common_name(name: x509.Name) -> str:
    """The CN of a name, or its RFC 4514 form when it has none (for display only)."""
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cns:
        value = cns[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return name.rfc4514_string()
