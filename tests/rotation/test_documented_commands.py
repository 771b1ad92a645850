"""The runbook's ``jgw certs`` command lines parse as written (ops/runbooks/cert-rotation.*.md).

Staff copy these lines at 3 a.m.; argparse once took ``CONFIG`` as the only FILE of
``jgw certs install CONFIG --peer ID FILE...`` and refused the files with exit 2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import build_parser


@pytest.mark.parametrize(("argv", "expect"), [
    (["certs", "install", "jgw.toml", "--crl", "ca-latest.crl"],
     {"config": "jgw.toml", "files": [Path("ca-latest.crl")], "crl": True}),
    (["certs", "install", "jgw.toml", "--anchor", "new-ca.pem"],
     {"config": "jgw.toml", "files": [Path("new-ca.pem")], "anchor": True}),
    (["certs", "install", "jgw.toml", "--peer", "dc-b", "usb/signing.pem", "usb/encryption.pem"],
     {"config": "jgw.toml", "files": [Path("usb/signing.pem"), Path("usb/encryption.pem")], "peer": "dc-b"}),
    (["certs", "install", "jgw.toml", "issued/a.pem", "issued/b.pem", "--dry-run"],
     {"config": "jgw.toml", "files": [Path("issued/a.pem"), Path("issued/b.pem")], "dry_run": True}),
    (["certs", "install", "jgw.toml", "--purpose", "signing", "issued/a.pem"],
     {"config": "jgw.toml", "files": [Path("issued/a.pem")], "purpose": "signing"}),
    (["certs", "rotate", "jgw.toml", "--check-brokers", "--dry-run"],
     {"config": "jgw.toml", "check_brokers": True, "dry_run": True}),
    (["certs", "export", "jgw.toml", "--staging", "--out", "usb"],
     {"config": "jgw.toml", "staging": True, "out": Path("usb")}),
])
def test_runbook_command_lines_parse(argv: list[str], expect: dict[str, object]) -> None:
    args = vars(build_parser().parse_args(argv))
    assert {k: args[k] for k in expect} == expect


def test_conflicting_kinds_are_still_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["certs", "install", "jgw.toml", "--crl", "--peer", "dc-b", "f.pem"])
    assert info.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_audit_show_on_a_wrong_path_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An auditor's typo is a usage problem (exit 66 naming the path), not an 'unexpected error' (70)."""
    from gateway.cli import main

    missing = tmp_path / "no-audit-here"
    assert main(["audit", "show", str(missing), "--event", "cert-change"]) == 66
    assert f"{missing}: no such file or directory" in capsys.readouterr().err
