"""A mosquitto broker of the test's own on a loopback port (Debian's package,
unpacked by scripts/test-tools.sh); under CI=true a missing mosquitto fails.

`broker()` writes its configuration: persistence (sessions kept across a
restart), TLS from a test CA, a password file and an ACL, each on request.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers.build import component_missing, free_port

START_TIMEOUT_S = 10.0
PROGRAMS = ("mosquitto", "mosquitto_pub", "mosquitto_sub", "mosquitto_passwd")


@dataclass
class Mosquitto:
    port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    ca_file: Path | None = None  # the test CA, where the listener speaks TLS
    broker_log: Path | None = None  # every packet, when made verbose

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        program = shutil.which("mosquitto")
        assert program is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([program, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file, if it keeps one."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def require_mosquitto() -> None:
    for program in PROGRAMS:
        if shutil.which(program) is None:
            component_missing(
                f"{program} is not on PATH: run scripts/test-tools.sh and put the folder it prints on PATH"
            )


def broker(
    folder: Path,
    *,
    persistence: bool = False,
    tls: bool = False,
    users: dict[str, str] | None = None,
    acl: str | None = None,
    verbose: bool = False,
) -> Mosquitto:
    """A configured (not yet started) broker whose files live in `folder`."""
    require_mosquitto()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # as root mosquitto would drop to the user "mosquitto" (or nobody), who
    # cannot write the test's folder
    lines = [f"listener {port} 127.0.0.1"] + (["user root"] if os.geteuid() == 0 else [])
    ca_file = None
    if tls:
        ca_file, cert_file, key_file = make_test_ca(folder)
        lines += [f"cafile {ca_file}", f"certfile {cert_file}", f"keyfile {key_file}"]
    if users is not None:
        passwords = folder / "passwords"
        passwords.write_text("")
        program = shutil.which("mosquitto_passwd")
        assert program is not None
        for user, password in users.items():
            subprocess.run([program, "-b", str(passwords), user, password], check=True, timeout=30, capture_output=True)
        lines += ["allow_anonymous false", f"password_file {passwords}"]
    else:
        lines.append("allow_anonymous true")
    if acl is not None:
        (folder / "acl").write_text(acl)
        lines.append(f"acl_file {folder / 'acl'}")
    if persistence:
        lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 1"]
    else:
        lines.append("persistence false")
    if verbose:
        lines += ["log_type all", f"log_dest file {folder / 'broker.log'}"]
    config = folder / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n")
    return Mosquitto(
        port, config, folder / "mosquitto.log", ca_file=ca_file, broker_log=folder / "broker.log" if verbose else None
    )


def make_test_ca(folder: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a certificate it signed for 127.0.0.1 and
    localhost: (ca.pem, server.pem, server.key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kbuild test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    started = broker(tmp_path / "mosquitto")
    started.start()
    yield started
    started.stop()
