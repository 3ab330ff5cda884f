"""TLS identities of nodes: a self-signed X.509 certificate over the node's Ed25519 key,
pinned in the genesis by the SHA-256 of its DER bytes."""
from __future__ import annotations

import datetime
import hashlib
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID


def make_certificate(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey, node_id: str, hosts: list[str],
                     ca: bool = True) -> bytes:
    """PEM of a self-signed certificate for `node_id`, valid ten years (a peer link's,
    over the node's Ed25519 key; or, with an EC key and `ca=False`, one browsers accept
    for the HTTPS API)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "crmledger")])
    sans: list[x509.GeneralName] = [x509.DNSName(node_id)]
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
            .sign(key, None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes) -> str:
    return fingerprint_der(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))


def make_api_identity(node_id: str, hosts: list[str]) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for a node's HTTPS API: ECDSA P-256, which every
    browser accepts (Ed25519 certificates are not)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return make_certificate(key, node_id, hosts, ca=False), pem
