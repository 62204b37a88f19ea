"""A local S3 (and SQS) API: moto's server mode, for the S3 connector's development and tests.

No MinIO is available on the machines ragstream is developed on; moto's server speaks the
real S3 and SQS APIs to boto3 (buckets, versioning, tagging, bucket notifications to an SQS
queue of the same server). Its state is in memory: a restart starts empty.

:class:`MotoServer` is a :class:`infra.stack.Service` like Kafka and Milvus: pid file, log
file, readiness, ``stack status``/``stack down``, loopback only. Its port is chosen once per
home (a free port, kept in ``RAGSTREAM_HOME/moto/port``) unless ``RAGSTREAM_MOTO_PORT`` or
the constructor names one. ``enforce_auth=True`` turns on moto's IAM checks (a wrong key or
secret is refused as AWS refuses it); :func:`create_access_key` then makes the one key the
tests use, with the few requests moto lets through unauthenticated.

Run it by hand with ``python -m infra.moto --home DIR --port PORT`` (what the service runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Callable

from infra.stack import SERVICES, Service, free_port, port_open
from ragstream.settings import Settings

#: Requests moto serves without credentials when auth is enforced: create_access_key's three.
NO_AUTH_ACTIONS = 3


class MotoServer(Service):
    """moto's server (S3, SQS, IAM, ...) on 127.0.0.1."""

    name = "moto"

    def __init__(self, settings: Settings, port: int | None = None, enforce_auth: bool = False) -> None:
        super().__init__(settings)
        self._port = port
        self.enforce_auth = enforce_auth

    @property
    def port(self) -> int:
        if self._port is None:
            path = self.home / "moto" / "port"
            if os.environ.get("RAGSTREAM_MOTO_PORT"):
                self._port = int(os.environ["RAGSTREAM_MOTO_PORT"])
            elif path.exists():
                self._port = int(path.read_text().strip())
            else:
                self._port = free_port()
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(str(self._port))
        return self._port

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.port,)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, progress: Callable[[str], None]) -> list[str]:
        # The home is on the command line so that pid() recognises the process as ours.
        return [sys.executable, "-m", "infra.moto", "--home", str(self.home.resolve()), "--port", str(self.port)]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("INITIAL_NO_AUTH_ACTION_COUNT", None)
        if self.enforce_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(NO_AUTH_ACTIONS)
        return env

    def ready(self) -> bool:
        if not port_open(self.port):
            return False
        # moto's own API (not an AWS action: it does not use up the unauthenticated requests)
        try:
            with urllib.request.urlopen(f"{self.address}/moto-api/data.json", timeout=3) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False


def create_access_key(endpoint_url: str, user: str = "ragstream", region: str = "us-east-1") -> tuple[str, str]:
    """An IAM user allowed everything and its access key, on a server started with
    ``enforce_auth`` (the first requests it serves); returns (access key id, secret)."""
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint_url, region_name=region,
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="everything", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


SERVICES["moto"] = MotoServer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto's S3/SQS server on loopback, for one ragstream home")
    parser.add_argument("--home", type=Path, required=True, help="the home it belongs to (identifies the process)")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    from moto.server import main as moto_main

    moto_main(["-H", "127.0.0.1", "-p", str(args.port)])


if __name__ == "__main__":
    main()
