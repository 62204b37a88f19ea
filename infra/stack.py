"""The local stack: a real Kafka broker (KRaft, one node) and a milvus-lite server.

No Docker engine runs on the machines ragstream is developed on, so the stack is plain
processes: the broker runs from jars that Maven resolves from Central (cached under
``RAGSTREAM_CACHE_DIR/jars``), milvus-lite from its PyPI package. Each service

* keeps its data under ``RAGSTREAM_HOME/<service>``, its log in ``RAGSTREAM_HOME/logs``
  and its pid in ``RAGSTREAM_HOME/run``;
* listens on loopback only;
* runs in its own process session, so ``down`` stops it and everything it spawned.

``up`` is idempotent: a service that already answers is left alone. Every failure raises
:class:`StackError`, whose message says what went wrong and what to do.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator
from ragstream.settings import Settings, load_settings
from streams.registry import PIPELINE, REPLICA_PORT_STRIDE, STAGES
from infra.service import (Service, ServiceStatus, StackError, fetch_health, free_port, free_port_block, port_open,
                           settings_env)
from infra.jvm import LOG4J, find_java, jars


class KafkaBroker(Service):
    """Apache Kafka 4 in KRaft mode: one node that is both broker and controller."""

    name = "kafka"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.kafka_port, self.settings.kafka_controller_port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.kafka_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "kafka" / "data"

    def _listener_lines(self) -> list[str]:
        s = self.settings
        if not s.kafka_local_auth:
            return [
                f"listeners=PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{s.kafka_port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            ]
        from ragstream.kafka import ADMIN, CONTROLLER, local_credentials

        creds = local_credentials(s, create=True)
        assert creds is not None
        ctl, admin = creds["controller"], creds["users"][ADMIN]
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule"
        plain = "org.apache.kafka.common.security.plain.PlainLoginModule"
        # A storage formatted without credentials (an older home) starts once with an extra
        # loopback listener whose anonymous clients are super users, only to add them.
        mig = f",MIGRATE://127.0.0.1:{self._migrate_port}" if self._migrate_port else ""
        return [
            # Clients: SASL/SCRAM-SHA-512 on loopback. Controller: SASL/PLAIN with one static
            # user, the broker itself (SCRAM users live in the metadata the controller serves,
            # so the controller cannot use them); nobody else can open a session there.
            f"listeners=SASL_PLAINTEXT://127.0.0.1:{s.kafka_port},CONTROLLER://127.0.0.1:{s.kafka_controller_port}{mig}",
            f"advertised.listeners=SASL_PLAINTEXT://127.0.0.1:{s.kafka_port}{mig}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=SASL_PLAINTEXT",
            "listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
            + (",MIGRATE:PLAINTEXT" if mig else ""),
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f'listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram} required '
            f'username="{ADMIN}" password="{admin}";',
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            "sasl.mechanism.controller.protocol=PLAIN",
            f'listener.name.controller.plain.sasl.jaas.config={plain} required username="{CONTROLLER}" '
            f'password="{ctl}" user_{CONTROLLER}="{ctl}";',
            # ACLs: nothing is allowed unless granted (ragstream.admin.acl_bindings).
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            f"super.users=User:{ADMIN};User:{CONTROLLER}" + (";User:ANONYMOUS" if mig else ""),
        ]

    def properties(self) -> str:
        s = self.settings
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{s.kafka_controller_port}",
            *self._listener_lines(),
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            # Topics come from the catalog (`ragstream topics ensure`); a typo must fail, not create.
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.cleaner.backoff.ms=5000",
            "",
        ])

    @property
    def _admin_settings(self) -> Settings:
        """These settings as the operator (the stack's own requests run as the admin principal)."""
        return self.settings.model_copy(update={"kafka_principal": None, "kafka_bootstrap": self.address})

    #: Set while a storage formatted without credentials gets them (one start; see ``start``).
    _migrate_port: int | None = None

    @property
    def _scram_marker(self) -> Path:
        return self.home / "kafka" / ".scram"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        java = find_java(self.settings)
        classpath = f"{jars(self.settings, 'broker', progress)}/*"
        conf = self.home / "kafka" / "server.properties"
        conf.parent.mkdir(parents=True, exist_ok=True)
        formatted = (self.data_dir / "meta.properties").exists()
        if self.settings.kafka_local_auth and formatted and not self._scram_marker.exists():
            self._migrate_port = free_port()
        _write_private(conf, self.properties())  # holds the controller's and admin's passwords
        jvm = [java, "-Xms128m", f"-Xmx{self.settings.broker_heap}", "-XX:+UseG1GC",
               "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={LOG4J}", "-cp", classpath]
        if not formatted:
            progress("formatting Kafka storage (first start)")
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            args = ["kafka.tools.StorageTool", "format",
                    f"--cluster-id={cluster_id}",  # an id may start with "-"
                    f"--config={conf}"]
            secret: list[str] = []
            if self.settings.kafka_local_auth:
                from ragstream.kafka import ADMIN, local_credentials

                creds = local_credentials(self.settings, create=True)
                assert creds is not None
                secret = [creds["users"][ADMIN]]
                # KIP-900: the admin exists from the first start (the broker's own inter-broker
                # login); every other user is added through it (ensure_scram_users).
                args += ["--add-scram", f"SCRAM-SHA-512=[name={ADMIN},password={secret[0]}]"]
            # Arguments through a private @argfile: a password on the command line would show in `ps`.
            argfile = self.home / "kafka" / ".format.args"
            _write_private(argfile, "\n".join(f'"{a}"' for a in [*jvm[1:], *args]) + "\n")
            try:
                fmt = subprocess.run([java, f"@{argfile}"], capture_output=True, text=True, timeout=120)
            finally:
                argfile.unlink(missing_ok=True)
            if fmt.returncode != 0:
                out = fmt.stdout + fmt.stderr
                for pw in secret:
                    out = out.replace(pw, "<hidden>")
                raise StackError(f"formatting Kafka storage in {self.data_dir} failed:\n{out}",
                                 f"Remove {self.data_dir} if it is left over from another setup, then retry.")
            if self.settings.kafka_local_auth:
                self._scram_marker.touch()
        return [*jvm, "kafka.Kafka", str(conf)]

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> bool:
        try:
            started = super().start(progress)
            if self._migrate_port:
                progress("kafka: adding SCRAM credentials to a storage formatted without them (one restart)")
                from ragstream.admin import AdminError, ensure_scram_users
                from ragstream.kafka import local_credentials
                from ragstream.kafka_acls import local_principals

                plain = self.settings.model_copy(update={
                    "kafka_bootstrap": f"127.0.0.1:{self._migrate_port}", "kafka_local_auth": False})
                try:
                    ensure_scram_users(plain, local_credentials(self.settings, create=True,
                                                                principals=local_principals()) or {})
                except AdminError as exc:
                    raise StackError(f"adding credentials to the Kafka storage failed: {exc}",
                                     f"Read {self.logfile}.") from None
                self._scram_marker.touch()
                self.stop()
                self._migrate_port = None
                super().start(progress)
        finally:
            if self._migrate_port:  # it failed half-way: never leave the anonymous listener up
                self.stop()
                self._migrate_port = None
        if self.settings.kafka_local_auth:
            self.secure(progress)
        return started

    def secure(self, progress: Callable[[str], None] = lambda _m: None) -> None:
        """Every principal's SCRAM user and the ACLs of :func:`ragstream.kafka_acls.acl_bindings`."""
        from ragstream.admin import AdminError
        from ragstream.kafka_acls import secure_broker

        try:
            secure_broker(self._admin_settings, progress)
        except AdminError as exc:
            raise StackError(f"securing the Kafka broker failed: {exc}", f"Read {self.logfile}.") from None

    def ready(self) -> bool:
        if not port_open(self.settings.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        from ragstream.kafka import client_config

        conf = (client_config(self._admin_settings, log_level=0) if not self._migrate_port else
                {"bootstrap.servers": f"127.0.0.1:{self._migrate_port}", "log_level": 0})
        try:
            admin = AdminClient(conf)
            md = admin.list_topics(timeout=3)
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return False
        return bool(md.brokers)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only (it may hold passwords)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


class MilvusLite(Service):
    """milvus-lite in server mode, so several processes (index stage, API) share one store; every
    request must carry the token generated into ``milvus_token_file`` (infra/milvus_server.py)."""

    name = "milvus"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.milvus_port,)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.milvus_port}"

    @property
    def token_file(self) -> Path:
        assert self.settings.milvus_token_file is not None  # the settings default it into the home
        return self.settings.milvus_token_file

    def command(self, progress: Callable[[str], None]) -> list[str]:
        from ragstream.keyfile import ensure_token_file

        data = self.home / "milvus"
        data.mkdir(parents=True, exist_ok=True)
        ensure_token_file(self.token_file)  # generated at the first start; every request must carry it
        return [sys.executable, "-m", "infra.milvus_server", "--data-dir", str(data), "--host", "127.0.0.1",
                "--port", str(self.settings.milvus_port), "--token-file", str(self.token_file)]

    def start(self, progress: Callable[[str], None] = lambda _m: None) -> bool:
        # A server an older version started (milvus-lite's own, no token check) answers the
        # token too, so `up` would leave it serving every local user: replace it.
        self.replace_if_older(b"infra.milvus_server", "the token check", progress)
        if self.pid() is not None and port_open(self.settings.milvus_port) and not self.ready():
            # An older version's check took the bare token only; clients send root:<token> now.
            progress("milvus: replacing a server that refuses the token's current form (an older version)")
            self.stop()
        return super().start(progress)

    def ready(self) -> bool:
        if not port_open(self.settings.milvus_port):
            return False
        from consumers.milvus import milvus_client
        from ragstream.keyfile import ensure_token_file
        from ragstream.settings import MILVUS_SERVER_USER

        try:  # in the form every client sends (ragstream.settings.milvus_token)
            client = milvus_client(self.address, timeout=3,
                                   token=f"{MILVUS_SERVER_USER}:{ensure_token_file(self.token_file)}")
            client.list_collections()
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return False
        return True


class StageWorker(Service):
    """One pipeline stage (``ragstream worker <stage>``) as a supervised background process."""

    stage = ""
    supervised = True

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    @property
    def port(self) -> int:
        from streams.registry import metrics_port

        return metrics_port(self.settings, self.stage)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        return [sys.executable, "-m", "ragstream.cli", "--home", str(self.home), "worker", self.stage]

    def environment(self) -> dict[str, str]:
        # Workers write to log files: structured JSON, one object per line. Each uses its own
        # Kafka principal (the local broker's ACLs allow it only its stage's topics).
        return {**settings_env(self.settings), "RAGSTREAM_LOG_FORMAT": "json",
                "RAGSTREAM_KAFKA_PRINCIPAL": self.kafka_principal}

    @property
    def kafka_principal(self) -> str:
        from ragstream.kafka import stage_principal

        return stage_principal(self.stage)

    def ready(self) -> bool:
        """It answers /healthz: 200, or a 503 that says why it is degraded (still up)."""
        return self.health() is not None

    def health(self) -> dict | None:
        return fetch_health(f"http://127.0.0.1:{self.port}/healthz")


class ApiServer(StageWorker):
    """The retrieval API (``ragstream api``) as a background process on ``api_port``."""

    name = "api"

    @property
    def port(self) -> int:
        return self.settings.api_port

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/docs"

    @property
    def kafka_principal(self) -> str:
        from ragstream.kafka import API

        return API

    def command(self, progress: Callable[[str], None]) -> list[str]:
        return [sys.executable, "-m", "ragstream.cli", "--home", str(self.home), "api", "--port", str(self.port)]



def _worker(stage: str) -> type[StageWorker]:
    return type(f"{stage.title()}Worker", (StageWorker,), {"name": f"worker-{stage}", "stage": stage})


class ReplicaWorker(StageWorker):
    """Worker ``i`` (2, 3, ...) of a stage on this host, in the stage's consumer group
    (``ragstream scale``): its own metrics port (:func:`streams.registry.replica_port`) and
    Faust data directory; otherwise the stage's worker."""

    replica = 2

    @property
    def port(self) -> int:
        from streams.registry import replica_port

        return replica_port(self.settings, self.stage, self.replica)

    def command(self, progress: Callable[[str], None]) -> list[str]:
        return [*super().command(progress), "--metrics-port", str(self.port)]


def replica_name(stage: str, i: int) -> str:
    """The service name of worker ``i`` of ``stage`` (1: the stage's own, ``worker-<stage>``)."""
    return f"worker-{stage}" if i == 1 else f"worker-{stage}-{i}"


def _replica_service(name: str) -> type[Service] | None:
    """``worker-<stage>-<i>`` (i >= 2) as a service class, registered on first use."""
    import re

    m = re.fullmatch(r"worker-([a-z]+)-(\d+)", name)
    if not m or m.group(1) not in {s.name for s in STAGES} or int(m.group(2)) < 2:
        return None
    cls = type(f"{m.group(1).title()}Worker{m.group(2)}", (ReplicaWorker,),
               {"name": name, "stage": m.group(1), "replica": int(m.group(2))})
    SERVICES[name] = cls
    return cls


def running_replicas(settings: Settings, stages: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The extra workers (``worker-<stage>-<i>``) whose pid file in this home names a live
    process of ours: ``down`` and ``status`` include them."""
    run = settings.home / "run"
    names = []
    for pidfile in sorted(run.glob("worker-*-*.pid")) if run.is_dir() else ():
        name = pidfile.name.removesuffix(".pid")
        cls = _replica_service(name)
        if cls is not None and (stages is None or cls.stage in stages) and cls(settings).pid() is not None:
            names.append(name)
    return tuple(sorted(names, key=lambda n: (n.rsplit("-", 1)[0], int(n.rsplit("-", 1)[1]))))


PIPELINE_STAGES = PIPELINE  # the stage registry's (streams/registry.py) non-optional stages
WORKERS = tuple(f"worker-{s}" for s in PIPELINE_STAGES)
SERVICES: dict[str, type[Service]] = {"kafka": KafkaBroker, "milvus": MilvusLite,
                                      **{f"worker-{s}": _worker(s) for s in PIPELINE_STAGES}, "api": ApiServer}
INFRA = ("kafka", "milvus")
APPS = ("api",)


class Stack:
    def __init__(self, settings: Settings, names: tuple[str, ...] | None = None) -> None:
        unknown = {n for n in set(names or ()) - set(SERVICES) if _replica_service(n) is None}
        if unknown:
            raise StackError(f"unknown service(s): {', '.join(sorted(unknown))}",
                             f"Services are: {', '.join(SERVICES)}.")
        self.settings = settings
        self.services = [SERVICES[n](settings) for n in (names or INFRA)]

    def up(self, progress: Callable[[str], None] = lambda _m: None) -> dict[str, bool]:
        return {svc.name: svc.start(progress) for svc in self.services}

    def down(self) -> dict[str, bool]:
        return {svc.name: svc.stop() for svc in reversed(self.services)}

    def status(self) -> list[ServiceStatus]:
        return [svc.status() for svc in self.services]

    def __getitem__(self, name: str) -> Service:
        return next(s for s in self.services if s.name == name)


def isolated_settings(home: Path, **overrides: object) -> Settings:
    """Settings for a stack of its own: this home and free loopback ports (tests, benchmarks)."""
    kafka_port = free_port()
    return load_settings(home=home, kafka_port=kafka_port, kafka_bootstrap=f"127.0.0.1:{kafka_port}",
                         kafka_controller_port=free_port(), milvus_port=free_port(),
                         metrics_port_base=free_port_block(_METRICS_BLOCK), api_port=free_port(), **overrides)


#: A stack's metrics ports: every stage's offset, for up to 8 workers a stage (``ragstream scale``).
_METRICS_BLOCK = REPLICA_PORT_STRIDE * 8


@contextlib.contextmanager
def running_pipeline(settings: Settings) -> Iterator[Stack]:
    """Kafka, milvus-lite, the topics and the stage workers; all stopped on exit."""
    from ragstream.admin import ensure_topics

    stack = Stack(settings, INFRA + WORKERS)
    try:
        Stack(settings, INFRA).up()
        ensure_topics(settings)
        Stack(settings, WORKERS).up()
        yield stack
    finally:
        stack.down()


# Database CDC (PostgreSQL, Kafka Connect with Debezium, the normalize worker): infra/cdc.py
# adds its services to SERVICES when imported.
import infra.cdc  # noqa: E402,F401 - it builds on the classes above
import infra.neo4j  # noqa: E402,F401 - Neo4j for the knowledge graph (the graph stage)
import infra.moto  # noqa: E402,F401 - a local S3/SQS API (moto) for the S3 source
import infra.milvus_standalone  # noqa: E402,F401 - the real Milvus server (RAGSTREAM_MILVUS_ENGINE=server)
