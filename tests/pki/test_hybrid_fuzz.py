"""The hybrid key statement comes from another site: any bytes parse or are refused, nothing else."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pki import hybrid
from gateway.pki.errors import CertificateError
from gateway.pki.files import read_certificates
from tests.pki.conftest import World

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def signers(world: World) -> list[x509.Certificate]:
    gen = world.a.cd.live_dir()
    return [read_certificates(gen / "signing.pem")[0], read_certificates(gen / "signing-mldsa65.pem")[0]]


def test_valid_statement_reads(world: World) -> None:
    hyb = hybrid.read_statement(world.a.cd.live_dir() / hybrid.STATEMENT_FILE, "city-a", signers(world))
    assert len(hyb.key_id) == 32


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_any_bytes_are_refused_cleanly(world: World, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "statement.json"
    path.write_bytes(data)
    with pytest.raises(CertificateError):
        hybrid.read_statement(path, "city-a", signers(world))


@SETTINGS
@given(field=st.sampled_from(sorted(hybrid._FIELDS)), value=st.one_of(
    st.none(), st.integers(), st.text(max_size=40), st.lists(st.text(max_size=8), max_size=3),
    st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())))
def test_any_altered_member_is_refused(world: World, tmp_path: Path, field: str, value: object) -> None:
    """Changing any one member of a valid statement (keys, ids, signatures, node, format) is refused."""
    body = json.loads((world.a.cd.live_dir() / hybrid.STATEMENT_FILE).read_bytes())
    if body[field] == value:
        return
    body[field] = value
    path = tmp_path / "statement.json"
    path.write_text(json.dumps(body))
    with pytest.raises(CertificateError):
        hybrid.read_statement(path, "city-a", signers(world))


def test_statement_of_another_node(world: World) -> None:
    """dc-b's statement offered as city-a's is refused as name-mismatch."""
    with pytest.raises(CertificateError) as info:
        hybrid.read_statement(world.b.cd.live_dir() / hybrid.STATEMENT_FILE, "city-a", signers(world))
    assert info.value.code == "name-mismatch"

