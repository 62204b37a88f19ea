"""ragstream: keep an enterprise retrieval index in step with its sources, over Apache Kafka.

The application shell lives here: the CLI (`ragstream ...`), the one settings object,
logging and metrics set-up. Event contracts are in `schemas`, sources in `producers`,
stages in `streams`, sinks in `consumers`, the local stack in `infra`.
"""

__version__ = "0.1.0"
