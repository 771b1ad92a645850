"""A signer is who its certificate says (issue 15 item 7).

The binding rule (docs/envelope.md section 9, certs/README.md): a certificate belongs to the node
its subjectAltName names as the URI ``urn:jgw:node:<node-id>``, and it must name exactly one;
neither the CN nor a dNSName counts. The rule is checked where a keyring is assembled (its peers'
and its own certificates) and again on every verify, for the signed sender.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from cryptography import x509

from gateway.commands import envelope as command
from gateway.envelope import EnvelopeError, Opener, OpenPolicy
from gateway.errors import JgwError
from gateway.keyring import (
    PURPOSE_SIGNING,
    CaTrust,
    CertificateUntrusted,
    Keyring,
    KeyringError,
    PeerKeys,
    certificate_key_id,
    certificate_node_id,
)
from tests.lab.testca import NodeKeys, write_node_files, write_public_pem

from .conftest import Pki
from .forge import reforge
from .test_open_refusals import seal


def jgw(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="jgw")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    try:
        status: int = args.func(args)
        return status
    except JgwError as exc:
        print(f"jgw: {exc}")
        return exc.exit_code


def impersonation(pki: Pki) -> bytes:
    """An envelope dc-b signed with its own (trusted) keys, claiming to come from city-a."""
    (data,) = seal(pki.keyrings["city-a"])
    return reforge(data, pki.keyrings["dc-b"], pki.keyrings["dc-b"], sender="city-a")


def peer_without_checks(node_id: str, certs: list[x509.Certificate]) -> PeerKeys:
    """A PeerKeys built around its constructor's checks: what a buggy loader could hand the opener."""
    peer = object.__new__(PeerKeys)
    for name, value in (("node_id", node_id), ("signing_certificates", {certificate_key_id(c): c for c in certs}),
                        ("encryption_keys", {}), ("current_encryption", {})):
        object.__setattr__(peer, name, value)
    return peer


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Mapping[str, Path]]:
    root = tmp_path_factory.mktemp("binding")
    out = {n: write_node_files(root / n, pki.nodes[n]) for n in ("city-a", "dc-b")}
    out["ca"] = {"ca.crt": write_public_pem(root / "ca.crt", pki.ca.cert)}
    return out


def test_cli_verify_refuses_another_nodes_certificate_for_the_sender(pki: Pki, files: dict[str, Mapping[str, Path]],
                                                                    tmp_path: Path) -> None:
    """``verify --peer city-a=<dc-b's certificate>`` no longer accepts what dc-b signed as city-a: the
    file is not city-a's, so the key material does not fit (78) and nothing is verified."""
    env = tmp_path / "forged.jgwe"
    env.write_bytes(impersonation(pki))
    ca = ["--ca", files["ca"]["ca.crt"]]
    assert jgw("envelope", "verify", env, *ca, "--peer", f"city-a={files['dc-b']['peer.pem']}") == 78
    # with each node's own file, the forgery is what it is: no certificate of city-a signed it (12)
    assert jgw("envelope", "verify", env, *ca, "--peer", f"city-a={files['city-a']['peer.pem']}",
               "--peer", f"dc-b={files['dc-b']['peer.pem']}") == 12


def test_cli_seal_refuses_to_sign_as_another_node(pki: Pki, files: dict[str, Mapping[str, Path]],
                                                   tmp_path: Path) -> None:
    """``seal --node city-a`` with dc-b's signing certificate is refused (78): it would sign as a node
    the certificate does not name."""
    src, out = tmp_path / "in", tmp_path / "out.jgwe"
    src.write_bytes(b"x")
    b = files["dc-b"]
    assert jgw("envelope", "seal", "--node", "city-a", "--route", "r1", "--sign-key", b["sign.key"],
               "--sign-cert", b["sign.crt"], "--to", f"dc-b={b['peer.pem']}", "--in", src, "--out", out) == 78
    assert not out.exists()


def test_opener_checks_the_binding_on_every_verify(pki: Pki) -> None:
    """Even handed a keyring whose peer city-a holds dc-b's certificate (built around the checks), the
    opener refuses dc-b's envelope claiming city-a: certificate-untrusted, naming both nodes."""
    dc = pki.nodes["dc-b"]
    auditor = Keyring.build("auditor", None, pki.trust, (), [peer_without_checks("city-a", [dc.sign_cert])])
    with pytest.raises(EnvelopeError) as info:
        Opener(OpenPolicy(None, None, None, None)).verify(impersonation(pki), auditor)
    assert info.value.reason == "certificate-untrusted"
    assert "name-mismatch" in info.value.detail and "dc-b" in info.value.detail


def test_daemon_keyring_names_the_real_signer(pki: Pki) -> None:
    """With every peer filed correctly, dc-b's envelope claiming city-a is certificate-untrusted, and
    the detail says whose key signed it."""
    op = Opener(OpenPolicy(frozenset({"city-a"}), None, None, 3600.0))
    with pytest.raises(EnvelopeError) as info:
        op.open(impersonation(pki), pki.keyrings["cs-c"], time.time())
    assert info.value.reason == "certificate-untrusted"
    assert "signing key of dc-b" in info.value.detail


def test_keyring_refuses_certificates_naming_another_node(pki: Pki) -> None:
    """A peer filed under city-a with dc-b's certificate, or a node signing with another node's
    certificate, cannot even be assembled (KeyringError, exit 78)."""
    a, b = pki.nodes["city-a"], pki.nodes["dc-b"]
    with pytest.raises(KeyringError, match="names node dc-b"):
        PeerKeys.build("city-a", [b.sign_cert])
    with pytest.raises(KeyringError, match="names node dc-b"):
        Keyring.build("city-a", b.identity(), pki.trust)
    assert Keyring.build("city-a", a.identity(), pki.trust).node_id == "city-a"


@pytest.mark.parametrize("san", ["dns", "cn-only", "two-nodes", "other-uri", "upper-case"])
def test_only_one_node_uri_binds(pki: Pki, san: str) -> None:
    """The node is the one subjectAltName URI urn:jgw:node:<id>, byte for byte: a dNSName or a CN
    naming the node does not count, nor does a certificate naming two nodes."""
    names: dict[str, list[x509.GeneralName]] = {
        "dns": [x509.DNSName("city-a")],
        "cn-only": [],
        "two-nodes": [x509.UniformResourceIdentifier("urn:jgw:node:city-a"),
                      x509.UniformResourceIdentifier("urn:jgw:node:dc-b")],
        "other-uri": [x509.UniformResourceIdentifier("https://city-a.example/"), x509.DNSName("city-a")],
        "upper-case": [x509.UniformResourceIdentifier("URN:JGW:NODE:city-a")],
    }
    key = pki.nodes["city-a"].sign_key.public_key()
    cert = pki.ca.issue(key, "city-a", PURPOSE_SIGNING, san=names[san])
    with pytest.raises(CertificateUntrusted) as info:
        certificate_node_id(cert)
    assert info.value.code == "name-mismatch"
    with pytest.raises(KeyringError):
        PeerKeys.build("city-a", [cert])


def test_binding_allows_other_names_beside_the_node_uri(pki: Pki) -> None:
    """Other subjectAltName entries (a host name, another URI) may sit beside the one node URI."""
    key = pki.nodes["city-a"].sign_key.public_key()
    cert = pki.ca.issue(key, "city-a", PURPOSE_SIGNING, san=[
        x509.DNSName("gw.city-a.example"), x509.UniformResourceIdentifier("urn:jgw:node:city-a"),
        x509.UniformResourceIdentifier("https://city-a.example/")])
    assert certificate_node_id(cert) == "city-a"
    assert PeerKeys.build("city-a", [cert]).node_id == "city-a"


def test_test_ca_issues_bound_certificates(pki: Pki) -> None:
    """The test CA's certificates (and so every keyring the tests build) carry the binding."""
    for node in ("city-a", "dc-b", "cs-c", "rogue-x"):
        keys: NodeKeys = pki.nodes[node]
        assert certificate_node_id(keys.sign_cert) == node
        assert keys.mldsa_cert is not None and certificate_node_id(keys.mldsa_cert) == node
    assert isinstance(pki.trust, CaTrust)
