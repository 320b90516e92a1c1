"""A mosquitto with TLS, a password file, no anonymous access and an ACL, all generated per test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.broker import Mosquitto


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA the broker does not trust


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("edge test CA", ca_key, None, ca_key, ca=True)
    srv_key = _key()
    srv = _cert(
        "localhost",
        srv_key,
        ca.subject,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    cli_key = _key()
    cli = _cert("dev1", cli_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = _key()
    other = _cert("someone else's CA", other_key, None, other_key, ca=True)
    pem = serialization.Encoding.PEM
    (d / "ca.crt").write_bytes(ca.public_bytes(pem))
    (d / "server.crt").write_bytes(srv.public_bytes(pem))
    (d / "client.crt").write_bytes(cli.public_bytes(pem))
    (d / "other-ca.crt").write_bytes(other.public_bytes(pem))
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        _write_key(srv_key, d / "server.key"),
        d / "client.crt",
        _write_key(cli_key, d / "client.key"),
        d / "other-ca.crt",
    )


USERS = {"dev1": "s3cret-dev1", "operator": "op-pass-42"}
ACL = """\
# The device may publish only under its own prefix, and read only its inbound topics.
user dev1
topic write edge/dev1/#
topic read edge/dev1/cmd
topic read edge/dev1/cmd/#
topic read edge/dev1/infer
topic read edge/dev1/infer/#
topic read edge/dev1/model/set
# Home Assistant discovery, which the agent publishes by default.
topic write homeassistant/sensor/edge_dev1/#
topic read homeassistant/status

# The operator (edge-watch, edge-flash push-model) reads everything and sends commands.
user operator
topic readwrite edge/#
"""


@dataclass
class SecureBroker:
    broker: Mosquitto
    pki: Pki
    users: dict[str, str] = field(default_factory=lambda: dict(USERS))

    @property
    def port(self) -> int:
        return self.broker.port

    def url(self, user: str | None = None, password: str | None = None, host: str = "127.0.0.1") -> str:
        auth = f"{user}:{password}@" if user and password is not None else (f"{user}@" if user else "")
        return f"mqtts://{auth}{host}:{self.broker.port}"

    def log(self) -> str:
        return (self.broker.workdir / "mosquitto.log").read_text(errors="replace")


def start_secure_broker(workdir: Path, *, require_certificate: bool = False) -> SecureBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki")
    passwd = workdir / "passwd"
    exe = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    first = True
    for user, password in USERS.items():
        subprocess.run(
            [exe, "-b", *(["-c"] if first else []), str(passwd), user, password],
            check=True,
            capture_output=True,
        )
        first = False
    (workdir / "acl").write_text(ACL)
    conf = "\n".join(
        [
            # As root, mosquitto drops to user 'mosquitto', which cannot read pytest's private tmp dirs.
            *(["user root"] if os.geteuid() == 0 else []),
            "allow_anonymous false",
            f"password_file {passwd}",
            f"acl_file {workdir / 'acl'}",
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "tls_version tlsv1.2",
            f"require_certificate {'true' if require_certificate else 'false'}",
        ]
    )
    broker = Mosquitto(workdir=workdir, listener_conf=conf)
    broker.start()
    return SecureBroker(broker, pki)
