"""A SAML 2.0 identity provider for tests, built on pysaml2's own IdP (``saml2.server``).

It signs real assertions with a self-signed certificate and publishes metadata, so the
API's service-provider side (pysaml2 + xmlsec1) validates them as it would a real IdP's.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

IDP_ID = "http://idp.test/metadata"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    key_path, cert_path = directory / f"{name}.key", directory / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TestIdp:
    __test__ = False  # not a test class

    def __init__(self, directory: Path, sp_entity_id: str, acs_url: str, name: str = "idp",
                 keys: tuple[Path, Path] | None = None) -> None:
        from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
        from saml2.config import IdPConfig, SPConfig
        from saml2.metadata import entity_descriptor
        from saml2.saml import NAME_FORMAT_BASIC

        directory.mkdir(parents=True, exist_ok=True)
        self.sp_entity_id, self.acs_url = sp_entity_id, acs_url
        key, cert = keys or self_signed(directory, name)
        self.keys = (key, cert)
        idp_conf = {
            "entityid": IDP_ID, "xmlsec_binary": "/usr/bin/xmlsec1", "key_file": str(key), "cert_file": str(cert),
            "signing_algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "digest_algorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            "service": {"idp": {
                "endpoints": {"single_sign_on_service": [("http://idp.test/sso", BINDING_HTTP_REDIRECT)]},
                "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None,
                                       "name_form": NAME_FORMAT_BASIC}},
            }},
        }
        conf = IdPConfig()
        conf.load(dict(idp_conf))
        self.metadata = directory / f"{name}-metadata.xml"
        self.metadata.write_text(str(entity_descriptor(conf)))
        sp = SPConfig()
        sp.load({"entityid": sp_entity_id, "xmlsec_binary": "/usr/bin/xmlsec1",
                 "metadata": {"local": [str(self.metadata)]},
                 "service": {"sp": {"endpoints": {"assertion_consumer_service": [(acs_url, BINDING_HTTP_POST)]}}}})
        sp_md = directory / f"{name}-sp-metadata.xml"
        sp_md.write_text(str(entity_descriptor(sp)))
        conf = IdPConfig()
        conf.load({**idp_conf, "metadata": {"local": [str(sp_md)]}})
        from saml2.server import Server

        self.server = Server(config=conf)

    def response(self, username: str, groups: list[str], *, audience: str | None = None,
                 sign: bool = True) -> str:
        from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
        from saml2.saml import AUTHN_PASSWORD_PROTECTED

        resp = self.server.create_authn_response(
            identity={"uid": [username], "isMemberOf": groups}, in_response_to=None, destination=self.acs_url,
            sp_entity_id=audience or self.sp_entity_id, userid=username,
            name_id=NameID(format=NAMEID_FORMAT_PERSISTENT, text=username),
            authn={"class_ref": AUTHN_PASSWORD_PROTECTED, "authn_auth": IDP_ID},
            sign_assertion=sign, sign_response=sign)
        return base64.b64encode(str(resp).encode()).decode()
