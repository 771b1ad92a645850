"""``jgw envelope``: each check that fails has its own exit status; the happy paths round-trip files."""

from __future__ import annotations

import argparse
import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from gateway.commands import envelope as command
from gateway.envelope import codec
from gateway.errors import JgwError
from tests.lab.testca import TestCa, write_node_files, write_public_pem

from .conftest import Pki
from .forge import flip, sections


def jgw(*argv: str | Path) -> int:
    """What gateway.cli.main does for this verb: parse, run, a JgwError becomes its exit code."""
    parser = argparse.ArgumentParser(prog="jgw")
    command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args([str(a) for a in argv])
    try:
        status: int = args.func(args)
        return status
    except JgwError as exc:
        print(f"jgw: {exc}")
        return exc.exit_code


@pytest.fixture(scope="module")
def files(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Mapping[str, Path]]:
    root = tmp_path_factory.mktemp("nodes")
    out = {n: write_node_files(root / n, pki.nodes[n]) for n in ("city-a", "dc-b", "cs-c")}
    out["ca"] = {"ca.crt": write_public_pem(root / "ca.crt", pki.ca.cert),
                 "other-ca.crt": write_public_pem(root / "other-ca.crt", TestCa.create().cert)}
    return out


def seal(files: dict[str, Mapping[str, Path]], out: Path, *extra: str | Path, suite: str = "default",
         payload: bytes = b"\x8e\xa9 Shift_JIS bytes \x00\xff") -> Path:
    src = out.with_suffix(".in")
    src.write_bytes(payload)
    a = files["city-a"]
    pq = ["--mldsa-key", a["mldsa.key"], "--mldsa-cert", a["mldsa.crt"]] if suite == "pq-hybrid" else []
    assert jgw("envelope", "seal", "--node", "city-a", "--route", "r1", "--suite", suite, "--sign-key",
               a["sign.key"], "--sign-cert", a["sign.crt"], *pq, "--to", f"dc-b={files['dc-b']['peer.pem']}",
               "--in", src, "--out", out, "--message-id", "cli-1", "--content-type", "text/plain",
               "--header", "x-biz=異動", *extra) == 0
    return out


def trust(files: dict[str, Mapping[str, Path]], ca: str = "ca.crt") -> list[str | Path]:
    return ["--ca", files["ca"][ca], "--peer", f"city-a={files['city-a']['peer.pem']}"]


@pytest.mark.parametrize("suite", ["default", "pq-hybrid"])
def test_seal_inspect_verify_open(files: dict[str, Mapping[str, Path]], tmp_path: Path, suite: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-sealed envelope inspects, verifies and opens to the same bytes, written 0600."""
    env = seal(files, tmp_path / "m.jgwe", suite=suite)
    assert jgw("envelope", "inspect", env, "--json") == 0
    fields = json.loads(capsys.readouterr().out)
    assert (fields["suite"], fields["message_id"], fields["sender"], fields["content_type"]) == (
        suite, "cli-1", "city-a", "text/plain")
    assert [r["node"] for r in fields["recipients"]] == ["dc-b"]
    assert jgw("envelope", "inspect", env) == 0
    assert "message-id: cli-1" in capsys.readouterr().out
    assert jgw("envelope", "verify", env, *trust(files)) == 0
    assert "ok:" in capsys.readouterr().out
    out, meta = tmp_path / "payload", tmp_path / "meta.json"
    assert jgw("envelope", "open", env, *trust(files), "--node", "dc-b", "--key", files["dc-b"]["enc.key"],
               "--key", files["dc-b"]["enc-pq.key"], "--out", out, "--meta", meta, "--window", "1h") == 0
    assert out.read_bytes() == b"\x8e\xa9 Shift_JIS bytes \x00\xff"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(meta.read_text("utf-8"))["headers"] == {"x-biz": "異動"}


def test_exit_status_names_the_failed_check(files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """Tampering, an untrusted CA, the wrong recipient, the wrong sender, a refused suite and an
    old message each exit with their own status."""
    env = seal(files, tmp_path / "m.jgwe")
    data = env.read_bytes()
    tampered = tmp_path / "tampered.jgwe"
    tampered.write_bytes(flip(data, sections(data)["payload"][0] + 40))
    garbage = tmp_path / "garbage.jgwe"
    garbage.write_bytes(b"not an envelope")
    later = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3 * 3600))
    dc = ["--node", "dc-b", "--key", files["dc-b"]["enc.key"]]
    cs = ["--node", "cs-c", "--key", files["cs-c"]["enc.key"]]
    n = iter(range(100))
    cases: list[tuple[list[str | Path], int]] = [
        (["verify", tampered, *trust(files)], 10),
        (["verify", env, *trust(files, "other-ca.crt")], 12),
        (["verify", env, "--ca", files["ca"]["ca.crt"]], 12),  # no --peer: sender unknown
        (["verify", env, *trust(files), "--sender", "rogue-x"], 13),
        (["verify", env, *trust(files), "--route", "r2"], 14),
        (["open", env, *trust(files), *cs, "--out", tmp_path / f"o{next(n)}"], 15),
        (["open", env, *trust(files), *dc, "--out", tmp_path / f"o{next(n)}", "--window", "1h",
          "--at", later], 18),
        (["verify", env, *trust(files), "--suite", "pq-hybrid"], 19),
        (["inspect", garbage], 65),
        (["inspect", tmp_path / "missing.jgwe"], 66),
    ]
    for argv, status in cases:
        assert jgw("envelope", *argv) == status, argv


def test_private_key_files_must_be_0600(files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """A group-readable key file is refused (exit 77) before it is read."""
    env = seal(files, tmp_path / "m.jgwe")
    loose = tmp_path / "loose.key"
    loose.write_bytes(files["dc-b"]["enc.key"].read_bytes())
    os.chmod(loose, 0o640)
    assert jgw("envelope", "open", env, *trust(files), "--node", "dc-b", "--key", loose,
               "--out", tmp_path / "p") == 77
    assert not (tmp_path / "p").exists()


def test_open_never_overwrites(files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """open refuses to write over an existing file (exit 64)."""
    env = seal(files, tmp_path / "m.jgwe")
    existing = tmp_path / "exists"
    existing.write_bytes(b"keep me")
    assert jgw("envelope", "open", env, *trust(files), "--node", "dc-b", "--key", files["dc-b"]["enc.key"],
               "--out", existing) == 64
    assert existing.read_bytes() == b"keep me"


def test_usage_errors(files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """Malformed NODE=FILE and times are usage errors (64), not tracebacks."""
    env = seal(files, tmp_path / "m.jgwe")
    assert jgw("envelope", "verify", env, "--ca", files["ca"]["ca.crt"], "--peer", "no-equals-sign") == 64
    assert jgw("envelope", "open", env, *trust(files), "--node", "dc-b", "--key", files["dc-b"]["enc.key"],
               "--out", tmp_path / "x", "--window", "1h", "--at", "yesterday") == 64


def test_help_documents_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    """--help lists every reason code with its exit status."""
    with pytest.raises(SystemExit):
        jgw("envelope", "verify", "--help")
    text = capsys.readouterr().out
    for reason in ("signature-invalid", "certificate-untrusted", "not-recipient", "outside-window"):
        assert reason in text


def test_sealed_file_is_a_valid_envelope(files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """What seal writes parses with the library codec and names the CLI's recipient."""
    env = seal(files, tmp_path / "m.jgwe")
    assert codec.parse(env.read_bytes()).header.recipient_ids() == ("dc-b",)


def test_certs_dir_stands_in_for_the_named_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--certs DIR --node ID`` verifies and opens with a node's certificates directory as the daemon
    loads it (anchors, CRLs, peers, own keys); mixing it with named files, or leaving out --node,
    is a usage error (64) that says what to drop."""
    import datetime as dt

    from gateway.pki.devinit import init_dev

    dev = init_dev(tmp_path / "pki", ["cityhall", "datacenter"], dt.datetime.now(dt.UTC), pq_hybrid=False)
    city, dc = dev.nodes["cityhall"] / "live", dev.nodes["datacenter"]
    src, env, out = tmp_path / "in", tmp_path / "m.jgwe", tmp_path / "out"
    src.write_bytes("転入届 payload".encode())
    assert jgw("envelope", "seal", "--node", "cityhall", "--route", "r1", "--sign-key", city / "signing.key",
               "--sign-cert", city / "signing.pem", "--to", f"datacenter={dc / 'live' / 'encryption.pem'}",
               "--in", src, "--out", env) == 0
    assert jgw("envelope", "verify", env, "--certs", dc, "--node", "datacenter") == 0
    assert "signature(s) by cityhall verify" in capsys.readouterr().out
    assert jgw("envelope", "open", env, "--certs", dc, "--node", "datacenter", "--out", out) == 0
    assert out.read_bytes() == "転入届 payload".encode()

    assert jgw("envelope", "open", env, "--certs", dc, "--node", "datacenter", "--ca", dev.ca.cert_path,
               "--out", tmp_path / "x") == 64
    assert "drop --ca" in capsys.readouterr().out
    assert jgw("envelope", "verify", env, "--certs", dc) == 64
    assert "--certs needs --node" in capsys.readouterr().out
    assert jgw("envelope", "open", env, "--node", "datacenter", "--out", tmp_path / "y") == 64
    assert "--certs DIR" in capsys.readouterr().out
    # the sender's own directory has no decryption key for a message sealed to the data centre
    assert jgw("envelope", "open", env, "--certs", dev.nodes["cityhall"], "--node", "cityhall",
               "--out", tmp_path / "z") not in (0, 64)
    assert not (tmp_path / "z").exists()


# -- issue 15 item 6: outputs checked before any is written; init-dev's files work as they are ----------


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dev PKI with the pq-hybrid material: city-a and dc-b, each the other's peer."""
    import datetime as dt

    from gateway.pki.devinit import init_dev

    root = tmp_path_factory.mktemp("dev") / "pki"
    init_dev(root, ["city-a", "dc-b"], dt.datetime.now(dt.UTC))
    return root


def dev_seal(dev: Path, out: Path, *to: str | Path, suite: str = "pq-hybrid", payload: bytes = b"pq payload"
             ) -> int:
    """city-a seals for dc-b with the files init-dev wrote, unchanged."""
    live = dev / "city-a" / "live"
    src = out.with_suffix(".in")
    src.write_bytes(payload)
    pq = ["--mldsa-key", live / "signing-mldsa65.key", "--mldsa-cert", live / "signing-mldsa65.pem"]
    return jgw("envelope", "seal", "--node", "city-a", "--route", "r1", "--suite", suite,
               "--sign-key", live / "signing.key", "--sign-cert", live / "signing.pem", *pq,
               *[a for t in to for a in ("--to", t)], "--in", src, "--out", out)


def test_open_checks_every_output_before_writing_any(files: dict[str, Mapping[str, Path]],
                                                     tmp_path: Path) -> None:
    """``open --out NEW --meta EXISTING`` refuses (64) before it writes anything: no plaintext is
    left on disk. The same for --out and --meta naming one file, and for a --meta whose directory
    does not exist."""
    env = seal(files, tmp_path / "m.jgwe")
    existing = tmp_path / "meta-exists.json"
    existing.write_bytes(b"keep me")
    opening = ["envelope", "open", env, *trust(files), "--node", "dc-b", "--key", files["dc-b"]["enc.key"]]
    fresh = tmp_path / "payload"
    assert jgw(*opening, "--out", fresh, "--meta", existing) == 64
    assert not fresh.exists() and existing.read_bytes() == b"keep me"
    assert jgw(*opening, "--out", fresh, "--meta", fresh) == 64
    assert not fresh.exists()
    assert jgw(*opening, "--out", fresh, "--meta", tmp_path / "no-such-dir" / "meta.json") == 66
    assert not fresh.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.in", "m.jgwe", "meta-exists.json"]
    # and with both new: both written, 0600, nothing else left behind (no temporary files)
    meta = tmp_path / "meta.json"
    assert jgw(*opening, "--out", fresh, "--meta", meta) == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(meta.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.in", "m.jgwe", "meta-exists.json", "meta.json",
                                                          "payload"]


def test_seal_refuses_an_existing_output_before_sealing(files: dict[str, Mapping[str, Path]],
                                                        tmp_path: Path) -> None:
    """seal never overwrites (64), and writes its envelope 0600 with no temporary file left."""
    out = tmp_path / "m.jgwe"
    out.write_bytes(b"keep me")
    src = tmp_path / "in"
    src.write_bytes(b"x")
    a = files["city-a"]
    argv = ["envelope", "seal", "--node", "city-a", "--route", "r1", "--sign-key", a["sign.key"],
            "--sign-cert", a["sign.crt"], "--to", f"dc-b={files['dc-b']['peer.pem']}", "--in", src]
    assert jgw(*argv, "--out", out) == 64
    assert out.read_bytes() == b"keep me"
    fresh = tmp_path / "n.jgwe"
    assert jgw(*argv, "--out", fresh) == 0
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "m.jgwe", "n.jgwe"]


def test_init_dev_pq_hybrid_files_seal_and_open_as_they_are(dev: Path, tmp_path: Path) -> None:
    """The pq-hybrid files ``jgw pki init-dev`` writes are what seal --to and open --key take:
    the peer's key statement (encryption-hybrid.json) with its signing certificates, or the whole
    peer directory; the two private key files (ML-KEM-768, X25519) as two --key options."""
    peer = dev / "city-a" / "peers" / "dc-b"
    live = dev / "dc-b" / "live"
    by_file, by_dir = tmp_path / "f.jgwe", tmp_path / "d.jgwe"
    assert dev_seal(dev, by_file, *(f"dc-b={peer / n}" for n in (
        "signing.pem", "signing-mldsa65.pem", "encryption.pem", "encryption-hybrid.json"))) == 0
    assert dev_seal(dev, by_dir, f"dc-b={peer}") == 0
    for env in (by_file, by_dir):
        assert codec.parse(env.read_bytes()).suite.name == "pq-hybrid"
        out = tmp_path / f"{env.stem}.out"
        assert jgw("envelope", "open", env, "--ca", dev / "ca" / "ca.pem", "--crl", dev / "ca" / "crl.pem",
                   "--peer", f"city-a={dev / 'dc-b' / 'peers' / 'city-a'}", "--node", "dc-b",
                   "--key", live / "encryption-mlkem768.key", "--key", live / "encryption-x25519.key",
                   "--out", out) == 0
        assert out.read_bytes() == b"pq payload"


def test_key_material_errors_exit_78(dev: Path, files: dict[str, Mapping[str, Path]], tmp_path: Path) -> None:
    """Key material that does not fit together is exit 78 (docs/envelope.md section 12), not 65 (which
    says the envelope is at fault): an ML-KEM-768 key without its X25519 key, a file that is no key,
    a key statement without the certificates that signed it, or a tampered one."""
    env = seal(files, tmp_path / "m.jgwe", suite="pq-hybrid")
    live = dev / "dc-b" / "live"
    opening = ["envelope", "open", env, *trust(files), "--node", "dc-b"]
    assert jgw(*opening, "--key", live / "encryption-mlkem768.key", "--out", tmp_path / "o1") == 78
    not_a_key = tmp_path / "not-a-key.pem"
    not_a_key.write_bytes(files["dc-b"]["sign.crt"].read_bytes())
    os.chmod(not_a_key, 0o600)
    assert jgw(*opening, "--key", not_a_key, "--out", tmp_path / "o2") == 78
    peer = dev / "city-a" / "peers" / "dc-b"
    assert dev_seal(dev, tmp_path / "s1.jgwe", f"dc-b={peer / 'encryption-hybrid.json'}") == 78
    statement = json.loads((peer / "encryption-hybrid.json").read_text())
    statement["node"] = "cs-c"
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(statement))
    assert dev_seal(dev, tmp_path / "s2.jgwe", f"dc-b={peer / 'signing.pem'}",
                    f"dc-b={peer / 'signing-mldsa65.pem'}", f"dc-b={forged}") == 78
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"no PEM here")
    assert jgw("envelope", "verify", env, "--ca", garbage, "--peer",
               f"city-a={files['city-a']['peer.pem']}") == 78
    assert not {"o1", "o2", "s1.jgwe", "s2.jgwe"} & {p.name for p in tmp_path.iterdir()}
