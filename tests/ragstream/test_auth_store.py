"""The credential store (API keys, sessions) and the identities it gives, without services.

Concurrency is tried the way two admins and a running API would: separate processes
creating and revoking keys while this process authenticates requests.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragstream.api import create_app
from ragstream.auth import AuthConfig, AuthConfigError, AuthError, Authenticator, Identity, load_auth_config
from ragstream.settings import load_settings
from ragstream.store import AuthStore

CHURN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ragstream.store import AuthStore
    keys_dir, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    revoked, kept = [], []
    for i in range(n):
        store = AuthStore(keys_dir)                       # a fresh `ragstream apikey` each time
        key = store.create_key(f"churn-{i}", ("user",), ())
        if i % 2:
            kept.append(key)
        else:
            assert store.revoke_key(key.split("_")[1])
            revoked.append(key)
    out.write_text(json.dumps({"revoked": revoked, "kept": kept}))
""")


def test_two_processes_creating_and_revoking_while_requests_run(tmp_path):
    path = tmp_path / "auth.toml"
    path.write_text("[rate_limit]\nper_minute = 1000000\n")
    app = create_app(load_settings(home=tmp_path, auth_file=path))
    auth = app.state.services.auth
    steady = auth.api_keys.create("steady", ("user",))
    procs = [subprocess.Popen([sys.executable, "-c", CHURN, str(tmp_path / "keys"), str(tmp_path / f"out{i}.json"),
                               "40"], cwd=Path(__file__).resolve().parents[2]) for i in range(2)]
    codes: dict[int, int] = {}
    with TestClient(app, raise_server_exceptions=False) as client:
        while any(p.poll() is None for p in procs):
            r = client.get("/v1/auth/whoami", headers={"X-API-Key": steady})
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    assert [p.returncode for p in procs] == [0, 0]
    print("requests during the churn:", codes)
    assert set(codes) == {200} and codes[200] > 10, codes  # not one request failed
    for i in range(2):
        out = json.loads((tmp_path / f"out{i}.json").read_text())
        for key in out["revoked"]:
            with pytest.raises(AuthError):
                auth.authenticate(None, key)
        for key in out["kept"]:
            assert auth.authenticate(None, key).subject.startswith("service:churn-")
    assert len(AuthStore(tmp_path / "keys").keys()) == 1 + 2 * 20


def test_store_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        Authenticator(AuthConfig(), tmp_path).api_keys.create("x", ("user",))
    finally:
        os.umask(old)
    keys = tmp_path / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    for f in keys.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_legacy_json_is_migrated_once(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    secret = "legacy-secret-value"
    legacy = {"abc123": {"name": "old-bot", "roles": ["user"], "groups": ["eng"],
                         "sha256": hashlib.sha256(secret.encode()).hexdigest(), "created_at": 1}}
    (keys / "api_keys.json").write_text(json.dumps(legacy))
    auth = Authenticator(AuthConfig(), tmp_path)
    who = auth.authenticate(None, f"rsk_abc123_{secret}")
    assert who.subject == "service:old-bot" and "group:eng" in who.principals
    assert not (keys / "api_keys.json").exists() and (keys / "api_keys.json.migrated").exists()
    assert auth.api_keys.revoke("abc123")
    (keys / "api_keys.json").write_text(json.dumps(legacy))  # an old copy put back: not imported again
    again = Authenticator(AuthConfig(), tmp_path)
    with pytest.raises(AuthError):
        again.authenticate(None, f"rsk_abc123_{secret}")


def test_service_accounts_are_their_own_kind(tmp_path):
    auth = Authenticator(AuthConfig(), tmp_path)
    who = auth.authenticate(None, auth.api_keys.create("root", ("user",)))
    assert who.subject == "service:root" and who.principals == ("public", "service:root")
    assert "user:root" not in who.principals
    grouped = auth.authenticate(None, auth.api_keys.create("bot", ("user",), ("eng",)))
    assert grouped.principals == ("group:eng", "public", "service:bot")
    with pytest.raises(ValueError):
        auth.api_keys.create("bot", ("user",), ("eng|public",))


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "auth.toml"
    path.write_text("[session]\nttl_s = 60\nrefresh_ttl_s = 600\nmax_age_s = 3600\n")
    return create_app(load_settings(home=tmp_path / "home", auth_file=path))


def test_sessions_refresh_and_revoke_server_side(app):
    svc = app.state.services
    alice = Identity("user:alice", "ldap", ("user",), ("group:eng", "public", "user:alice"))
    with TestClient(app) as client:
        token, refresh = svc.auth.sessions.open(alice)
        hdr = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/auth/whoami", headers=hdr).json()["principals"] == list(alice.principals)
        r = client.post("/v1/auth/refresh", json={"refresh_token": refresh})
        assert r.status_code == 200, r.text
        new = r.json()
        assert new["subject"] == "user:alice" and new["refresh_token"] != refresh
        assert client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {new['token']}"}).status_code == 200
        # The used refresh token again: someone holds a copy, so the whole session ends.
        assert client.post("/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
        assert client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {new['token']}"}).status_code == 401
        assert client.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401

        # An administrator ends every session of a subject; logout ends one's own.
        token2, _ = svc.auth.sessions.open(alice)
        token3, _ = svc.auth.sessions.open(alice)
        admin = {"X-API-Key": svc.auth.api_keys.create("ops", ("admin",))}
        assert client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {token2}"}).status_code == 200
        r = client.post("/v1/admin/sessions/revoke", json={"subject": "user:alice"}, headers=admin)
        assert r.status_code == 200 and r.json()["revoked"] == 2
        for t in (token2, token3):
            assert client.get("/v1/auth/whoami", headers={"Authorization": f"Bearer {t}"}).status_code == 401
        token4, _ = svc.auth.sessions.open(alice)
        h4 = {"Authorization": f"Bearer {token4}"}
        assert client.post("/v1/auth/logout", headers=h4).json() == {"revoked": 1}
        assert client.get("/v1/auth/whoami", headers=h4).status_code == 401


def test_sessions_end_at_their_max_age(tmp_path):
    path = tmp_path / "auth.toml"
    path.write_text("[session]\nttl_s = 60\nrefresh_ttl_s = 60\nmax_age_s = 60\n")
    auth = Authenticator(load_auth_config(path), tmp_path)
    token, refresh = auth.sessions.open(Identity("user:bob", "ldap", ("user",), ("public", "user:bob")))
    assert auth.authenticate(token, None).subject == "user:bob"
    import sqlite3

    db = sqlite3.connect(auth.store.path)
    db.execute("UPDATE sessions SET expires_at = ?", (int(time.time()) - 1,))  # as if 60 s had passed
    db.commit()
    with pytest.raises(AuthError, match="log in again"):
        auth.authenticate(token, None)
    with pytest.raises(AuthError):
        auth.sessions.refresh(refresh)


@pytest.mark.parametrize("text, expected", [
    ('[ldap]\nurl = "ldap://dc:389"\nuser_dn_template = "uid={username}"\ngroup_base = "ou=g"\n', "clear"),
    ('[session]\nttl_s = 86400\n', "session.ttl_s"),
    ('[oidc."a|b"]\nissuer = "i"\naudience = "a"\njwks_url = "https://i/jwks"\n', "issuer alias"),
    ('[identity_map]\n"alice" = "alice"\n', "identity_map"),
    # Per-issuer trust is checked at start-up: an issuer grants by default nothing it is not
    # trusted with, and every role named is an RBAC role (a typo is not silently "no role").
    ('[oidc.p]\nissuer = "i"\naudience = "a"\njwks_url = "https://i/jwks"\ndefault_roles = ["admin"]\n',
     r"oidc\.p: default_roles \['admin'\] are not in its allowed_roles"),
    ('[oidc.p]\nissuer = "i"\naudience = "a"\njwks_url = "https://i/jwks"\nallowed_roles = ["admn"]\n',
     r"oidc\.p\.allowed_roles: unknown role\(s\) \['admn'\]"),
    ('[ldap]\nurl = "ldaps://dc"\nuser_dn_template = "uid={username}"\ngroup_base = "ou=g"\n'
     'group_roles = { ops = "root" }\n', r"ldap\.group_roles: unknown role\(s\) \['root'\]"),
    ('[rbac.roles]\nreader = ["documents:read"]\n[oidc.p]\nissuer = "i"\naudience = "a"\n'
     'jwks_url = "https://i/jwks"\n', r"oidc\.p\.allowed_roles: unknown role\(s\) \['readonly', 'user'\]"),
])
def test_unsafe_auth_settings_are_refused(tmp_path, text, expected):
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(AuthConfigError, match=expected):
        load_auth_config(path)


def test_ldap_over_tls_or_declared_cleartext_is_accepted(tmp_path):
    base = 'user_dn_template = "uid={username}"\ngroup_base = "ou=g"\n'
    for extra in ('url = "ldaps://dc:636"\n', 'url = "ldap://dc:389"\nstart_tls = true\n',
                  'url = "ldap://127.0.0.1:389"\nallow_cleartext = true\n'):
        path = tmp_path / "auth.toml"
        path.write_text("[ldap]\n" + extra + base)
        assert load_auth_config(path).ldap is not None


def test_a_key_file_is_never_seen_empty_or_twice_different(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from ragstream.keyfile import create_key_file

    for round_ in range(20):
        path = tmp_path / f"session-{round_}.key"

        def make_and_read(_: int) -> bytes:
            if not path.exists():
                create_key_file(path)
            return path.read_bytes()

        with ThreadPoolExecutor(8) as pool:
            seen = set(pool.map(make_and_read, range(8)))
        assert len(seen) == 1 and len(seen.pop()) == 32
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


@pytest.mark.integration
def test_apikey_commands_use_the_store(settings, tmp_path):
    env = {**os.environ, "RAGSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    root = Path(__file__).resolve().parents[2]

    def ragstream(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ragstream.cli", "--home", str(tmp_path / "home"), *args],
                              cwd=root, env=env, capture_output=True, text=True, timeout=120)

    made = ragstream("apikey", "create", "root", "--role", "user", "--group", "eng")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert "service:root" in made.stderr and "group:eng" in made.stderr and "user:root" not in made.stderr
    key_id = key.split("_")[1]
    listed = ragstream("apikey", "list")
    assert f"{key_id}  service:root" in listed.stdout and key not in listed.stdout  # never the secret
    assert ragstream("apikey", "revoke", key_id).returncode == 0
    assert ragstream("apikey", "revoke", key_id).returncode == 1  # already revoked
    assert key_id not in ragstream("apikey", "list").stdout
    with pytest.raises(AuthError):
        Authenticator(AuthConfig(), tmp_path / "home").authenticate(None, key)


def test_private_home_closes_an_old_home(tmp_path):
    from ragstream.store import private_home

    old_umask = os.umask(0o022)
    try:
        home = tmp_path / "home"
        (home / "logs").mkdir(parents=True, mode=0o755)
        (home / "logs" / "kafka.log").write_text("x")
        home.chmod(0o755)
        private_home(home)
        assert os.umask(0o022) == 0o022  # in-process use leaves the caller's umask alone (main() sets 077)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700  # nothing under it is reachable by others
    private_home(Path("/"))  # never touched
    assert stat.S_IMODE(Path("/").stat().st_mode) & 0o005 == 0o005


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another account needs root")
def test_private_home_lets_a_service_account_pass_through(tmp_path):
    from ragstream.store import private_home

    home = tmp_path / "home"
    (home / "postgres").mkdir(parents=True)
    os.chown(home / "postgres", 65534, 65534)  # the server's own account, as infra/cdc.py does for postgres
    (home / "keys.txt").write_text("x")
    (home / "keys.txt").chmod(0o644)
    home.chmod(0o711)
    old_umask = os.umask(0o022)
    try:
        private_home(home)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(home.stat().st_mode) == 0o711  # traversable, not listable
    assert stat.S_IMODE((home / "keys.txt").stat().st_mode) == 0o600
    home.chmod(0o755)  # too open even so
    private_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_a_local_name_cannot_take_a_provider_s_namespace():
    """user:corp/alice is issuer corp's alice: no local directory name (LDAP, a names = "local"
    issuer, an identity_map target) may spell it; a provider's own names may hold '/'."""
    from ragstream.auth import AuthConfig, principals_of, provider_principals

    with pytest.raises(AuthError):
        principals_of("corp/alice", ["eng"])  # an LDAP uid "corp/alice"
    assert principals_of("alice", ["corp/eng", "eng"]) == ("group:eng", "public", "user:alice")
    with pytest.raises(AuthError):
        provider_principals("partner", "local", {}, "corp/alice", [])
    assert provider_principals("corp", "issuer", {}, "x/y", ["a/b", "e|f"]) == (
        "user:corp/x/y", ("group:corp/a/b", "public", "user:corp/x/y"))
    assert provider_principals("partner", "issuer", {"partner/al": "alice"}, "al", ["eng"]) == (
        "user:alice", ("group:partner/eng", "public", "user:alice"))
    with pytest.raises(ValueError, match="identity_map"):
        AuthConfig(identity_map={"partner/alice": "corp/alice"})
