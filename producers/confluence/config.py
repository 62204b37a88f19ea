"""The Confluence source's section of the sources file, and where its credentials come from.

Credentials are never written in the sources file: ``auth = "token"`` reads a personal access
token (sent as ``Authorization: Bearer``) from the environment variable ``token_env`` or the
file ``token_file``; ``auth = "basic"`` sends ``username`` with a password (or a Cloud API
token) read from ``password_env`` or ``password_file``. Secrets are read when a client is
built and are never logged or put in a message: errors name the variable or the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragstream.connector import ConnectorError

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: Keys that would put a secret in the sources file.
_SECRET_KEYS = ("token", "password", "api_token", "secret")


class ConfluenceConfig(BaseModel):
    """``[sources.<id>] kind = "confluence"`` in the sources file: one space of a Confluence
    Server / Data Center site (REST API ``/rest/api``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="the site's base URL, e.g. https://wiki.example.com (with its context path)")
    space: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9~_-]+$", description="the space key")
    auth: Literal["token", "basic"]
    token_env: str | None = Field(None, pattern=_ENV_NAME)
    token_file: Path | None = None
    username: str | None = Field(None, min_length=1, description="basic: the account's username (not a secret)")
    password_env: str | None = Field(None, pattern=_ENV_NAME)
    password_file: Path | None = None
    #: The site's time zone: CQL's ``lastmodified`` is compared in it, to the minute.
    timezone: str = "UTC"
    #: Incremental queries reach back this far before the last change seen (minute precision,
    #: clocks, the search index's lag); what was already published is recognised by (id, version).
    overlap_s: float = Field(600.0, ge=60.0)
    #: A full listing this often: deletions, restriction and space-permission changes (which
    #: change no page's ``lastmodified``) are found by it.
    reconcile_interval_s: float = Field(3600.0, gt=0)
    #: Content types indexed (pages, blog posts); attachments of indexed pages if ``attachments``.
    content_types: tuple[Literal["page", "blogpost"], ...] = ("page", "blogpost")
    attachments: bool = True
    #: Results per search / attachment request (Confluence caps them; 50 with expanded bodies).
    page_size: int = Field(50, ge=1, le=200)
    #: How a user becomes a principal: ``user:<directory>/<username>`` (Server/DC), or the
    #: ``userKey``, or the ``accountId`` (Cloud). Groups are ``group:<directory>/<name>``.
    user_id: Literal["username", "userKey", "accountId"] = "username"
    directory: str = Field("confluence", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                           description="the auth file's alias for Confluence's users and groups")
    #: Anonymous access to the space (or "everyone") becomes ``public``; otherwise it grants nobody.
    anonymous_is_public: bool = False

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in _SECRET_KEYS:
                    raise ValueError(f"{key}: never write a secret in the sources file; name it with "
                                     f"{'token' if key in ('token', 'api_token', 'secret') else 'password'}_env "
                                     "(an environment variable) or ..._file (a file)")
        return data

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be the site's http(s) URL, e.g. https://wiki.example.com")
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _auth_fields(self) -> ConfluenceConfig:
        def one_of(env: str, file: str) -> None:
            if (getattr(self, env) is None) == (getattr(self, file) is None):
                raise ValueError(f"auth = {self.auth!r} needs exactly one of {env} and {file}")

        if self.auth == "token":
            one_of("token_env", "token_file")
            if self.password_env or self.password_file:
                raise ValueError("auth = 'token' takes no password_env/password_file")
        else:
            if not self.username:
                raise ValueError("auth = 'basic' needs username")
            one_of("password_env", "password_file")
            if self.token_env or self.token_file:
                raise ValueError("auth = 'basic' takes no token_env/token_file (use password_env for a Cloud API token)")
        return self

    def credential_origin(self) -> str:
        """Where the credentials come from, for messages (never the values)."""
        if self.auth == "token":
            where = f"the environment variable {self.token_env}" if self.token_env else f"the file {self.token_file}"
            return f"the personal access token in {where}"
        where = f"the environment variable {self.password_env}" if self.password_env else f"the file {self.password_file}"
        return f"user {self.username!r} with the password in {where}"


def read_secret(config: ConfluenceConfig, env_field: str, file_field: str, source_id: str) -> str:
    """The secret ``config`` names (an environment variable or a file); a ConnectorError
    naming the field if it cannot be read. The value itself is never in a message."""
    env, path = getattr(config, env_field), getattr(config, file_field)
    where = f"source {source_id!r}"
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConnectorError(f"{where} {env_field}: the environment variable {env} is not set (or empty); "
                                 "export it where ragstream runs")
        return value
    try:
        value = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConnectorError(f"{where} {file_field}: {path} does not exist") from None
    except OSError as exc:
        raise ConnectorError(f"{where} {file_field}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConnectorError(f"{where} {file_field}: {path} is empty")
    return value


def client_kwargs(config: ConfluenceConfig, source_id: str) -> dict[str, Any]:
    """The credential arguments of ``atlassian.Confluence``."""
    if config.auth == "token":
        return {"token": read_secret(config, "token_env", "token_file", source_id)}
    return {"username": config.username, "password": read_secret(config, "password_env", "password_file", source_id)}
