"""Who did it, and the record of it: the operator's identity and the audit record of an operator action.

NAME
    actor - ``actor()`` names the human behind an operator command; ``record()`` puts the action
    in the node's audit trail (through the running daemon when one runs)

DESCRIPTION
    ``actor()`` is ``name(uid N)`` of the process, and when that is root (or any other account)
    reached through ``sudo`` or ``su``, the human first: ``tanaka(uid 1001) as root(uid 0)``. The
    human is the login uid the kernel keeps for the session (``/proc/self/loginuid``, set at login
    and not changed by sudo or su), else ``SUDO_USER``/``SUDO_UID``. Both are named when they
    disagree. Every operator record (replay, delete, export, certificate changes) carries it.

Security: reads the process's own credentials and environment; writes the audit trail.
"""

from __future__ import annotations

import os
from typing import Any

from gateway.audit import AuditLog
from gateway.errors import UnavailableError
from gateway.policy.redact import IdKey
from gateway.service import control

_NO_LOGINUID = 4294967295


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OSError):
        return f"uid{uid}"


def _login_uid() -> int | None:
    try:
        with open("/proc/self/loginuid", encoding="ascii") as fh:
            value = int(fh.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == _NO_LOGINUID else value


def actor() -> str:
    """The human behind this command and the account it runs as: ``tanaka(uid 1001) as root(uid 0)``."""
    uid = os.getuid()
    me = f"{_user(uid)}(uid {uid})"
    humans: list[str] = []
    login = _login_uid()
    if login is not None and login != uid:
        humans.append(f"{_user(login)}(uid {login})")
    sudo_user, sudo_uid = os.environ.get("SUDO_USER"), os.environ.get("SUDO_UID", "")
    if sudo_user and sudo_uid.isdigit() and int(sudo_uid) != uid and int(sudo_uid) != login:
        humans.append(f"{sudo_user}(uid {sudo_uid}, sudo)")
    return f"{' and '.join(humans)} as {me}" if humans else me


def record(config: Any, event: str, **fields: Any) -> None:
    """Put an operator action in the node's audit trail. The running daemon holds the log, so it is
    asked to write the record (control socket); when no daemon runs, the log is opened here.
    Raises UnavailableError when the daemon refuses: the caller must not go on with the action."""
    if config.audit is None:
        return

    fields = {"actor": actor(), **fields}
    try:
        answer = control.request(config.node.control_socket, "record", event=event, fields=fields)
    except UnavailableError:
        a = config.audit
        with AuditLog.open(a.directory, config.node.id, retention=a.retention, segment_bytes=a.segment_bytes,
                           segment_age=a.segment_age,
                           id_key=None if a.id_key_file is None else IdKey(a.id_key_file)) as log:
            log.record(event, **fields)
            log.commit()
        return
    if not answer.get("ok"):
        raise UnavailableError(f"the daemon did not record the {event}: {answer.get('error', 'no reason given')}")
