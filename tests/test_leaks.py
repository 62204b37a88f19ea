"""The session-end leak check (tests/leaks.py, run by tests/conftest.py) finds a configured
secret in a home's log file and in captured output, names where, and never prints it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLANTED = '''
import json

PASSWORD = "planted-ldap-" + "password-42"   # a test module's own secret constant


def test_logs_a_broker_password(tmp_path):
    home = tmp_path / "home"
    (home / "secrets").mkdir(parents=True)
    (home / "secrets" / "kafka.json").write_text(json.dumps({"controller": "c" * 43,
                                                            "users": {"stage-chunk": "k" * 43}}))
    (home / "logs").mkdir()
    (home / "logs" / "worker-chunk.log").write_text("connecting with " + "k" * 43 + "\\n")


def test_prints_its_password():
    print("binding with", PASSWORD)


def test_clean():
    print("nothing to see")
'''


def test_a_leaked_secret_fails_the_session_naming_the_place_not_the_secret():
    # Outside this session's base folder: its own leak check must not find the planted ones.
    tmp = Path(tempfile.mkdtemp(prefix="ragstream-leaks-"))
    try:
        test_file = tmp / "test_planted.py"
        test_file.write_text(textwrap.dedent(PLANTED))
        out = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                              f"--basetemp={tmp / 'bt'}", "-q", str(test_file)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text  # every test passed; the leak check failed the session
    assert "3 passed" in text
    assert "configured secrets found" in text
    assert "worker-chunk.log: Kafka password of stage-chunk" in text
    assert "test_planted.py::test_prints_its_password [Captured stdout call]: test_planted.PASSWORD" in text
    assert "test_clean" not in text.split("configured secrets found")[1]
    assert "k" * 43 not in text and "planted-ldap-password-42" not in text
