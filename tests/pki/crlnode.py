"""A private RabbitMQ node whose TLS listener also checks client certificates against CRLs.

RabbitMQ 3.10's rabbitmq.conf has ``ssl_options.crl_check`` but no key for the CRL cache, so the
listener's whole ``ssl_options`` go into advanced.config here, with ``crl_check = peer`` and an
OpenSSL-style hash directory of CRLs (``openssl rehash``). The same recipe is in certs/README.md for
production brokers. To pick up a new CRL: replace the file, rehash, ``ssl:clear_pem_cache()``.

Security: test use only; listens on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.lab.rabbitnode import PrivateNode


@dataclass
class CrlCheckingNode(PrivateNode):
    crl_dir: Path = Path()

    def advanced_config(self) -> Path:
        return self.base / "etc" / "advanced.config"

    def _write_files(self) -> None:
        super()._write_files()
        assert self.tls is not None
        t = self.tls
        self.advanced_config().write_text(
            "[{rabbit, [{ssl_options, ["
            f'{{cacertfile, "{t.cacert}"}}, {{certfile, "{t.cert}"}}, {{keyfile, "{t.key}"}}, '
            "{verify, verify_peer}, {fail_if_no_peer_cert, true}, {versions, ['tlsv1.3', 'tlsv1.2']}, "
            "{crl_check, peer}, "
            f'{{crl_cache, {{ssl_crl_hash_dir, {{internal, [{{dir, "{self.crl_dir}"}}]}}}}}}'
            "]}]}].\n")

    def env(self) -> dict[str, str]:
        env = super().env()
        env["RABBITMQ_ADVANCED_CONFIG_FILE"] = str(self.advanced_config())
        return env

    def install_crl(self, crl_pem: Path) -> None:
        """Replace the CRL the broker checks clients against, as staff would on a real broker."""
        self.crl_dir.mkdir(parents=True, exist_ok=True)
        for old in self.crl_dir.iterdir():
            old.unlink()
        shutil.copyfile(crl_pem, self.crl_dir / "ca.crl.pem")
        subprocess.run(["openssl", "rehash", str(self.crl_dir)], check=True, capture_output=True)
        if self._proc is not None:
            self.ctl("eval", "ssl:clear_pem_cache().")

    def add_external_user(self, name: str) -> None:
        """A user that logs in with EXTERNAL only: no password (research tech-stack §2.2)."""
        self.ctl("add_user", name, "unused-password-cleared-below")
        self.ctl("clear_password", name)
        self.ctl("set_permissions", "-p", "/", name, ".*", ".*", ".*")
