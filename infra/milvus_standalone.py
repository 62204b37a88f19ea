"""A real Milvus server: the standalone binary of the ``milvus`` PyPI package (2.3.5).

The package (``pip install 'ragstream[server]'``; ``./dev`` installs it) ships Milvus'
standalone C++ binary with embedded etcd, local object storage and RocksMQ, compressed inside
the wheel. Its own launcher (``milvus-server``) unpacks the binary and its libraries into the
data folder at the first start, writes ``configs/milvus.yaml`` and runs ``milvus run standalone``.

:class:`MilvusStandalone` is the ``milvus`` service of the stack when
``RAGSTREAM_MILVUS_ENGINE=server`` (milvus-lite otherwise): pid file, log file, readiness
(a gRPC ``list_collections`` on the proxy port, ``RAGSTREAM_MILVUS_PORT``), ``stack
status``/``stack down``. Data under ``RAGSTREAM_HOME/milvus-server`` (not ``milvus``: the two
engines' files are not interchangeable).

It runs under this module's launcher (``python -m infra.milvus_standalone``), which starts
the package's server without waiting and, on SIGTERM, stops the binary and waits for it, so
``stack down`` returns only when the server has let go of its ports and files (the package's
own launcher would leave the binary running for a moment, or kill it after one second).

Known limits of this build (Milvus 2.3): no BM25 functions (collections are dense-only, see
``consumers.milvus.engine``), no INVERTED scalar index (``Trie`` for VARCHAR), no infix
``like`` (data-subject queries by subject ref are refused); the internal gRPC ports (free ports
chosen at each start; metrics/health 9091 or the next free one) listen on all interfaces, and
authentication is off (a token sent by clients is ignored). Start-up takes ~30-60 s on 2 cores (the first start also unpacks ~150 MB).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import infra.stack as _stack
from infra.service import Service, StackError, port_open
from ragstream.settings import Settings

#: The package version the stack expects (pyproject's ``server`` extra pins it).
MILVUS_VERSION = "2.3.5"


class MilvusStandalone(Service):
    """Milvus standalone (the ``milvus`` package's binary), its proxy on 127.0.0.1:``milvus_port``."""

    name = "milvus"

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.settings.milvus_port,)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.settings.milvus_port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "milvus-server"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        try:
            import milvus  # noqa: F401 - only whether it is installed
        except ImportError:
            raise StackError("RAGSTREAM_MILVUS_ENGINE=server needs the `milvus` package (Milvus standalone), "
                             "which is not installed.",
                             f"pip install 'milvus=={MILVUS_VERSION}' (or `pip install -e '.[server]'`; ./dev "
                             "installs it), or set RAGSTREAM_MILVUS_ENGINE=lite.") from None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "bin" / "milvus").exists():
            progress("unpacking the Milvus standalone binary (first start)")
        return [sys.executable, "-m", "infra.milvus_standalone", "--data", str(self.data_dir),
                "--port", str(self.settings.milvus_port)]

    def ready(self) -> bool:
        if not port_open(self.settings.milvus_port):
            return False
        from consumers.milvus import milvus_client

        try:
            client = milvus_client(self.address, timeout=3)
            client.list_collections()
        except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
            return False
        return True

    def server_pid(self) -> int | None:
        """The pid of the Milvus binary itself (its RSS is the server's), if it runs."""
        binary = str(self.data_dir / "bin" / "milvus").encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    if (proc / "cmdline").read_bytes().split(b"\0", 1)[0] == binary:
                        return int(proc.name)
                except OSError:
                    continue
        return None

    def status(self):  # type: ignore[no-untyped-def]
        st = super().status()
        child = self.server_pid() if st.running else None
        if child is not None:  # the memory that matters is the server's, not its launcher's
            from infra.service import rss_bytes

            st.child_pid, st.rss = child, rss_bytes(child)
        return st


def milvus_service(settings: Settings) -> Service:
    """The ``milvus`` service of the engine the settings choose (``RAGSTREAM_MILVUS_ENGINE``)."""
    if settings.milvus_engine == "server":
        return MilvusStandalone(settings)
    return _stack.MilvusLite(settings)


_stack.SERVICES["milvus"] = milvus_service  # type: ignore[assignment] - a factory, called like a class


def _pin_ports(config: object, port: int) -> None:
    """The proxy on exactly ``port``, the other ports free ones below the ephemeral range. The package treats a port set on its config as where to
    *start looking* for a free one, and tests freeness with a loopback bind without
    SO_REUSEADDR, which a port with connections in TIME_WAIT (a server stopped a moment ago)
    fails: the proxy then moved to the next port, where no client looks. Pinned (``configs``)
    and every port tested the way the server binds (all interfaces, SO_REUSEADDR), the same
    port is used again, or the start fails loudly; a port another server listens on (2379,
    53100, ...: the defaults) is skipped for the next free one."""
    import socket

    from infra.service import free_port

    for key in [k for k in config.configurable_items if k.endswith("_port")]:  # type: ignore[attr-defined]
        # Every gRPC port pinned: the template's defaults (53100 for the root coordinator, ...)
        # lie in the kernel's ephemeral range, where any client's outgoing connection may hold
        # them for a moment and the server then fails at start ("address already in use").
        chosen = port if key == "proxy_port" else free_port()
        config.configs[key] = chosen  # type: ignore[attr-defined]
        config.set(key, chosen)  # type: ignore[attr-defined]

    def try_bind_port(p: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", p))  # as the server binds its gRPC ports (all interfaces): a listener there is a conflict
            sock.listen()
            return sock
        except OSError:
            sock.close()
            return None

    config.try_bind_port = try_bind_port  # type: ignore[attr-defined]


def _embedded_etcd_on_free_ports(config: object, data: Path) -> None:
    """Give the embedded etcd its own loopback ports. The package's template sets only the
    client endpoint; etcd then listens on its defaults (client 2379, peer 2380), so a second
    server on the machine (another home, a test session) fails with "address already in use".
    An etcd config file (``etcd.config.path``, read by Milvus' embedded etcd) names both."""
    from infra.service import free_port

    client, peer = config.get("etcd_port"), free_port()  # type: ignore[attr-defined] - pinned by _pin_ports
    etcd_yaml = data / "configs" / "embed-etcd.yaml"
    etcd_yaml.parent.mkdir(parents=True, exist_ok=True)
    etcd_yaml.write_text("\n".join([
        "name: milvus-embedded",
        f"listen-client-urls: http://127.0.0.1:{client}",
        f"advertise-client-urls: http://127.0.0.1:{client}",
        f"listen-peer-urls: http://127.0.0.1:{peer}",
        f"initial-advertise-peer-urls: http://127.0.0.1:{peer}",
        f"initial-cluster: milvus-embedded=http://127.0.0.1:{peer}",
        "",
    ]))
    write = config.write_config  # type: ignore[attr-defined]

    def write_with_etcd_config() -> None:
        write()
        path = data / "configs" / "milvus.yaml"
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_yaml}\n", 1),
                        encoding="utf-8")

    config.write_config = write_with_etcd_config  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Milvus standalone (the milvus package) for one ragstream home")
    parser.add_argument("--data", type=Path, required=True, help="data folder (binary, config, logs, storage)")
    parser.add_argument("--port", type=int, required=True, help="the proxy's (clients') port")
    parser.add_argument("--stop-timeout", type=float, default=60.0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a milvus.yaml value, dotted (proxy.timeTickInterval=50); repeatable")
    args = parser.parse_args(argv)
    from milvus import MilvusServer, MilvusServerConfig

    server = MilvusServer(MilvusServerConfig(), wait_for_started=False)
    server.set_base_dir(str(args.data))
    _pin_ports(server.config, args.port)
    # Stop within seconds (the template's 1,800 s graceful stop outlives any `stack down`).
    server.config.set("common.gracefulStopTimeout", int(args.stop_timeout // 2))
    _embedded_etcd_on_free_ports(server.config, args.data)
    for item in args.set:
        key, _, value = item.partition("=")
        server.config.set(key, int(value) if value.isdigit() else value)
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()  # resolves the other ports (next free one from each default), unpacks, runs the binary
    proc: subprocess.Popen = server.server_proc
    print(f"milvus standalone pid {proc.pid}, proxy 127.0.0.1:{args.port}, metrics {server.webservice_port}, "
          f"logs {args.data / 'logs'}", flush=True)
    while proc.poll() is None and not stopping:
        time.sleep(0.2)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=args.stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    sys.exit(0 if stopping else (proc.returncode or 1))


if __name__ == "__main__":
    main()
