"""Neo4j for the knowledge graph: Neo4j Community 5.26 (LTS) from Maven Central jars.

Like the broker, no tarball and no container: ``infra/neo4j/pom.xml`` resolves
``org.neo4j:neo4j`` (cached under ``RAGSTREAM_CACHE_DIR/jars/neo4j-<pom hash>``), and the
server runs from those jars with the jar's own entry point
(``org.neo4j.server.CommunityEntryPoint --home-dir … --config-dir …``; the release's start
scripts are not in the jars and are not needed). 5.26 is the line that runs on Java 17.

* Bolt on 127.0.0.1:``RAGSTREAM_NEO4J_PORT``; HTTP and HTTPS off; usage reports off.
* Data, logs and configuration under ``RAGSTREAM_HOME/neo4j``.
* Authentication on. A random password is generated at the first start into
  ``<home>/neo4j/password`` (mode 0600 from creation) and set as the initial password with
  Neo4j's admin tool before the database first starts; clients read it from there
  (:func:`consumers.graph.neo4j_password`) unless ``RAGSTREAM_NEO4J_PASSWORD`` is given.
* Ready when a Bolt session with those credentials answers a query.

``ragstream stack up -s neo4j`` starts it; with ``RAGSTREAM_GRAPH_ENABLED=true`` it is part of
the infrastructure ``ragstream up`` starts (before the graph worker).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import infra.stack as _stack
from consumers.graph import neo4j_password, password_file, write_password
from infra.jvm import find_java, jars
from infra.service import Service, StackError, port_open
from ragstream.settings import load_settings

NEO4J_POM = Path(__file__).resolve().parent / "neo4j" / "pom.xml"
ENTRY_POINT = "org.neo4j.server.CommunityEntryPoint"
ADMIN_TOOL = "org.neo4j.cli.AdminTool"


class Neo4j(Service):
    """Neo4j Community on loopback Bolt, authenticated with a generated password."""

    name = "neo4j"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.neo4j_port,)

    @property
    def address(self) -> str:
        return f"bolt://127.0.0.1:{self.settings.neo4j_port}"

    @property
    def root(self) -> Path:
        return self.home / "neo4j"

    def config(self) -> str:
        r, port = self.root, self.settings.neo4j_port
        return "\n".join([
            f"server.directories.data={r / 'data'}",
            f"server.directories.logs={r / 'logs'}",
            f"server.directories.run={r / 'run'}",
            f"server.directories.import={r / 'import'}",
            f"server.directories.plugins={r / 'plugins'}",
            f"server.directories.licenses={r / 'licenses'}",
            f"server.bolt.listen_address=127.0.0.1:{port}",
            f"server.bolt.advertised_address=127.0.0.1:{port}",
            "server.default_listen_address=127.0.0.1",
            "server.http.enabled=false",
            "server.https.enabled=false",
            "dbms.security.auth_enabled=true",
            "dbms.usage_report.enabled=false",
            "server.memory.pagecache.size=64m",
            "db.tx_log.rotation.retention_policy=2 files",
            "server.logs.debug.enabled=false",
            "",
        ])

    def _java(self, progress: Callable[[str], None]) -> list[str]:
        classpath = f"{jars(self.settings, 'neo4j', progress, pom=NEO4J_POM)}/*"
        return [find_java(self.settings), "-Xms128m", f"-Xmx{self.settings.neo4j_heap}", "-XX:+UseG1GC",
                "-Djava.awt.headless=true", "-cp", classpath]

    def command(self, progress: Callable[[str], None]) -> list[str]:
        java = self._java(progress)
        conf_dir = self.root / "conf"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (conf_dir / "neo4j.conf").write_text(self.config(), encoding="utf-8")
        pw_file = password_file(self.settings)
        if self.settings.neo4j_password is None and not pw_file.exists():
            if (self.root / "data" / "databases").exists():
                raise StackError(f"{self.root / 'data'} holds a database but {pw_file} (its password) is missing.",
                                 f"Restore the file, set RAGSTREAM_NEO4J_PASSWORD, or remove {self.root / 'data'}.")
            write_password(pw_file)
        if not (self.root / "data" / "databases").exists():
            progress("setting the Neo4j password (first start)")
            env = {"NEO4J_HOME": str(self.root), "NEO4J_CONF": str(conf_dir), "PATH": "/usr/bin:/bin"}
            # "--" ends the options: a password may begin with "-" (token_urlsafe does, 1 time in 64)
            out = subprocess.run([*java, ADMIN_TOOL, "dbms", "set-initial-password", "--",
                                  neo4j_password(self.settings)],
                                 capture_output=True, text=True, timeout=120, env=env)
            if out.returncode != 0:
                raise StackError(f"setting the initial Neo4j password failed:\n{out.stdout}{out.stderr}",
                                 f"Remove {self.root / 'data'} if it is left over from another setup, then retry.")
        return [*java, ENTRY_POINT, f"--home-dir={self.root}", f"--config-dir={conf_dir}"]

    def ready(self) -> bool:
        return self.health() is not None

    def health(self) -> dict | None:
        """``{"status": "ok", "version": …}`` when an authenticated Bolt session answers."""
        if not port_open(self.settings.neo4j_port):
            return None
        try:
            from neo4j import GraphDatabase

            with GraphDatabase.driver(self.address, auth=(self.settings.neo4j_user, neo4j_password(self.settings)),
                                      connection_timeout=3) as driver:
                records, _, _ = driver.execute_query("CALL dbms.components() YIELD versions RETURN versions[0] AS v")
            return {"status": "ok", "version": records[0]["v"]}
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return None


_stack.SERVICES["neo4j"] = Neo4j


def _graph_enabled() -> bool:
    try:
        return load_settings().graph_enabled
    except SystemExit:  # invalid settings: the command that reads them says so
        return False


if _graph_enabled() and "neo4j" not in _stack.INFRA:
    # The graph worker is then in the pipeline (streams.registry); its database is infrastructure.
    _stack.INFRA = _stack.INFRA + ("neo4j",)
