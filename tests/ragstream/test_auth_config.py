"""The auth file is validated at start-up; errors name the file, the field and the fix."""

from __future__ import annotations

import pytest

from ragstream.auth import AuthConfigError, Rbac, RbacConfig, load_auth_config
from ragstream.settings import load_settings


@pytest.mark.parametrize("text, expected", [
    ('[oidc.x]\nissuer = "i"\naudience = "a"\njwks_url = "https://i/jwks"\nalgorithms = ["HS256"]\n',
     "oidc.x.algorithms"),
    ('[oidc.x]\nissuer = "i"\naudience = "a"\njwks_url = "https://i/jwks"\nalgorithms = ["none"]\n', "refused"),
    ('[rbac.roles]\nops = ["deploy"]\n', "must be 'resource:action'"),
    ('[ldap]\nurl = "http://dc"\nuser_dn_template = "uid={username}"\ngroup_base = "ou=g"\n', "ldap.url"),
    ('[rate_limit]\nper_minute = 0\n', "rate_limit.per_minute"),
    ('[saml]\nsp_entity_id = "sp"\nacs_url = "https://x/acs"\nidp_metadata_file = "/nope.xml"\n',
     "download the IdP's metadata"),
    ("not toml = = \n", "not valid TOML"),
])
def test_bad_auth_files_say_what_is_wrong(tmp_path, text, expected):
    path = tmp_path / "auth.toml"
    path.write_text(text)
    with pytest.raises(AuthConfigError) as err:
        load_auth_config(path)
    assert expected in str(err.value) and str(path) in str(err.value)
    from ragstream.cli.app import UserError, _check_files

    with pytest.raises(UserError, match="invalid configuration"):  # every command refuses it at start-up
        _check_files(load_settings(home=tmp_path, auth_file=path))


def test_missing_auth_file_says_how_to_fix(tmp_path):
    with pytest.raises(AuthConfigError, match="unset RAGSTREAM_AUTH_FILE"):
        load_auth_config(tmp_path / "absent.toml")


def test_rbac_wildcards():
    rbac = Rbac(RbacConfig(roles={"ops": ("dlq:*",), "root": ("*",), "reader": ("documents:read",)}))
    assert rbac.allows(("ops",), "dlq:replay") and not rbac.allows(("ops",), "dsr:submit")
    assert rbac.allows(("root",), "anything:at_all")
    assert rbac.allows(("reader",), "documents:read") and not rbac.allows(("reader",), "documents:write")
    assert not rbac.allows(("unknown-role",), "documents:read") and not rbac.allows((), "documents:read")
