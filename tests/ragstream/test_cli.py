import subprocess
import sys

import pytest
from click.testing import CliRunner

from ragstream.cli import cli


def test_help_lists_the_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "stack", "topics", "check", "schemas"):
        assert f"  {command}" in result.output


def test_bad_configuration_is_a_message_not_a_traceback():
    out = subprocess.run([sys.executable, "-m", "ragstream.cli", "topics", "list"], capture_output=True,
                         text=True, env={"RAGSTREAM_PARTITIONS": "many", "PATH": ""})
    assert out.returncode != 0
    assert "RAGSTREAM_PARTITIONS='many'" in out.stderr
    assert "Traceback" not in out.stderr


def test_topics_list_prints_the_catalog():
    result = CliRunner().invoke(cli, ["topics", "list"])
    assert result.exit_code == 0
    assert "rag.documents" in result.output and "compact" in result.output


@pytest.mark.integration
def test_check_round_trip(settings, monkeypatch):
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    from ragstream.settings import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["check", "-n", "500"])
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "500 published, 500 consumed" in result.output
    assert "lost=0 duplicated=0 out_of_order=0" in result.output


@pytest.mark.integration
def test_check_against_a_dead_broker_fails_clearly(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    from ragstream.settings import get_settings

    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["topics", "ensure"])
    get_settings.cache_clear()
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output
