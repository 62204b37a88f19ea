"""The one settings object.

Every knob is read from the environment with the prefix ``RAGSTREAM_`` (for example
``RAGSTREAM_KAFKA_BOOTSTRAP=broker:9092``) or from a ``.env`` file in the working
directory, and validated once at start-up: a bad value stops the command with a message
that names the variable and what it accepts, instead of failing later mid-stream.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]
KafkaProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
KafkaMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class SettingsError(SystemExit):
    """Configuration is invalid; carries a message meant for the person starting ragstream."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RAGSTREAM_",
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated host:port.",
    )
    partitions: int = Field(
        6,
        ge=1,
        le=1024,
        description="Partition count shared by every doc_id-keyed stage topic (ordering per document needs one count).",
    )
    replication_factor: int = Field(1, ge=1, le=7, description="Replication factor for new topics.")
    raw_retention_days: float = Field(
        7,
        gt=0,
        description="Retention of topics that hold unredacted source content (rag.changes, its dead letters).",
    )
    compaction_lag_hours: float = Field(
        24,
        gt=0,
        description="Upper bound on how long a deleted document's old value may survive compaction (GDPR erasure).",
    )
    acl_refresh_s: float = Field(
        5.0, gt=0, description="How often a searching process fetches the index's new ACL sets (a document "
                               "whose permission set is new is searchable at most this much later).")
    milvus_search_consistency: Literal["auto", "Strong", "Session", "Bounded", "Eventually"] = Field(
        "auto", description="Consistency level of searches (API, `ragstream search`). 'auto': Strong on the local "
                            "milvus-lite (free there), Bounded on a Milvus server, where a Strong read waits for the "
                            "server's next time tick (~200-400 ms; bench/README.md) and a Bounded read sees every "
                            "write older than the server's common.gracefulTime (5 s by default): an index update, "
                            "delete or ACL revocation reaches searches at most that much later. (Session is no "
                            "better for a process that never writes: pymilvus then reads Eventually.) Index writes "
                            "and verify always read Strong.")
    retention_sweep_s: float = Field(
        3600, gt=0, description="How often the dsr worker removes documents whose retention has ended.")
    dsr_verify_timeout_s: float | None = Field(
        None, gt=0,
        description="How long an erasure waits for compaction before its receipt says 'pending' "
                    "(default: twice the compaction lag plus a minute).")

    # --- Kafka security (ragstream/kafka.py applies it to every client; docs/security.md) --------
    kafka_local_auth: bool = Field(
        True, description="The local broker (`stack up`) requires SASL/SCRAM-SHA-512 on loopback and enforces ACLs; "
                           "credentials are generated into <home>/secrets/kafka.json (0600) and used automatically.")
    kafka_security_protocol: KafkaProtocol | None = Field(
        None, description="PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or SSL for a broker you run (networked). Unset: the "
                          "local stack's (its generated credentials when kafka_local_auth is on).")
    kafka_sasl_mechanism: KafkaMechanism = Field("SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols).")
    kafka_username: str | None = Field(None, description="SASL user name (SASL_* protocols).")
    kafka_password: SecretStr | None = Field(None, description="SASL password (a secret; or kafka_password_file).")
    kafka_password_file: Path | None = Field(None, description="A file holding the SASL password (first line).")
    kafka_ssl_ca_file: Path | None = Field(None, description="PEM CA bundle the broker's certificate is checked "
                                                             "against (SSL, SASL_SSL). Unset: the system's.")
    kafka_ssl_cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    kafka_ssl_key_file: Path | None = Field(None, description="PEM private key of the client certificate.")
    kafka_principal: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9-]{0,63}$",
        description="Which of the local stack's principals this process uses (admin, producer, api, connect, "
                    "stage-<name>); the stack sets it for each worker and the API. Unset: admin (the operator).")

    # --- Local stack ---------------------------------------------------------------------
    home: Path = Field(
        PROJECT_ROOT / ".ragstream",
        description="Where the local stack keeps its data, pid files and logs.",
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "ragstream",
        description="Cache for the Kafka/Connect jars resolved from Maven Central (shared by every home).",
    )
    kafka_credentials_file: Path | None = Field(
        None, validate_default=True,
        description="The local stack's generated Kafka credentials (kafka_local_auth). Default: "
                    "<home>/secrets/kafka.json, fixed when the settings are loaded.")
    kafka_port: Port = 9092
    kafka_controller_port: Port = 9093
    milvus_port: Port = 19530
    milvus_engine: Literal["lite", "server"] = Field(
        "lite", description="The Milvus the local stack runs (`stack up`, `up`): 'lite' (milvus-lite, pure Python) or "
                            "'server' (the Milvus 2.3 standalone binary of the `milvus` package: pip install "
                            "'ragstream[server]'; dense-only search, no BM25). Ignored with RAGSTREAM_MILVUS_URI.")
    java: str = Field("java", description="Java 17+ executable (name on PATH or absolute path).")
    mvn: str = Field("mvn", description="Maven executable used to resolve the Kafka jars.")
    maven_repo_url: str | None = Field(
        None,
        description="A Maven repository mirror to use instead of Maven Central.",
    )
    broker_heap: str = Field("512m", pattern=r"^\d+[mMgG]$", description="JVM heap for the local broker.")
    start_timeout_s: float = Field(90, gt=0, description="How long `stack up` waits for a service to answer.")
    restart_backoff_s: float = Field(1.0, gt=0, description="First delay before a supervisor restarts a worker "
                                                            "or the API that exited; doubles on each restart.")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest delay between two restarts.")
    restart_reset_after_s: float = Field(60.0, gt=0, description="A run at least this long counts as stable and "
                                                                 "resets the restart delay.")

    # --- Database CDC (PostgreSQL -> Debezium on Kafka Connect -> normalize) -----------
    postgres_port: Port = Field(5433, description="Port of the local PostgreSQL (`stack up -s postgres`).")
    connect_port: Port = Field(8083, description="REST port of the local Kafka Connect worker.")
    connect_heap: str = Field("768m", pattern=r"^\d+[mMgG]$", description="JVM heap for the local Connect worker.")
    connect_url: str | None = Field(None, description="Kafka Connect REST URL. Default: the local worker.")
    connect_username: str = Field(
        "ragstream", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="User name sent to the Kafka Connect REST API (HTTP basic auth; the local worker's user).")
    connect_password: SecretStr | None = Field(
        None, description="Password for a Kafka Connect REST API you run with basic auth (a secret). Unset: the local "
                          "worker's, which `stack up -s connect` generates into connect_credentials_file.")
    connect_credentials_file: Path | None = Field(
        None, validate_default=True,
        description="The local Connect worker's REST credentials (JAAS PropertyFileLoginModule file, one line "
                    "<connect_username>=<password>, random, mode 0600). Default: <home>/secrets/connect-rest.properties, "
                    "fixed when the settings are loaded. Sent only to a Connect on loopback.")
    cdc_dsn: SecretStr | None = Field(
        None, description="PostgreSQL the connector captures (libpq URI; a secret, it may hold a password: use "
                          "resolved_cdc_dsn, print cdc_dsn_shown). Default: the local one, database ragstream, "
                          "with the password from postgres_password_file.")
    postgres_password_file: Path | None = Field(
        None, validate_default=True,
        description="The local PostgreSQL's password of the role ragstream (one line password=<value>, random, mode "
                    "0600; Debezium reads it through Connect's FileConfigProvider). Default: "
                    "<home>/secrets/postgres.properties, fixed when the settings are loaded; `stack up -s postgres` "
                    "generates it. Used only when cdc_dsn is unset.")
    cdc_mapping_file: Path | None = Field(
        None, description="Table-to-document mapping of the normalize stage (TOML); see docs/cdc.md.")

    # --- Knowledge graph (the graph stage and its Neo4j) -------------------------------
    graph_enabled: bool = Field(
        False, description="Run the graph stage (entities and relations of the documents in Neo4j): `ragstream up` "
                           "starts Neo4j and the graph worker, erasure and the API reach the graph.")
    neo4j_port: Port = Field(7687, description="Bolt port of the local Neo4j (`stack up -s neo4j`).")
    neo4j_heap: str = Field("512m", pattern=r"^\d+[mMgG]$", description="JVM heap for the local Neo4j.")
    neo4j_uri: str | None = Field(None, description="Neo4j Bolt URI. Default: the local one on neo4j_port.")
    neo4j_user: str = Field("neo4j", description="Neo4j user.")
    neo4j_password: SecretStr | None = Field(
        None, description="Neo4j password (a secret). Default: the one generated for the local Neo4j, "
                          "<home>/neo4j/password (mode 0600).")

    # --- Milvus ----------------------------------------------------------------------
    milvus_uri: str | None = Field(
        None,
        description="Milvus URI (http://host:19530 or a local .db file). Default: the local milvus-lite server.",
    )
    milvus_token: SecretStr | None = Field(
        None, description="Token for a Milvus you run (an API key, or user:password; a secret). Unset: the local "
                          "milvus-lite server's, which `stack up` generates into milvus_token_file.")
    milvus_token_file: Path | None = Field(
        None, validate_default=True,
        description="The local milvus-lite server's token (random, 256 bits, mode 0600), checked on every request. "
                    "Default: <home>/secrets/milvus.token, fixed when the settings are loaded. Sent only to the "
                    "local server (no milvus_uri, or one on loopback).")
    milvus_ca_file: Path | None = Field(
        None, description="PEM CA bundle an https:// Milvus' certificate is checked against (a private CA). "
                          "Unset: the system's CAs.")
    milvus_client_cert_file: Path | None = Field(
        None, description="PEM client certificate for an https:// Milvus that demands one (mutual TLS; with "
                          "milvus_client_key_file).")
    milvus_client_key_file: Path | None = Field(
        None, description="PEM private key of milvus_client_cert_file (a secret file: keep it 0600).")

    # --- Pipeline ----------------------------------------------------------------------
    embed_backend: str = Field("onnx", pattern="^(local|onnx|onnx-int8|openai)$",
                               description="'local' (bundled all-MiniLM-L6-v2 on PyTorch), 'onnx' / 'onnx-int8' "
                                           "(the same model on ONNX Runtime, no PyTorch in the worker) or 'openai' "
                                           "(any OpenAI-compatible /v1/embeddings).")
    embed_url: str | None = Field(None, description="Base URL of an OpenAI-compatible endpoint, e.g. http://tei:8080/v1")
    embed_model: str | None = Field(None, description="Model name sent to the remote endpoint.")
    embed_api_key: SecretStr | None = Field(None, description="Bearer token for the remote endpoint (a secret: "
                                                               "never logged or shown; .get_secret_value()).")
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Chunks per model call (across documents).")
    chunk_max_tokens: int = Field(200, ge=32, le=8192, description="Upper bound of a chunk, in model tokens.")
    chunk_overlap_tokens: int = Field(24, ge=0, description="Tokens of the previous chunk repeated at a chunk's start.")
    inline_max_bytes: int = Field(1_000_000, ge=1024,
                                  description="Larger documents travel by reference (claim check) through Kafka.")
    max_document_bytes: int = Field(64 * 2**20, ge=1,
                                    description="Source files larger than this are skipped (reason too_large), "
                                                "not read.")
    max_text_bytes: int = Field(16 * 2**20, ge=1,
                                description="Documents whose extracted text is larger than this (UTF-8) are "
                                            "skipped (reason text_too_large).")
    verify_interval_s: float = Field(300, ge=0, description="While `ragstream up` watches, how often it compares "
                                                            "the folder with the index when the pipeline is idle "
                                                            "(ragstream_verify_drift_documents); 0: never.")
    max_message_bytes: int = Field(
        1_000_000, ge=65_536, le=100_000_000,
        description="Largest message ragstream writes to a topic (the topics' max.message.bytes allows it, plus "
                    "64 KiB for headers); a larger payload goes to the blob store and travels as a claim check.")
    retry_budget_s: float = Field(
        600, gt=0, description="How long one input may keep failing transiently (broker, Milvus, model server "
                               "unavailable) before it is dead-lettered with the reason; replayable.")
    stall_after_s: float = Field(
        300, gt=0, description="A partition with input waiting and no progress for this long makes the worker's "
                               "/healthz answer 503 (and `ragstream stack status` say degraded).")
    collection: str = Field("ragstream_chunks", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$",
                            description="Milvus alias that search reads; reindexing swaps what it points at.")
    metrics_port_base: Port = Field(9300, description="Stage metrics ports: base + offset per worker.")
    metrics_host: str = Field(
        "127.0.0.1", description="Interface the stage workers serve /metrics and /healthz on: loopback unless a "
                                 "scraper or probe elsewhere must reach them (e.g. 0.0.0.0 in a container).")

    sources_file: Path | None = Field(
        None, description="Sources to index, TOML: one [sources.<id>] table per source with its kind and settings "
                          "(ragstream/connector.py, declared_sources); `ragstream up` runs them.")
    connector_modules: str = Field(
        "", pattern=r"^[A-Za-z0-9_., ]*$",
        description="Extra source connector packages, comma-separated import paths, each defining CONNECTOR "
                    "(ragstream/connector.py); the connectors under producers/ are always found.")

    # --- Observability -------------------------------------------------------------------
    policy_file: Path | None = Field(
        None, description="Compliance policy (TOML): frameworks and actions per source. Unset: GDPR defaults."
    )
    auth_file: Path | None = Field(
        None, description="API authentication and RBAC, TOML: OIDC issuers, LDAP, sessions, rate limit, roles.")
    api_port: Port = Field(8800, description="Port of the retrieval API (`ragstream api`, `ragstream up`).")
    api_host: str = Field("127.0.0.1", description="Interface the API listens on (loopback unless you mean it).")
    api_trusted_proxies: str = Field(
        "", description="Comma-separated addresses/networks of reverse proxies whose X-Forwarded-For the API "
                        "believes; empty: forwarded headers are ignored and the peer address is the client.")
    api_max_body_bytes: int = Field(1_048_576, ge=1024, le=100 * 2**20,
                                    description="Largest request body the API reads (413 beyond, before parsing).")
    api_header_timeout_s: float = Field(10, gt=0, le=300,
                                        description="A connection must send complete request headers within this.")
    api_body_timeout_s: float = Field(30, gt=0, le=3600,
                                      description="A request body must arrive within this (408 otherwise).")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("console", description="'json' for machines, 'console' for people.")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, v: str) -> str:
        for server in v.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port (example: 127.0.0.1:9092)")
        return v

    @field_validator("api_trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        import ipaddress

        for item in filter(None, (p.strip() for p in v.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (example: 10.0.0.5,10.1.0.0/16)") from None
        return v

    @field_validator("home", "cache_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("kafka_credentials_file")
    @classmethod
    def _credentials_in_home(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None and "home" in info.data:
            return info.data["home"] / "secrets" / "kafka.json"
        return v.expanduser().resolve() if v is not None else None

    @field_validator("milvus_token_file")
    @classmethod
    def _milvus_token_in_home(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None and "home" in info.data:
            return info.data["home"] / "secrets" / "milvus.token"
        return v.expanduser().resolve() if v is not None else None

    @field_validator("connect_credentials_file")
    @classmethod
    def _connect_credentials_in_home(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None and "home" in info.data:
            return info.data["home"] / "secrets" / "connect-rest.properties"
        return v.expanduser().resolve() if v is not None else None

    @field_validator("postgres_password_file")
    @classmethod
    def _postgres_password_in_home(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is None and "home" in info.data:
            return info.data["home"] / "secrets" / "postgres.properties"
        return v.expanduser().resolve() if v is not None else None

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @field_validator("log_format")
    @classmethod
    def _format(cls, v: str) -> str:
        if v not in {"json", "console"}:
            raise ValueError("must be 'json' or 'console'")
        return v

    @model_validator(mode="after")
    def _remote_embedding_is_configured(self) -> "Settings":
        if self.embed_backend == "openai" and not (self.embed_url and self.embed_model):
            raise ValueError("embed_backend=openai needs RAGSTREAM_EMBED_URL and RAGSTREAM_EMBED_MODEL")
        if self.chunk_overlap_tokens * 2 >= self.chunk_max_tokens:
            raise ValueError("chunk_overlap_tokens must be under half of chunk_max_tokens")
        return self

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> "Settings":
        if (self.kafka_security_protocol or "").startswith("SASL") and not (
                self.kafka_username and (self.kafka_password or self.kafka_password_file)):
            raise ValueError("kafka_security_protocol SASL_* needs RAGSTREAM_KAFKA_USERNAME and RAGSTREAM_KAFKA_PASSWORD "
                             "(or RAGSTREAM_KAFKA_PASSWORD_FILE)")
        if bool(self.kafka_ssl_cert_file) != bool(self.kafka_ssl_key_file):
            raise ValueError("RAGSTREAM_KAFKA_SSL_CERT_FILE and RAGSTREAM_KAFKA_SSL_KEY_FILE go together")
        return self

    @model_validator(mode="after")
    def _milvus_client_certificate_is_complete(self) -> "Settings":
        cert, key = self.milvus_client_cert_file, self.milvus_client_key_file
        if bool(cert) != bool(key):
            raise ValueError("RAGSTREAM_MILVUS_CLIENT_CERT_FILE and RAGSTREAM_MILVUS_CLIENT_KEY_FILE go together")
        for name, path in (("CLIENT_CERT_FILE", cert), ("CLIENT_KEY_FILE", key), ("CA_FILE", self.milvus_ca_file)):
            if path is not None and not (path.is_file() and os.access(path, os.R_OK)):  # the path is printed, never the content
                raise ValueError(f"RAGSTREAM_MILVUS_{name} ({path}) is not a readable file")
        if cert and self.milvus_ca_file is None and system_ca_file() is None:
            raise ValueError("RAGSTREAM_MILVUS_CLIENT_CERT_FILE needs RAGSTREAM_MILVUS_CA_FILE here (pymilvus takes "
                             "the server's CA as a file for mutual TLS, and no system CA bundle file was found)")
        return self

    @model_validator(mode="after")
    def _urls_carry_no_credentials(self) -> "Settings":
        # A rule across fields on purpose: its message is printed, never the input (which
        # holds the credential).
        for field, instead in (("milvus_uri", "RAGSTREAM_MILVUS_TOKEN"),
                               ("connect_url", "RAGSTREAM_CONNECT_USERNAME and RAGSTREAM_CONNECT_PASSWORD"),
                               ("maven_repo_url", "the mirror's <server> entry in ~/.m2/settings.xml")):
            value = getattr(self, field)
            if value and _has_userinfo(value):
                raise ValueError(f"RAGSTREAM_{field.upper()} holds credentials (user:password@): URLs are printed in "
                                 f"logs and status; give them through {instead} instead")
        return self

    @model_validator(mode="after")
    def _restart_delays_are_ordered(self) -> "Settings":
        if self.restart_backoff_max_s < self.restart_backoff_s:
            raise ValueError("restart_backoff_max_s must be at least restart_backoff_s")
        return self

    @model_validator(mode="after")
    def _milvus_engine_is_installed(self) -> "Settings":
        if self.milvus_engine == "server" and self.milvus_uri is None:
            import importlib.util

            if importlib.util.find_spec("milvus") is None:
                raise ValueError("RAGSTREAM_MILVUS_ENGINE=server needs the `milvus` package (Milvus standalone 2.3.5): "
                                 "pip install 'ragstream[server]', or set RAGSTREAM_MILVUS_ENGINE=lite")
        return self

    @property
    def erasure_verify_timeout_s(self) -> float:
        if self.dsr_verify_timeout_s is not None:
            return self.dsr_verify_timeout_s
        return 2 * self.compaction_lag_hours * 3600 + 60

    @property
    def blob_dir(self) -> Path:
        """Claim-check store for large payloads (content-addressed files)."""
        return self.home / "blobs"

    @property
    def resolved_connect_url(self) -> str:
        return (self.connect_url or f"http://127.0.0.1:{self.connect_port}").rstrip("/")

    @property
    def connect_credentials(self) -> tuple[str, SecretStr] | None:
        """(user, password) for the Kafka Connect REST API (HTTP basic auth), or None: the
        configured ``connect_password``, else the local worker's generated one (only to a
        Connect on loopback, and once ``stack up -s connect`` has generated it). The one
        REST client, ``infra.cdc.connect_request``, sends it."""
        if self.connect_password is not None:
            return self.connect_username, self.connect_password
        if self.connect_credentials_file is None or not _on_loopback(self.resolved_connect_url):
            return None
        from ragstream.keyfile import read_token_file

        password = read_token_file(self.connect_credentials_file, self.connect_username)
        return None if password is None else (self.connect_username, SecretStr(password))

    @property
    def local_postgres_password(self) -> SecretStr | None:
        """The local PostgreSQL's password of the role ragstream (``postgres_password_file``),
        or None before ``stack up -s postgres`` generated it."""
        if self.postgres_password_file is None:
            return None
        from ragstream.keyfile import read_token_file

        password = read_token_file(self.postgres_password_file, "password")
        return None if password is None else SecretStr(password)

    @property
    def resolved_cdc_dsn(self) -> str:
        """The libpq URI of the captured database, password included: a secret (connect with
        it, never print it; :attr:`cdc_dsn_shown` is the printable form). Every PostgreSQL
        client of the project gets it here: the sources' listing, normalize's look-ups,
        ``ragstream connect``, the tests and the benchmark."""
        if self.cdc_dsn is not None:
            return self.cdc_dsn.get_secret_value()
        from urllib.parse import quote

        password = self.local_postgres_password
        auth = "ragstream" + (f":{quote(password.get_secret_value(), safe='')}" if password is not None else "")
        return f"postgresql://{auth}@127.0.0.1:{self.postgres_port}/ragstream"

    @property
    def cdc_dsn_shown(self) -> str:
        """:attr:`resolved_cdc_dsn` with any password replaced by ``***`` (for output)."""
        from urllib.parse import urlsplit, urlunsplit

        dsn = self.resolved_cdc_dsn
        try:
            parts = urlsplit(dsn)
            if parts.password is None:
                return dsn if "password" not in dsn.lower() else "<hidden: a key=value DSN with a password>"
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host  # IPv6 keeps its brackets
            netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
            query = "***" if "password" in parts.query.lower() else parts.query  # sslpassword=…
            return urlunsplit(parts._replace(netloc=netloc, query=query))
        except ValueError:
            return "<hidden>"

    @property
    def search_consistency(self) -> str:
        """The consistency level searches use (``milvus_search_consistency``, 'auto' resolved)."""
        if self.milvus_search_consistency != "auto":
            return self.milvus_search_consistency
        return "Strong" if self.milvus_uri is None and self.milvus_engine == "lite" else "Bounded"

    @property
    def resolved_milvus_uri(self) -> str:
        """The Milvus URI. It carries no credentials: its token (``milvus_token``, or the local
        server's token file) is registered for it in this process, and
        :func:`milvus_token` is where the one Milvus client factory
        (``consumers.milvus.milvus_client``) finds it."""
        uri = self.milvus_uri or f"http://127.0.0.1:{self.milvus_port}"
        if self.milvus_token is not None:
            _MILVUS_TOKENS[uri] = self.milvus_token
        elif self.milvus_token_file is not None and (self.milvus_uri is None or _on_loopback(uri)):
            # The same secret for both local engines. Milvus standalone takes it as root's
            # password, and logs a bare token it cannot verify, so clients send ``root:<secret>``
            # whichever engine this process was told of; the milvus-lite front accepts that form too.
            _MILVUS_TOKENS[uri] = (MILVUS_SERVER_USER, self.milvus_token_file)
        else:
            _MILVUS_TOKENS.pop(uri, None)
        if self.milvus_ca_file is not None or self.milvus_client_cert_file is not None:
            _MILVUS_TLS[uri] = MilvusTLS(self.milvus_ca_file, self.milvus_client_cert_file,
                                         self.milvus_client_key_file)
        else:
            _MILVUS_TLS.pop(uri, None)
        return uri


#: The user whose password the local Milvus standalone's token is (infra/milvus_standalone.py).
MILVUS_SERVER_USER = "root"


@dataclass(frozen=True)
class MilvusTLS:
    """TLS files for one Milvus: the CA its certificate is checked against (None: the
    system's) and, for mutual TLS, the client certificate and key."""

    ca_file: Path | None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


def system_ca_file() -> str | None:
    """The system's CA bundle as a file (pymilvus needs one for mutual TLS), or None."""
    import ssl

    found = ssl.get_default_verify_paths().cafile
    return found if found and os.access(found, os.R_OK) else None


#: Milvus URI -> its token, or (the user it is the password of, or None; the file holding
#: it): read when a client connects, the local server's token is generated by ``stack up``,
#: possibly after the settings were loaded.
_MILVUS_TOKENS: dict[str, SecretStr | tuple[str | None, Path]] = {}
#: Milvus URI -> its TLS files (CA, client certificate and key).
_MILVUS_TLS: dict[str, MilvusTLS] = {}


def milvus_tls(uri: str) -> MilvusTLS | None:
    """The TLS files for the Milvus at ``uri`` (as resolved by :attr:`Settings.resolved_milvus_uri`)."""
    return _MILVUS_TLS.get(uri)


def _has_userinfo(url: str) -> bool:
    from urllib.parse import urlparse

    try:
        parsed = urlparse(url)
        return bool(parsed.netloc) and (parsed.username is not None or parsed.password is not None)
    except ValueError:
        return "@" in url.split("/", 3)[2] if url.count("/") >= 2 else False


def _on_loopback(uri: str) -> bool:
    from urllib.parse import urlparse

    try:
        parsed = urlparse(uri)
        return parsed.scheme in ("http", "https", "tcp") and parsed.hostname in ("127.0.0.1", "localhost", "::1")
    except ValueError:
        return False


def milvus_token(uri: str) -> str | None:
    """The token to send to the Milvus at ``uri`` (as resolved by
    :attr:`Settings.resolved_milvus_uri`), or None: no token configured, or the local
    server's token file does not exist yet."""
    found = _MILVUS_TOKENS.get(uri)
    if isinstance(found, SecretStr):
        return found.get_secret_value()
    if found is None:
        return None
    user, path = found
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RuntimeError(f"cannot read the Milvus token {path}: {type(exc).__name__}") from None
    if not token:
        return None
    return f"{user}:{token}" if user else token


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; exit with a readable message if they are wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = ["ragstream: invalid configuration:"]
        for err in exc.errors():
            if not err["loc"]:  # a rule across fields: its message names the variables; the input is everything
                lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
                continue
            field = str(err["loc"][0])
            shown = "<hidden>" if field in SECRET_FIELDS else repr(err.get("input"))[:200]
            lines.append(f"  RAGSTREAM_{field.upper()}={shown}: {err['msg']}")
        lines.append("Fix the environment variable (or .env entry) and run the command again.")
        raise SettingsError("\n".join(lines)) from None


#: Fields whose values are never printed (their type is SecretStr).
SECRET_FIELDS = frozenset(n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation))


@functools.cache
def get_settings() -> Settings:
    return load_settings()
