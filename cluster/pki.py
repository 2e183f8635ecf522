"""The local control plane's certificates and keys, made with the `openssl` command.

One throwaway CA signs the API server's serving certificate (SAN 127.0.0.1, localhost, the
first Service IP and, with a real node, the host side of its veth) and an admin client
certificate (O=system:masters); a separate RSA key pair signs and verifies service-account
tokens. `sign` makes the real node's certificates (cluster/node.py) with the same CA.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.dir / "apiserver.crt"

    @property
    def server_key(self) -> Path:
        return self.dir / "apiserver.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def sign(pki: Pki, name: str, subject: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate ``name``.crt signed by the CA; returns (cert, key)."""
    _signed(pki, name, subject, extensions)
    return pki.dir / f"{name}.crt", pki.dir / f"{name}.key"


CLIENT = (
    "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=clientAuth\n"
)


def _signed(pki: Pki, name: str, subject: str, extensions: str) -> None:
    ext = pki.dir / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki.dir)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr",
             cwd=pki.dir)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", DAYS, "-sha256", "-extfile", ext.name,
             "-out", f"{name}.crt", cwd=pki.dir)  # fmt: skip


def make_pki(directory: Path, service_ip: str, extra_ips: tuple[str, ...] = ()) -> Pki:
    """Create every key and certificate (once: an existing directory is reused)."""
    pki = Pki(directory)
    if pki.sa_pub.exists():
        return pki
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", DAYS, "-subj", "/CN=kubescribe-local-ca",
             cwd=directory)  # fmt: skip
    _signed(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=IP:127.0.0.1,IP:{service_ip},{''.join(f'IP:{ip},' for ip in extra_ips)}"
        "DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n",
    )
    _signed(pki, "admin", "/O=system:masters/CN=kubescribe-local-admin", CLIENT)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)
    return pki
