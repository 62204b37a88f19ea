"""Configuration shared by every Kafka client ragstream creates (one place).

* :func:`client_config` — confluent-kafka (librdkafka names);
* :func:`faust_credentials` — Faust/aiokafka (``broker_credentials``);
* :func:`java_client_properties` — Kafka's Java tools and Kafka Connect.

Security comes from the settings in one of two ways:

1. **Configured** (a broker you run, e.g. SASL_SSL on the network):
   ``RAGSTREAM_KAFKA_SECURITY_PROTOCOL``, ``_SASL_MECHANISM``, ``_USERNAME``, ``_PASSWORD`` (or
   ``_PASSWORD_FILE``), ``_SSL_CA_FILE``, ``_SSL_CERT_FILE``/``_SSL_KEY_FILE``.
2. **The local stack** (nothing configured, ``RAGSTREAM_KAFKA_LOCAL_AUTH`` on): SASL_PLAINTEXT
   with SCRAM-SHA-512 on loopback, with the credentials ``stack up`` generated into
   ``<home>/secrets/kafka.json`` (0600). Each component has its own principal
   (:func:`ragstream.kafka_acls.local_principals`); a process uses the one ``RAGSTREAM_KAFKA_PRINCIPAL`` names
   (the stack sets it for each worker and the API), else ``admin`` (the operator's CLI).
   The principals and their ACLs: :mod:`ragstream.kafka_acls`.

Passwords are never logged: they travel only inside client configurations.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
from pathlib import Path
from typing import Any, Iterable

from ragstream.settings import Settings

#: librdkafka's own log lines go through Python logging (and so structlog), not raw stderr.
LIBRDKAFKA_LOG = logging.getLogger("librdkafka")

#: The super user of the local broker (the operator's CLI, `topics ensure`, the stack itself).
ADMIN = "admin"
#: Sources and `ragstream up`'s publisher.
PRODUCER = "producer"
#: The retrieval API.
API = "api"
#: Kafka Connect (Debezium).
CONNECT = "connect"
#: The broker's own identity on the controller listener (SASL/PLAIN, static, super user).
CONTROLLER = "controller"


def stage_principal(stage: str) -> str:
    return f"stage-{stage}"


# --------------------------------------------------------------------------------------
# The local stack's generated credentials
# --------------------------------------------------------------------------------------

def credentials_path(settings: Settings) -> Path:
    return settings.kafka_credentials_file or settings.home / "secrets" / "kafka.json"


def local_credentials(settings: Settings, create: bool = False, principals: Iterable[str] = ()
                      ) -> dict[str, Any] | None:
    """``{"controller": pw, "users": {name: pw}}`` from the home, or None if there is none.

    With ``create``, missing passwords (the controller's, admin's and those of ``principals``;
    see :func:`ragstream.kafka_acls.local_principals`) are generated (random, 256 bits) and
    the file is written atomically with mode 0600 in a 0700 folder."""
    path = credentials_path(settings)
    try:
        creds = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        creds = None
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"cannot read the Kafka credentials {path}: {type(exc).__name__}") from None
    if not create:
        return creds
    creds = creds or {}
    users = dict(creds.get("users") or {})
    wanted = (ADMIN, *principals)
    changed = not creds.get("controller") or any(u not in users for u in wanted)
    if changed:
        creds = {"controller": creds.get("controller") or secrets.token_urlsafe(32),
                 "users": {**users, **{u: secrets.token_urlsafe(32) for u in wanted if u not in users}}}
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(creds, f, indent=1)
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return creds


def uses_local_credentials(settings: Settings) -> bool:
    """Nothing configured, and the local stack's broker requires its generated credentials."""
    return settings.kafka_security_protocol is None and settings.kafka_local_auth


def principal(settings: Settings) -> str:
    return settings.kafka_principal or ADMIN


def _sasl(settings: Settings) -> tuple[str, str, str, str] | None:
    """(protocol, mechanism, username, password), or None without SASL."""
    if uses_local_credentials(settings):
        creds = local_credentials(settings)
        if creds is None:
            return None  # the stack has not generated them yet: the broker will say so
        who = principal(settings)
        try:
            password = creds["users"][who]
        except KeyError:
            raise RuntimeError(f"the local Kafka credentials have no principal {who!r}; "
                               "run `ragstream stack up` to add it") from None
        return "SASL_PLAINTEXT", "SCRAM-SHA-512", who, password
    proto = settings.kafka_security_protocol
    if proto not in ("SASL_PLAINTEXT", "SASL_SSL"):
        return None
    assert settings.kafka_username is not None  # the settings' validator makes sure
    if settings.kafka_password is not None:
        password = settings.kafka_password.get_secret_value()
    else:
        assert settings.kafka_password_file is not None
        try:
            password = settings.kafka_password_file.read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise RuntimeError(f"cannot read RAGSTREAM_KAFKA_PASSWORD_FILE={settings.kafka_password_file}: "
                               f"{type(exc).__name__}") from None
    return proto, settings.kafka_sasl_mechanism, settings.kafka_username, password


def _tls(settings: Settings) -> bool:
    return (settings.kafka_security_protocol or "").endswith("SSL")


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's security properties for these settings (empty: PLAINTEXT)."""
    conf: dict[str, Any] = {}
    sasl = _sasl(settings)
    if sasl is not None:
        proto, mech, user, password = sasl
        conf.update({"security.protocol": proto, "sasl.mechanisms": mech,
                     "sasl.username": user, "sasl.password": password})
    elif settings.kafka_security_protocol is not None:
        conf["security.protocol"] = settings.kafka_security_protocol
    if _tls(settings):
        if settings.kafka_ssl_ca_file:
            conf["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file:
            conf["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
            conf["ssl.key.location"] = str(settings.kafka_ssl_key_file)
    return conf


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": LIBRDKAFKA_LOG,
    }
    conf.update(security_config(settings))
    conf.update(overrides)
    return conf


# --------------------------------------------------------------------------------------
# Faust / aiokafka and the Java clients
# --------------------------------------------------------------------------------------

def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not _tls(settings):
        return None
    ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None)
    if settings.kafka_ssl_cert_file:
        ctx.load_cert_chain(str(settings.kafka_ssl_cert_file), str(settings.kafka_ssl_key_file))
    return ctx


def faust_credentials(settings: Settings) -> Any:
    """Faust's ``broker_credentials`` (None: PLAINTEXT)."""
    import faust

    sasl = _sasl(settings)
    ctx = ssl_context(settings)
    if sasl is not None:
        _proto, mech, user, password = sasl
        return faust.SASLCredentials(username=user, password=password, mechanism=mech, ssl_context=ctx)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_client_properties(settings: Settings) -> dict[str, str]:
    """The same security for Kafka's Java clients (tools, Connect), as client properties."""
    props: dict[str, str] = {}
    sasl = _sasl(settings)
    if sasl is not None:
        proto, mech, user, password = sasl
        module = ("org.apache.kafka.common.security.plain.PlainLoginModule" if mech == "PLAIN"
                  else "org.apache.kafka.common.security.scram.ScramLoginModule")
        props.update({"security.protocol": proto, "sasl.mechanism": mech,
                      "sasl.jaas.config": f"{module} required username={_jaas_quote(user)} "
                                          f"password={_jaas_quote(password)};"})
    elif settings.kafka_security_protocol is not None:
        props["security.protocol"] = settings.kafka_security_protocol
    if _tls(settings):
        if settings.kafka_ssl_ca_file:
            props.update({"ssl.truststore.type": "PEM", "ssl.truststore.location": str(settings.kafka_ssl_ca_file)})
        if settings.kafka_ssl_cert_file:
            props.update({"ssl.keystore.type": "PEM",
                          "ssl.keystore.certificate.chain": settings.kafka_ssl_cert_file.read_text(),
                          "ssl.keystore.key": Path(str(settings.kafka_ssl_key_file)).read_text()})
    return props


def properties_text(props: dict[str, str], prefixes: tuple[str, ...] = ("",)) -> str:
    """``key=value`` lines (Java properties escaping), each key under every prefix given."""
    def esc(v: str) -> str:
        return (v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
                .replace("=", "\\=").replace(":", "\\:").replace("#", "\\#").replace("!", "\\!"))

    return "".join(f"{p}{k}={esc(v)}\n" for p in prefixes for k, v in props.items())


def write_java_client_config(settings: Settings, path: Path) -> Path:
    """A client properties file for a Java tool (``--command-config``, ``--consumer.config``), mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(properties_text(java_client_properties(settings)))
    return path
