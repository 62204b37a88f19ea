"""The ``ragstream`` command line, one module per command group.

    app.py         the group itself, settings, errors (UserError, friendly), messages
    pipeline.py    up, down, verify, check
    search.py      search
    sources.py     sources list | test | sync (the sources file)
    stack.py       stack, topics, schemas, worker, status
    dlq.py         dlq list | replay
    compliance.py  pii, audit, dsr
    access.py      api, apikey
    reindex.py     reindex (--since, --rollback, --gc)
    scale.py       scale (several workers of a stage on this host)
    ../cli_connect.py  connect (database CDC)

A new command goes into the module of its group (or a new one imported here).
"""

from ragstream.cli import access, compliance, dlq, pipeline, reindex, scale, search, sources, stack  # noqa: F401 - they register commands
from ragstream.cli.app import UserError, cli, friendly, say, settings
from ragstream.cli_connect import connect

cli.add_command(connect)


def main() -> None:
    import os

    # Everything ragstream creates (and the broker, milvus-lite, workers and API it starts,
    # which inherit this) is its owner's only. Here, not in cli(), so that invoking the
    # group in-process (tests) does not change the caller's umask.
    os.umask(0o077)
    cli(prog_name="ragstream")


__all__ = ["UserError", "cli", "friendly", "main", "say", "settings"]
