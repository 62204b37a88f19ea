"""`ragstream dlq`: dead letters, listed and replayed."""

from __future__ import annotations


import click

from ragstream.cli.app import cli, friendly, record_admin_action, say, settings
from schemas.topics import STAGES as DLQ_STAGES


# --------------------------------------------------------------------------------- dlq
@cli.group()
def dlq() -> None:
    """Dead letters: messages a stage could not process, with the reason."""


STAGE_ARG = click.argument("stage", type=click.Choice(DLQ_STAGES))


@dlq.command("list")
@STAGE_ARG
@friendly
def dlq_list(stage: str) -> None:
    """Show STAGE's dead letters: where they came from, when, and why."""
    from ragstream.dlq import list_letters

    letters = list_letters(settings(), stage)
    for item in letters:
        if item.letter is None:
            click.echo(f"p{item.partition}@{item.offset}  {item.key}  (no ragstream headers)")
            continue
        lt = item.letter
        click.echo(f"p{item.partition}@{item.offset}  {item.key}  {lt.failed_at:%Y-%m-%d %H:%M:%S}  "
                   f"from {lt.topic}  {lt.error_type}: {lt.error_message}")
    say(f"{len(letters)} dead letter(s) in rag.dlq.{stage}")


@dlq.command("replay")
@STAGE_ARG
@friendly
def dlq_replay(stage: str) -> None:
    """Replay STAGE's dead letters not replayed before (fix the cause first).

    Letters go back to the topic they came from; `ingest` letters make their source read
    the item again as it is now.
    """
    from ragstream.dlq import replay

    s = settings()
    replayed, unreadable = replay(s, stage)
    record_admin_action(s, "admin.dlq.replay", f"rag.dlq.{stage}", {"replayed": replayed, "unreadable": unreadable})
    say(f"replayed {replayed} dead letter(s) from rag.dlq.{stage}" + (f"; {unreadable} not replayable (see the log)" if unreadable else ""))
