"""What staff install beside a site's config for its file routes (ops/runbooks/file-routes.en.md):
jgw's SFTP client keys, the servers' pinned host keys, the endpoint's host key and each account's
authorized_keys. Tests of the shipped examples put these in place before check-config or run.

Security: test use only; every key is generated here (0600), none is committed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway import config
from tests.lab.sshd import keygen, known_hosts_line


def install_file_material(cfg: config.Config, certs: Path,
                          pin: Callable[[config.Config, str], tuple[str, int, Path]] | None = None) -> None:
    """Keys and pins for ``cfg``'s file routes under ``certs``. ``pin(cfg, server)`` gives (host,
    port, host key) to pin for an SFTP server; by default each gets a host key of its own."""
    (certs / "sftp").mkdir(exist_ok=True)
    for server in cfg.files.sftp.values():
        if not server.client_key.exists():
            keygen(server.client_key)
        if pin is None:
            host, port, host_key = server.host, server.port, keygen(certs / "sftp" / f"{server.name}-host")
        else:
            host, port, host_key = pin(cfg, server.name)
        server.known_hosts.write_text(known_hosts_line(host, port, host_key))
    if cfg.files.endpoint is not None:
        keygen(cfg.files.endpoint.host_key)
        for account in cfg.files.endpoint.accounts.values():
            user = keygen(certs / "sftp" / f"{account.name}-user")
            account.authorized_keys.write_text(user.with_name(user.name + ".pub").read_text())
