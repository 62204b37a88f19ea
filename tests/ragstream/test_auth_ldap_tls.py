"""LDAP logins over TLS against a real OpenLDAP that refuses simple binds without it.

The directory is filled by :class:`infra.slapd.Directory`, then restarted by this test with
a certificate from a CA made here and ``security simple_bind=128``: a password can only
reach it inside TLS. StartTLS and ldaps:// both log in; a certificate from another CA is
refused (503, never a fallback to clear text); cleartext is refused by the server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ragstream.auth import AuthError, LdapConfig, LdapProvider

pytestmark = pytest.mark.integration
PASSWORD = "tls horse battery staple"


def make_ca(root: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = root / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def server_cert(root: Path, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, pem = root / "server.pem", root / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


@pytest.fixture(scope="module")
def tls_directory(tmp_path_factory):
    from infra.slapd import SLAPD, Directory
    from infra.stack import free_port

    root = tmp_path_factory.mktemp("slapd-tls")
    d = Directory(root).start()
    d.add_user("tls-user", PASSWORD)
    d.add_group("engineers", ["tls-user"])
    d.stop()
    ca_path, ca_key, ca = make_ca(root, "test-ca")
    other_ca, _, _ = make_ca(root, "other-ca")
    crt, key = server_cert(root, ca_key, ca)
    conf = root / "slapd.conf"
    conf.write_text(f"TLSCertificateFile {crt}\nTLSCertificateKeyFile {key}\nTLSCACertificateFile {ca_path}\n"
                    "security simple_bind=128\n" + conf.read_text())
    ldaps_port = free_port()
    urls = f"{d.url}/ ldaps://127.0.0.1:{ldaps_port}/"
    log = open(root / "slapd-tls.log", "wb")
    proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", urls, "-d", "0"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    time.sleep(0.5)
    deadline = time.monotonic() + 20
    import socket

    while True:
        assert proc.poll() is None, (root / "slapd-tls.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", ldaps_port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield {"url": d.url, "ldaps": f"ldaps://127.0.0.1:{ldaps_port}", "ca": ca_path, "other_ca": other_ca,
           "template": f"uid={{username}},ou=people,{d.suffix}", "groups": f"ou=groups,{d.suffix}"}
    proc.terminate()
    proc.wait(10)
    log.close()


def provider(tls_directory: dict, **kw: object) -> LdapProvider:
    return LdapProvider(LdapConfig(user_dn_template=tls_directory["template"], group_base=tls_directory["groups"],
                                   default_roles=("user",), **kw))  # type: ignore[arg-type]


def test_starttls_and_ldaps_log_in(tls_directory):
    for cfg in ({"url": tls_directory["url"], "start_tls": True, "ca_file": tls_directory["ca"]},
                {"url": tls_directory["ldaps"], "ca_file": tls_directory["ca"]}):
        who = provider(tls_directory, **cfg).login(" TLS-User", PASSWORD)
        assert who.subject == "user:tls-user" and "group:engineers" in who.principals, cfg


def test_a_certificate_from_another_ca_is_refused(tls_directory):
    for cfg in ({"url": tls_directory["url"], "start_tls": True, "ca_file": tls_directory["other_ca"]},
                {"url": tls_directory["ldaps"], "ca_file": tls_directory["other_ca"]}):
        with pytest.raises(ConnectionError):
            provider(tls_directory, **cfg).login("tls-user", PASSWORD)


def test_the_directory_refuses_a_password_in_clear(tls_directory):
    cleartext = provider(tls_directory, url=tls_directory["url"], allow_cleartext=True)
    with pytest.raises((AuthError, ConnectionError)):
        cleartext.login("tls-user", PASSWORD)
