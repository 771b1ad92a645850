"""The reason table: every code has a class that carries it, a disposition and an exit status;
OSErrors map to the codes an operator expects."""

from __future__ import annotations

import errno
import os

import pytest

from gateway.errors import JgwError
from gateway.files import errors as e

CLASSES = [e.NameRefused, e.FileChanged, e.Conflict, e.IntegrityError, e.ChunkError, e.StorageError, e.LinkError,
           e.LinkRefused, e.HostKeyRefused]


def test_every_reason_has_a_class_and_a_row() -> None:
    """Each reason in the table is carried by some class; each class carries only reasons of the table."""
    carried = set().union(*(c.reasons for c in CLASSES))
    assert carried == set(e.REASONS)
    for reason, (meaning, disposition, code) in e.REASONS.items():
        assert reason == reason.lower() and " " not in reason and meaning
        assert disposition in ("retry", "quarantine", "dead-letter", "operator")
        assert 0 < code < 128


@pytest.mark.parametrize("reason", sorted(e.REASONS))
def test_transient_means_retry(reason: str) -> None:
    cls = next(c for c in reversed(CLASSES) if reason in c.reasons)
    err = cls(reason, "detail") if cls is not e.Conflict else e.Conflict("detail")
    assert isinstance(err, JgwError) and str(err) == f"{reason}: detail"
    assert err.transient == (e.REASONS[reason][1] == "retry")
    assert err.link_fault == isinstance(err, e.LinkError)


def test_link_refusals_are_for_an_operator_not_the_file() -> None:
    for reason in ("host-key-unknown", "host-key-changed", "auth-refused", "key-mode", "key-unreadable"):
        assert e.REASONS[reason][1] == "operator"
    assert e.REASONS["unavailable"][1] == "retry"


def test_a_class_refuses_reasons_not_its_own() -> None:
    with pytest.raises(ValueError):
        e.NameRefused("conflict", "x")
    with pytest.raises(ValueError):
        e.FileError("no-such-reason", "x")


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "disk-full"), (errno.EDQUOT, "disk-full"),
                                              (errno.EACCES, "permission-denied"), (errno.EROFS, "permission-denied"),
                                              (errno.EIO, "io-error"), (errno.ENOENT, "io-error")])
def test_from_oserror(code: int, reason: str) -> None:
    err = e.from_oserror(OSError(code, os.strerror(code), "/secret/name.csv"), "write the sink's file")
    assert err.reason == reason and err.transient
    assert "name.csv" not in str(err) and errno.errorcode[code] in err.detail


def test_the_file_codes_are_rows_of_the_one_reason_table() -> None:
    """One table (gateway.reasons): every file code is a row there, with the same text, disposition and
    exit status, so metrics, logs and set-aside headers mean the same for files as for messages."""
    from gateway import reasons

    for code, (text, disposition, exit_code) in e.REASONS.items():
        row = reasons.reason(code)
        assert (row.text, row.disposition.value, row.exit_code) == (text, disposition, exit_code)
    assert set(e.REASONS) <= set(reasons.BY_CODE)
    assert {r.code for r in reasons.TABLE if r.origin == "file"} <= set(e.REASONS)
