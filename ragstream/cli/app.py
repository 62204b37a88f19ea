"""The ``ragstream`` group and what every command shares: settings, errors, messages."""

from __future__ import annotations

import functools
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

        from infra.service import StackError
        from ragstream.connector import ConnectorError
        from ragstream.publisher import PublishError
        from ragstream.admin import AdminError

        try:
            return fn(*args, **kwargs)
        except SettingsError as exc:
            raise UserError(str(exc)) from None
        except (StackError, AdminError, PublishError, ConnectorError) as exc:
            raise UserError(f"ragstream: {exc}") from None
        except KafkaException as exc:
            raise UserError(
                f"ragstream: Kafka said: {exc.args[0].str()}\n  → check `ragstream stack status` and the broker log, "
                "then retry."
            ) from None

    return wrapper


def settings() -> Settings:
    """The validated settings, including the files they name (policy, auth): every command
    fails at start-up, with what is wrong, rather than at first use."""
    try:
        s = get_settings()
    except SettingsError as exc:
        raise UserError(str(exc)) from None
    _check_files(s)
    return s


@functools.cache
def _check_files(s: Settings) -> None:
    from ragstream.auth import AuthConfigError, load_auth_config
    from streams.policy import PolicyError, load_policy

    try:
        if s.policy_file is not None:
            load_policy(s.policy_file)
        if s.auth_file is not None:
            load_auth_config(s.auth_file)
    except (PolicyError, AuthConfigError) as exc:
        raise UserError(f"ragstream: invalid configuration:\n  {exc}\n"
                        "Fix the file (or the variable that names it) and run the command again.") from None


def say(message: str) -> None:
    click.echo(message, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="ragstream")
@click.option("--home", type=click.Path(file_okay=False), default=None,
              help="Local stack home (default: RAGSTREAM_HOME or ./.ragstream).")
def cli(home: str | None) -> None:
    """ragstream keeps a retrieval index (Milvus) in step with its sources, over Apache Kafka.

    \b
    Start here:
      ragstream up [FOLDER]       index a folder and keep it in step (default: the bundled samples)
      ragstream search "text"     search what you may see
      ragstream stack status      what is running, where its logs and metrics are
      ragstream verify [SOURCE]   does the index hold exactly what the source holds?
      ragstream down              stop everything

    Configuration comes from RAGSTREAM_* environment variables (or .env); see the README.
    """
    import os

    from ragstream.logging import configure_logging

    from ragstream.store import private_home

    if home:
        os.environ["RAGSTREAM_HOME"] = home
        get_settings.cache_clear()
    s = settings()
    private_home(s.home)  # the home 0700 (main() set umask 077 for this process and what it starts)
    configure_logging(s.log_level, s.log_format)


def record_admin_action(s: Settings, action: str, target: str, details: dict[str, Any]) -> None:
    """Record an admin action in the audit chain, as the person at this terminal."""
    import getpass

    from ragstream.publisher import Publisher
    from schemas import topics as t
    from schemas.events import AuditEvent
    from schemas.serde import encode

    event = AuditEvent(actor=f"user:{getpass.getuser()}", action=action, target=target, details=details)
    with Publisher(s, client_id="ragstream-cli") as pub:
        pub.publish_raw(t.AUDIT_EVENTS, event.event_id, encode(event))
        pub.flush()


def print_topic_changes(changes: list[Any]) -> None:
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
        if c.action != "unchanged":
            say(f"  {c.action:<9} {c.topic} {c.detail}")
    say("topics: " + ", ".join(f"{n} {a}" for a, n in counts.items()))
