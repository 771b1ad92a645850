"""``jgw certs status``: every certificate and CRL of a node, its state and how long it has left.

Unlike the loader, which stops at the first problem, this looks at everything and reports each
item: trust anchors and intermediates, CRLs, the live generation, the previous one, staging, and
every peer. An item *counts* towards the check result when the node depends on it now (anchors,
CRLs, live, peers' current certificates); the previous generation, staging and peers' previous
certificates are shown for information. The check fails when a counting item is refused, expired,
or expires within ``warn`` (CRLs: nextUpdate within ``crl_warn``), or when an interrupted rotation
awaits repair.

Security: read-only over the certs directory; shows subjects (node ids, CA names), serial numbers
and dates, never key material.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import JgwError
from gateway.pki import hybrid
from gateway.pki.errors import CertificateError, KeyFileModeError
from gateway.pki.files import read_certificates
from gateway.pki.generation import SLOT_BY_NAME, SLOTS, load_identity
from gateway.pki.layout import CertsDir, cert_name, key_name
from gateway.pki.peers import HYBRID_STEM, PEER_SLOTS
from gateway.pki.purpose import Purpose, common_name
from gateway.pki.rotation import needs_repair
from gateway.pki.trust import TrustStore, VerifiedCertificate, utc

DEFAULT_WARN = dt.timedelta(days=30)
DEFAULT_CRL_WARN = dt.timedelta(hours=24)


@dataclass
class Row:
    section: str
    item: str
    subject: str = ""
    trusted_by: str = ""
    not_after: dt.datetime | None = None
    state: str = "ok"
    detail: str = ""
    counts: bool = True

    def days_left(self, now: dt.datetime) -> float | None:
        if self.not_after is None:
            return None
        return (self.not_after - now).total_seconds() / 86400

    @property
    def problem(self) -> bool:
        return self.state != "ok"


@dataclass
class Report:
    node_id: str
    certs_dir: Path
    now: dt.datetime
    live: str | None = None
    previous: str | None = None
    rows: list[Row] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.notices) or any(r.counts and r.problem for r in self.rows)

    def as_json(self) -> dict[str, object]:
        return {
            "node": self.node_id, "certs_dir": str(self.certs_dir), "checked_at": _iso(self.now),
            "live": self.live, "previous": self.previous, "ok": not self.failed, "notices": self.notices,
            "items": [self._item(r) for r in self.rows],
        }

    def _item(self, r: Row) -> dict[str, object]:
        days = r.days_left(self.now)
        return {"section": r.section, "item": r.item, "subject": r.subject, "trusted_by": r.trusted_by,
                "not_after": _iso(r.not_after) if r.not_after else None,
                "days_left": None if days is None else round(days, 2), "state": r.state, "detail": r.detail,
                "counts": r.counts}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _expiry_state(not_after: dt.datetime, now: dt.datetime, warn: dt.timedelta) -> tuple[str, str]:
    left = not_after - now
    if left <= dt.timedelta(0):
        return "expired", f"expired at {_iso(not_after)}"
    if left <= warn:
        return "expiring", f"expires in {left.total_seconds() / 86400:.1f} days: renew it now"
    return "ok", ""


def _refused(section: str, item: str, err: JgwError, counts: bool, subject: str = "") -> Row:
    code = getattr(err, "code", "refused")
    reason = getattr(err, "reason", str(err))
    where = getattr(err, "file", "")
    detail = f"{Path(where).name}: {reason}" if where else reason
    return Row(section, item, subject=subject, state=code, detail=detail, counts=counts)


def _verified_row(section: str, item: str, v: VerifiedCertificate, now: dt.datetime, warn: dt.timedelta,
                  counts: bool) -> Row:
    state, detail = _expiry_state(v.not_after, now, warn)
    subject = v.node_id or common_name(v.cert.subject)
    return Row(section, item, subject=subject, trusted_by=v.anchor_name, not_after=v.not_after, state=state,
               detail=detail or f"serial {v.cert.serial_number:x}, issued by {v.issuer_name}", counts=counts)


def collect(certs_dir: Path, node_id: str, now: dt.datetime, *, warn: dt.timedelta = DEFAULT_WARN,
            crl_warn: dt.timedelta = DEFAULT_CRL_WARN) -> Report:
    now = utc(now)
    cd = CertsDir(certs_dir)
    report = Report(node_id, certs_dir, now)
    report.notices += [f"needs repair: {what} (run jgw certs rotate --dry-run or any jgw certs command "
                       f"that changes the directory)" for what in needs_repair(cd)]
    problems: list[CertificateError] = []
    try:
        trust = TrustStore.load(cd.trust, now, problems=problems)
    except CertificateError as err:
        report.rows.append(_refused("trust", err.key, err, True))
        return report
    _trust_rows(report, trust, problems, now, warn, crl_warn)
    for name in ("live", "previous"):
        try:
            gen = cd.pointer(name)
        except CertificateError as err:
            report.rows.append(_refused(name, "pointer", err, name == "live"))
            continue
        setattr(report, name, gen)
        if gen is None:
            if name == "live":
                report.rows.append(Row("live", "generation", state="missing",
                                       detail="no live generation: stage material and run jgw certs rotate"))
            continue
        if name == "previous" and gen == report.live:
            continue
        _generation_rows(report, f"{name} {gen}", cd.generation_dir(gen), trust, now, warn,
                         counts=name == "live")
    if cd.staging.is_dir():
        _generation_rows(report, "staging", cd.staging, trust, now, warn, counts=False)
    if cd.peers.is_dir():
        for peer in sorted(p for p in cd.peers.iterdir() if p.is_dir() and not p.name.startswith(".")):
            _peer_rows(report, peer, trust, now, warn)
    return report


def _trust_rows(report: Report, trust: TrustStore, problems: list[CertificateError], now: dt.datetime,
                warn: dt.timedelta, crl_warn: dt.timedelta) -> None:
    for ca in trust.cas:
        state, detail = _expiry_state(ca.cert.not_valid_after_utc, now, warn)
        report.rows.append(Row("trust", "anchor" if ca.anchor else "intermediate", subject=ca.name,
                               trusted_by="(itself)" if ca.anchor else common_name(ca.cert.issuer),
                               not_after=ca.cert.not_valid_after_utc, state=state,
                               detail=detail or ca.path.name))
    for err in problems:
        report.rows.append(_refused("trust", err.key, err, True))
    for loaded in trust.crls:
        left = loaded.next_update - now
        state, detail = "ok", f"{loaded.path.name}, {len(list(loaded.crl))} revoked"
        if left <= crl_warn:
            state = "expiring"
            detail = f"next update due in {left.total_seconds() / 3600:.1f} h: install the CA's new CRL"
        report.rows.append(Row("trust", "crl", subject=loaded.issuer.name, trusted_by=loaded.issuer.name,
                               not_after=loaded.next_update, state=state, detail=detail))
    for ca in trust.cas:
        if trust.crl_for(ca.cert) is None:
            report.rows.append(Row("trust", "crl", subject=ca.name, state="crl-missing",
                                   detail="no CRL for this CA: certificates it issued cannot be checked "
                                          "(install one with jgw certs install --crl)",
                                   counts=False))


def _generation_rows(report: Report, section: str, directory: Path, trust: TrustStore, now: dt.datetime,
                     warn: dt.timedelta, *, counts: bool) -> None:
    for slot in SLOTS:
        if not slot.required and not (directory / cert_name(slot.name)).exists():
            continue
        if counts is False and section == "staging" and not (directory / key_name(slot.name)).exists():
            continue
        try:
            ident = load_identity(directory, slot, report.node_id, trust, at=now)
        except (CertificateError, KeyFileModeError) as err:
            row = _refused(section, slot.name, err, counts, subject=report.node_id)
            if section == "staging" and err.code == "key-mismatch":
                row.state, row.detail = "pending", "new key waiting for its certificate (jgw certs install)"
            report.rows.append(row)
            continue
        report.rows.append(_verified_row(section, slot.name, ident.verified, now, warn, counts))
    statement = directory / hybrid.STATEMENT_FILE
    if statement.exists():
        signers = []
        for name in ("signing", "signing-mldsa65"):
            try:
                signers.append(read_certificates(directory / cert_name(name))[0])
            except CertificateError:
                continue
        try:
            hyb = hybrid.read_statement(statement, report.node_id, signers)
            report.rows.append(Row(section, "encryption-hybrid", subject=report.node_id,
                                   trusted_by="its signing keys", detail=f"key id {hyb.key_id}",
                                   counts=counts))
        except CertificateError as err:
            report.rows.append(_refused(section, "encryption-hybrid", err, counts, subject=report.node_id))


def _peer_rows(report: Report, directory: Path, trust: TrustStore, now: dt.datetime,
               warn: dt.timedelta) -> None:
    peer = directory.name
    section = f"peer {peer}"
    signers = []
    for slot_name in PEER_SLOTS:
        slot = SLOT_BY_NAME[slot_name]
        for suffix, counts in ((".pem", True), (".previous.pem", False)):
            path = directory / f"{slot_name}{suffix}"
            item = slot_name + (" (previous)" if not counts else "")
            if not path.exists():
                if counts and slot.required:
                    report.rows.append(Row(section, item, subject=peer, state="missing",
                                           detail=f"{path.name} not installed "
                                                  f"(jgw certs install --peer {peer})"))
                continue
            try:
                certs = read_certificates(path)
                v = trust.verify(certs[0], slot.purpose, at=now, node_id=peer, chain=certs[1:],
                                 file=str(path))
            except CertificateError as err:
                report.rows.append(_refused(section, item, err, counts, subject=peer))
                continue
            report.rows.append(_verified_row(section, item, v, now, warn, counts))
            if slot.purpose is Purpose.SIGNING:
                signers.append(v.cert)
    for suffix, counts in ((".json", True), (".previous.json", False)):
        path = directory / f"{HYBRID_STEM}{suffix}"
        item = "encryption-hybrid" + ("" if counts else " (previous)")
        if not path.exists():
            continue
        try:
            hyb = hybrid.read_statement(path, peer, signers)
        except CertificateError as err:
            report.rows.append(_refused(section, item, err, counts, subject=peer))
            continue
        report.rows.append(Row(section, item, subject=peer, trusted_by="its signing keys",
                               detail=f"key id {hyb.key_id}", counts=counts))


def render(report: Report) -> str:
    """The table staff read at 3 a.m.: one line per item, problems spelled out."""
    now = report.now
    header = ("SECTION", "ITEM", "SUBJECT", "TRUSTED BY", "NOT AFTER", "DAYS", "STATE")
    lines: list[tuple[str, ...]] = [header]
    for r in report.rows:
        days = r.days_left(now)
        lines.append((r.section, r.item, r.subject, r.trusted_by,
                      f"{r.not_after:%Y-%m-%d %H:%M}" if r.not_after else "-",
                      "-" if days is None else f"{days:.1f}" if r.item == "crl" else f"{days:.0f}",
                      r.state if r.counts or r.state == "ok" else f"{r.state} (info)"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = [f"node {report.node_id}: live {report.live or '(none)'}, previous {report.previous or '(none)'}; "
           f"checked {_iso(now)}"]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in lines]
    details = [f"  {r.section} / {r.item}: {r.detail}" for r in report.rows if r.problem and r.detail]
    if details:
        out += ["", "problems:" if report.failed else "notes:", *details]
    out += [f"  {n}" for n in report.notices]
    out.append("")
    out.append("RESULT: " + ("attention needed" if report.failed else "all certificates and CRLs in order"))
    return "\n".join(out)
