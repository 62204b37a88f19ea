import pytest

from ragstream.settings import SettingsError, load_settings


def test_bad_values_name_the_variable_and_the_fix(monkeypatch):
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "localhost")
    monkeypatch.setenv("RAGSTREAM_PARTITIONS", "0")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "RAGSTREAM_KAFKA_BOOTSTRAP='localhost'" in message and "host:port" in message
    assert "RAGSTREAM_PARTITIONS='0'" in message
    assert "run the command again" in message


def test_environment_is_read(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGSTREAM_KAFKA_BOOTSTRAP", "b1:9092,b2:9092")
    monkeypatch.setenv("RAGSTREAM_HOME", str(tmp_path / "rel" / ".." / "h"))
    s = load_settings()
    assert s.kafka_bootstrap == "b1:9092,b2:9092"
    assert s.home == tmp_path / "h"
    assert s.resolved_milvus_uri == "http://127.0.0.1:19530"


def test_search_consistency_is_strong_on_milvus_lite_and_bounded_on_a_server(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGSTREAM_HOME", str(tmp_path / "h"))
    assert load_settings().search_consistency == "Strong"  # the local milvus-lite: Strong costs nothing
    monkeypatch.setenv("RAGSTREAM_MILVUS_URI", "https://milvus.example.com:19530")
    assert load_settings().search_consistency == "Bounded"  # a server: Strong waits for its time tick
    monkeypatch.setenv("RAGSTREAM_MILVUS_SEARCH_CONSISTENCY", "Session")
    assert load_settings().search_consistency == "Session"
    monkeypatch.setenv("RAGSTREAM_MILVUS_SEARCH_CONSISTENCY", "strongest")
    with pytest.raises(SettingsError, match="RAGSTREAM_MILVUS_SEARCH_CONSISTENCY"):
        load_settings()
