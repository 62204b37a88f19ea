"""The ``ragstream`` command line."""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, Callable

import click

from ragstream.settings import Settings, SettingsError, get_settings


class UserError(click.ClickException):
    """A failure the user can act on: printed without a traceback, exit status 1."""

    def format_message(self) -> str:
        return self.message


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the project's expected failures into clear messages instead of tracebacks."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from confluent_kafka import KafkaException

        from infra.stack import StackError
        from producers.publisher import PublishError
        from ragstream.admin import AdminError

        try:
            return fn(*args, **kwargs)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        except (StackError, AdminError, PublishError) as exc:
            raise UserError(f"ragstream: {exc}") from None
        except KafkaException as exc:
            raise UserError(
                f"ragstream: Kafka said: {exc.args[0].str()}\n  → check `ragstream stack status` and the broker log, "
                "then retry."
            ) from None

    return wrapper


def settings() -> Settings:
    try:
        return get_settings()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ragstream")
def cli() -> None:
    """ragstream keeps a retrieval index (Milvus) in step with its sources, over Apache Kafka.

    \b
    Start here:
      ragstream up              start the local stack, create the topics, check a round trip
      ragstream stack status    what is running, where its logs are
      ragstream --help          this page; every command has --help too

    Configuration comes from RAGSTREAM_* environment variables (or .env); see the README.
    """
    from ragstream.logging import configure_logging

    s = settings()
    configure_logging(s.log_level, s.log_format)


# ---------------------------------------------------------------------------------- up
@cli.command()
@click.option("--check/--no-check", default=True, show_default=True, help="Run a round trip through the broker.")
@friendly
def up(check: bool) -> None:
    """Start the local stack, ensure the topics and check a publish/consume round trip.

    Idempotent: what already runs is left alone.
    """
    from infra.stack import Stack
    from ragstream.admin import ensure_topics

    s = settings()
    t0 = time.monotonic()
    started = Stack(s).up(progress=say)
    for name, new in started.items():
        say(f"{name}: {'started' if new else 'already running'}")
    say(f"stack ready in {time.monotonic() - t0:.1f}s")
    _print_topic_changes(ensure_topics(s))
    if check:
        _run_check(s, 1000)
    say("")
    say(f"Kafka:  {s.kafka_bootstrap}     Milvus: {s.resolved_milvus_uri}     logs: {s.home / 'logs'}")
    say("Stop everything with `ragstream stack down`.")


# ------------------------------------------------------------------------------- stack
@cli.group()
def stack() -> None:
    """Run the local stack: a Kafka broker (KRaft) and a milvus-lite server, on loopback."""


SERVICE_OPTION = click.option(
    "--service", "-s", "services", multiple=True, type=click.Choice(["kafka", "milvus"]),
    help="Only this service (repeatable). Default: all.",
)


@stack.command("up")
@SERVICE_OPTION
@friendly
def stack_up(services: tuple[str, ...]) -> None:
    """Start the services and wait until they answer (harmless when already running)."""
    from infra.stack import Stack

    t0 = time.monotonic()
    for name, new in Stack(settings(), services or None).up(progress=say).items():
        say(f"{name}: {'started' if new else 'already running'}")
    say(f"ready in {time.monotonic() - t0:.1f}s")


@stack.command("down")
@SERVICE_OPTION
@friendly
def stack_down(services: tuple[str, ...]) -> None:
    """Stop the services (SIGTERM, then SIGKILL after 30 s). Data is kept."""
    from infra.stack import Stack

    for name, was_running in Stack(settings(), services or None).down().items():
        say(f"{name}: {'stopped' if was_running else 'not running'}")


@stack.command("status")
@SERVICE_OPTION
@friendly
def stack_status(services: tuple[str, ...]) -> None:
    """Show each service: pid, address, readiness, resident memory and log file."""
    from infra.stack import Stack

    rows = Stack(settings(), services or None).status()
    for st in rows:
        state = "ready" if st.ready else ("starting/unhealthy" if st.running else "stopped")
        rss = f"{st.rss / 2**20:.0f} MiB" if st.rss else "-"
        click.echo(f"{st.name:<8} {state:<19} pid={st.pid or '-':<8} {st.address:<26} rss={rss:<9} log={st.log}")
    if not all(st.ready for st in rows):
        sys.exit(3)


# ------------------------------------------------------------------------------ topics
@cli.group()
def topics() -> None:
    """The topic catalog (schemas/topics.py) and its application to the cluster."""


@topics.command("ensure")
@friendly
def topics_ensure() -> None:
    """Create missing topics and align partitions and configs with the catalog (idempotent)."""
    from ragstream.admin import ensure_topics

    _print_topic_changes(ensure_topics(settings()))


@topics.command("list")
def topics_list() -> None:
    """Print the catalog: name, partitions, key, cleanup policy, retention, purpose."""
    from schemas.topics import catalog

    for spec in catalog(settings()):
        retention = spec.config.get("retention.ms")
        keep = f"{int(retention) / 86_400_000:g}d" if retention else "-"
        click.echo(f"{spec.name:<20} p={spec.partitions:<3} key={spec.key:<10} "
                   f"{spec.config['cleanup.policy']:<8} retention={keep:<7} {spec.description}")


def _print_topic_changes(changes: list[Any]) -> None:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
        if c.action != "unchanged":
            say(f"  {c.action:<9} {c.topic} {c.detail}")
    say("topics: " + ", ".join(f"{n} {a}" for a, n in counts.items()))


# ----------------------------------------------------------------------------- schemas
@cli.group()
def schemas() -> None:
    """The event contracts' JSON Schema files (schemas/json)."""


@schemas.command("export")
@click.option("--check", is_flag=True, help="Only report stale files; exit 1 if any.")
def schemas_export(check: bool) -> None:
    """Write schemas/json/<Contract>.schema.json from the pydantic models."""
    from schemas import export as ex

    if check:
        stale = ex.stale()
        if stale:
            raise UserError(f"stale JSON Schema: {', '.join(stale)}; run `ragstream schemas export`")
        say("JSON Schema files are up to date")
        return
    written = ex.export()
    say(f"wrote {len(written)} file(s) to {ex.JSON_DIR}" if written else "JSON Schema files are up to date")


# ------------------------------------------------------------------------------- check
@cli.command()
@click.option("-n", "--events", default=1000, show_default=True, help="How many events to send round.")
@friendly
def check(events: int) -> None:
    """Publish events to rag.selftest and read them back: nothing lost, duplicated or reordered."""
    _run_check(settings(), events)


def _run_check(s: Settings, n: int) -> None:
    from ragstream.selfcheck import round_trip

    result = round_trip(s, n=n, show_progress=sys.stderr.isatty())
    say(f"round trip: {result.published} published, {result.consumed} consumed in {result.total_s:.2f}s "
        f"(publish {result.published / max(result.publish_s, 1e-9):,.0f} ev/s); "
        f"lost={result.lost} duplicated={result.duplicated} out_of_order={result.out_of_order}")
    if not result.ok:
        raise UserError("round trip FAILED: " + "; ".join(result.problems))


def main() -> None:
    cli(prog_name="ragstream")


if __name__ == "__main__":
    main()
