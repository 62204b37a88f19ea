"""How the SharePoint source signs in: app-only (client secret or certificate, through
MSAL's client-credentials flow) or a delegated access token obtained elsewhere.

Secrets are read from the environment variable or the file the sources file names, at the
moment a token is needed, and are never logged or put in an error message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ragstream.connector import ConnectorError


def tls_session(ca_bundle: str) -> Any:
    """A requests session that trusts ``ca_bundle``. A plain session's ``verify`` loses to
    ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` when they are set (requests merges the
    environment over the session), so the bundle given in the settings is put back."""
    import requests

    class Session(requests.Session):
        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if verify is None or verify is True:
                merged["verify"] = ca_bundle
            return merged

    session = Session()
    session.verify = ca_bundle
    return session


def read_secret(config: Any, env_field: str, file_field: str) -> str:
    """The secret ``config`` names by ``<env_field>`` (an environment variable) or
    ``<file_field>`` (a file); a ConnectorError naming the field if it cannot be read."""
    env, path = getattr(config, env_field, None), getattr(config, file_field, None)
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConnectorError(f"{env_field}: the environment variable {env} is not set (or empty)")
        return value
    if path:
        try:
            value = Path(path).expanduser().read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConnectorError(f"{file_field}: {path} does not exist") from None
        except OSError as exc:
            raise ConnectorError(f"{file_field}: cannot read {path}: {exc.strerror}") from None
        if not value:
            raise ConnectorError(f"{file_field}: {path} is empty")
        return value
    raise ConnectorError(f"set {env_field} or {file_field}")


def token_provider(config: Any) -> Callable[[], str]:
    """A function returning a bearer token for ``config.site_url``."""
    if config.auth == "access_token":
        return lambda: read_secret(config, "access_token_env", "access_token_file")

    parts = urlsplit(config.site_url)
    scopes = [f"{parts.scheme}://{parts.netloc}/.default"]
    authority = config.authority or f"https://login.microsoftonline.com/{config.tenant}"
    app: list[Any] = []  # built once: MSAL keeps the token in memory until it nears expiry

    def credential() -> Any:
        if config.auth == "client_secret":
            return read_secret(config, "client_secret_env", "client_secret_file")
        try:
            key = Path(config.certificate_key_file).expanduser().read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConnectorError(f"certificate_key_file: {config.certificate_key_file} does not exist") from None
        except OSError as exc:
            raise ConnectorError(f"certificate_key_file: cannot read {config.certificate_key_file}: {exc.strerror}") from None
        cred = {"private_key": key, "thumbprint": config.certificate_thumbprint}
        if config.certificate_passphrase_env:
            cred["passphrase"] = read_secret(config, "certificate_passphrase_env", "certificate_passphrase_env")
        return cred

    def token() -> str:
        if not app:
            import msal
            # An authority named in the settings is trusted as it is (no instance discovery,
            # which asks login.microsoftonline.com whether the host is one of its clouds).
            extra: dict[str, Any] = {"instance_discovery": False} if config.authority else {}
            if getattr(config, "ca_bundle", None):
                extra["http_client"] = tls_session(str(config.ca_bundle))
            try:
                app.append(msal.ConfidentialClientApplication(config.client_id, authority=authority, client_credential=credential(), **extra))
            except ConnectorError:
                raise
            except Exception as exc:  # noqa: BLE001 - MSAL raises ValueError and requests' errors
                raise ConnectorError(f"cannot sign in at {authority} as client {config.client_id}: "
                                     f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
        result = app[0].acquire_token_for_client(scopes=scopes)
        if not isinstance(result, dict) or "access_token" not in result:
            error = (result or {}).get("error", "no token") if isinstance(result, dict) else "no token"
            desc = str((result or {}).get("error_description", "") if isinstance(result, dict) else "")
            raise ConnectorError(f"sign-in at {authority} as client {config.client_id} failed ({config.auth}): "
                                 f"{error}{': ' + desc.splitlines()[0][:300] if desc else ''}; check tenant, "
                                 f"client_id and the {'secret' if config.auth == 'client_secret' else 'certificate'}")
        return str(result["access_token"])

    return token
