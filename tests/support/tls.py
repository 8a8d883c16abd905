"""A test CA and the certificates it signs, made in the test (``cryptography``, which aiortc
already pulls in): the bridge's SIP listener and the TLS side of the fake Meta use them."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class CertPair:
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


class TestCA:
    """A CA in ``directory`` (``ca.pem``) that issues server certificates."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "Bridge Test CA") -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, stem: str, *names: str) -> CertPair:
        """A server certificate for DNS names and IP addresses ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pair = CertPair(self.dir / f"{stem}.pem", self.dir / f"{stem}.key")
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, pair.key)
        return pair

    def serial_of(self, pem: bytes) -> int:
        return x509.load_pem_x509_certificate(pem).serial_number


def encrypted(plain: Path, to: Path, passphrase: str) -> Path:
    """``plain``'s key written to ``to`` encrypted with ``passphrase`` (PKCS#8, PEM)."""
    key = serialization.load_pem_private_key(plain.read_bytes(), None)
    to.write_bytes(
        key.private_bytes(  # type: ignore[union-attr]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode()),
        )
    )
    return to


async def peer_names(port: int, cafile: str, name: str) -> list[str]:
    """The DNS names of the certificate a TLS listener on 127.0.0.1 shows a client hello
    naming ``name`` (SNI)."""
    ctx = ssl.create_default_context(cafile=cafile)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=name)
    cert = writer.get_extra_info("peercert")
    writer.close()
    return [v for k, v in cert["subjectAltName"] if k == "DNS"]
