"""A local Microsoft Entra ID token service for app-only sign-in (the OAuth 2.0 client
credentials grant), enough for MSAL's ``ConfidentialClientApplication`` to drive it.

* ``GET /<tenant>/v2.0/.well-known/openid-configuration`` — OIDC discovery (an unknown
  tenant gets 400 ``invalid_tenant``, AADSTS90002);
* ``POST /<tenant>/oauth2/v2.0/token`` with ``grant_type=client_credentials`` and either
  ``client_secret`` or a ``client_assertion`` (a JWT signed with the app's certificate key,
  ``x5t`` = the certificate's SHA-1 thumbprint, ``aud`` = the token endpoint, ``iss`` =
  ``sub`` = the client id) → ``{"token_type": "Bearer", "access_token": …}``; a wrong
  secret is 401 ``invalid_client`` (AADSTS7000215), an unknown app 400
  ``unauthorized_client`` (AADSTS700016), a bad assertion 401 ``invalid_client``
  (AADSTS700027).

MSAL accepts only an https authority, so the service listens with TLS: a self-signed
certificate for 127.0.0.1 made at start, whose file (:attr:`FakeEntra.ca_file`) is the CA
bundle to trust.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit


def self_signed(common_name: str, key_path: Path, cert_path: Path, ip: str | None = None) -> str:
    """Write an RSA key and a self-signed certificate (PEM); return the SHA-1 thumbprint (hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1)))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    cert = builder.sign(key, hashes.SHA256())
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class FakeEntra:
    """One tenant; register apps with :meth:`add_secret_app` / :meth:`add_certificate_app`."""

    def __init__(self, workdir: Path, tenant: str = "contoso.onmicrosoft.com", access_token: str = "good-token") -> None:
        self.tenant, self.access_token = tenant, access_token
        self.ca_file = workdir / "entra-tls.pem"
        self._key_file = workdir / "entra-tls.key"
        self_signed("127.0.0.1", self._key_file, self.ca_file, ip="127.0.0.1")
        self.secrets: dict[str, str] = {}
        self.certificates: dict[str, tuple[Any, str]] = {}  # client id → (public key, sha1 thumbprint)
        self.issued: list[dict[str, str]] = []  # what each successful token request asked for
        self._server: ThreadingHTTPServer | None = None

    def add_secret_app(self, client_id: str, secret: str) -> None:
        self.secrets[client_id] = secret

    def add_certificate_app(self, client_id: str, cert_pem: bytes) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        cert = x509.load_pem_x509_certificate(cert_pem)
        thumb = hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        self.certificates[client_id] = (cert.public_key(), thumb)

    def start(self) -> FakeEntra:
        fake = self

        class Handler(_Handler):
            entra = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.ca_file, self._key_file)
        self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="fake-entra").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeEntra:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def authority(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}/{self.tenant}"

    def token_endpoint(self, tenant: str) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_address[1]}/{tenant}/oauth2/v2.0/token"

    # -- the grant -------------------------------------------------------------------------------
    def grant(self, tenant: str, form: dict[str, str]) -> tuple[int, dict]:
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            return 400, _error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type.")
        if client_id not in self.secrets and client_id not in self.certificates:
            return 400, _error("unauthorized_client",
                               f"AADSTS700016: Application with identifier '{client_id}' was not found in the "
                               f"directory '{tenant}'.")
        if "client_secret" in form:
            if self.secrets.get(client_id) != form["client_secret"]:
                return 401, _error("invalid_client", "AADSTS7000215: Invalid client secret provided. Ensure the "
                                                     "secret being sent in the request is the client secret value.")
        elif form.get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            problem = self._check_assertion(tenant, client_id, form.get("client_assertion", ""))
            if problem:
                return 401, _error("invalid_client", f"AADSTS700027: Client assertion failed signature validation. {problem}")
        else:
            return 401, _error("invalid_client", "AADSTS7000218: The request body must contain client_assertion or "
                                                 "client_secret.")
        scope = form.get("scope", "")
        if not scope.endswith("/.default"):
            return 400, _error("invalid_scope", "AADSTS1002012: The provided value for scope is not valid.")
        self.issued.append({"client_id": client_id, "scope": scope, "how": "secret" if "client_secret" in form else "certificate"})
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": self.access_token}

    def _check_assertion(self, tenant: str, client_id: str, assertion: str) -> str | None:
        import jwt

        if client_id not in self.certificates:
            return "No certificate is registered for this application."
        public_key, thumb = self.certificates[client_id]
        try:
            header = jwt.get_unverified_header(assertion)
            x5t = header.get("x5t") or ""
            if base64.urlsafe_b64decode(x5t + "=" * (-len(x5t) % 4)).hex() != thumb:
                return "The key used (x5t) is not registered."
            claims = jwt.decode(assertion, public_key, algorithms=["RS256", "PS256"],
                                audience=self.token_endpoint(tenant), options={"require": ["exp", "iss", "sub", "aud"]})
        except jwt.PyJWTError as exc:
            return f"{type(exc).__name__}: {exc}"
        if claims["iss"] != client_id or claims["sub"] != client_id:
            return "iss and sub must be the client id."
        if claims["exp"] < time.time():
            return "The assertion expired."
        return None


def _error(code: str, description: str) -> dict:
    return {"error": code, "error_description": f"{description}\r\nTrace ID: 00000000-0000-0000-0000-000000000000",
            "error_codes": [int(description.split(":")[0].removeprefix("AADSTS"))], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ")}


class _Handler(BaseHTTPRequestHandler):
    entra: FakeEntra
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            tenant = parts[0]
            if tenant != self.entra.tenant:
                self._send(400, _error("invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found."))
                return
            base = self.entra.authority.rsplit("/", 1)[0] + f"/{tenant}"
            self._send(200, {"issuer": f"{base}/v2.0", "token_endpoint": self.entra.token_endpoint(tenant),
                             "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                             "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                             "jwks_uri": f"{base}/discovery/v2.0/keys",
                             "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                                       "client_secret_basic"]})
            return
        self._send(404, _error("invalid_request", "AADSTS900561: The endpoint only accepts POST requests."))

    def do_POST(self) -> None:
        parts = [p for p in urlsplit(self.path).path.split("/") if p]
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            if parts[0] != self.entra.tenant:
                self._send(400, _error("invalid_tenant", f"AADSTS90002: Tenant '{parts[0]}' not found."))
                return
            self._send(*self.entra.grant(parts[0], form))
            return
        self._send(404, _error("invalid_request", "AADSTS900561: Unknown endpoint."))
