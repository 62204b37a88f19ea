"""The S3 source's section of the sources file, and where its credentials come from.

Credentials are never written in the sources file: the section names the environment
variables that hold them (``access_key_id_env``, ``secret_access_key_env``, optionally
``session_token_env``), or an AWS shared-credentials file (``credentials_file``, INI with
``aws_access_key_id`` / ``aws_secret_access_key`` under ``[credentials_profile]``). Neither:
boto3's default chain (``AWS_*`` variables, an instance role). No message or log line
carries a secret: errors name the variable or file, never its value.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ragstream.connector import ConnectorError
from schemas.principals import is_principal

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class AclRule(BaseModel):
    """Principals granted to the objects under ``prefix`` and/or carrying ``tag`` (``key``
    or ``key=value``); both given: both must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prefix: str | None = None
    tag: str | None = None
    principals: tuple[str, ...] = Field(min_length=1)

    @field_validator("principals")
    @classmethod
    def _principals(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in v if not is_principal(p)]
        if bad:
            raise ValueError(f"invalid principal(s) {bad}: use 'user:<id>', 'group:<id>', 'service:<id>' or 'public'")
        return v

    @model_validator(mode="after")
    def _condition(self) -> AclRule:
        if self.prefix is None and self.tag is None:
            raise ValueError("an ACL rule needs a prefix, a tag, or both (a rule for every object is prefix = \"\")")
        if self.tag is not None and not self.tag.partition("=")[0]:
            raise ValueError("tag must be 'key' or 'key=value'")
        return self


class S3Config(BaseModel):
    """``[sources.<id>] kind = "s3"`` in the sources file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.\-]*[a-z0-9]$")
    #: Only keys under this prefix are listed (S3's own prefix filter).
    prefix: str = ""
    #: Glob patterns on the whole key (``*`` crosses ``/``); ``**/`` may also match nothing.
    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()
    #: Another S3 API (moto, MinIO, a regional endpoint); None: AWS.
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id_env: str | None = Field(None, pattern=_ENV_NAME)
    secret_access_key_env: str | None = Field(None, pattern=_ENV_NAME)
    session_token_env: str | None = Field(None, pattern=_ENV_NAME)
    credentials_file: Path | None = None
    credentials_profile: str = "default"
    #: An SQS queue that receives the bucket's notifications (ObjectCreated:*, ObjectRemoved:*,
    #: ObjectTagging:*): live changes. None: watch reconciles at the runtime's watch interval.
    sqs_queue_url: str | None = None
    #: With notifications, a full reconciliation this often anyway (missed or expired events).
    reconcile_interval_s: float = Field(900.0, gt=0)
    #: ACL mapping (fail closed: an object no rule matches has an empty ACL — nobody finds it).
    acl: tuple[AclRule, ...] = ()
    #: A tag whose value lists principals separated by blanks (``user:ann group:hr``).
    acl_principals_tag: str | None = None
    #: Objects per listing request (S3 returns at most 1000).
    page_size: int = Field(1000, ge=1, le=1000)

    @model_validator(mode="after")
    def _credentials(self) -> S3Config:
        if (self.access_key_id_env is None) != (self.secret_access_key_env is None):
            raise ValueError("access_key_id_env and secret_access_key_env go together (name both variables)")
        if self.credentials_file is not None and self.access_key_id_env is not None:
            raise ValueError("credentials come from environment variables or from credentials_file, not both")
        if self.session_token_env is not None and self.access_key_id_env is None:
            raise ValueError("session_token_env needs access_key_id_env and secret_access_key_env")
        return self

    def credential_origin(self) -> str:
        """Where the credentials come from, for messages (never the values)."""
        if self.access_key_id_env:
            return (f"the environment variables {self.access_key_id_env} and {self.secret_access_key_env}"
                    + (f" (and {self.session_token_env})" if self.session_token_env else ""))
        if self.credentials_file:
            return f"the credentials file {self.credentials_file} [{self.credentials_profile}]"
        return "boto3's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)"


@dataclass(frozen=True, repr=False)
class Credentials:
    access_key_id: str | None
    secret_access_key: str | None
    session_token: str | None = None

    def __repr__(self) -> str:  # never print a secret by accident
        return "Credentials(<hidden>)"


def resolve_credentials(config: S3Config, source_id: str) -> Credentials:
    """Read the credentials the config names; a ConnectorError says what is missing."""
    where = f"source {source_id!r}"
    if config.access_key_id_env:
        missing = [n for n in (config.access_key_id_env, config.secret_access_key_env, config.session_token_env)
                   if n and not os.environ.get(n)]
        if missing:
            raise ConnectorError(f"{where}: the environment variable(s) {', '.join(missing)} named in the sources "
                                 "file are not set (or empty); export them where ragstream runs")
        return Credentials(os.environ[config.access_key_id_env], os.environ[config.secret_access_key_env or ""],
                           os.environ.get(config.session_token_env) if config.session_token_env else None)
    if config.credentials_file:
        path = Path(config.credentials_file).expanduser()
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConnectorError(f"{where}: cannot read the credentials file {path}: {exc.strerror}") from None
        except configparser.Error:
            raise ConnectorError(f"{where}: the credentials file {path} is not an AWS credentials file "
                                 f"([{config.credentials_profile}] with aws_access_key_id and "
                                 "aws_secret_access_key)") from None
        if not parser.has_section(config.credentials_profile):
            raise ConnectorError(f"{where}: the credentials file {path} has no [{config.credentials_profile}] "
                                 "section (credentials_profile)")
        section = parser[config.credentials_profile]
        missing = [k for k in ("aws_access_key_id", "aws_secret_access_key") if not section.get(k, "").strip()]
        if missing:
            raise ConnectorError(f"{where}: [{config.credentials_profile}] in {path} lacks {', '.join(missing)}")
        return Credentials(section["aws_access_key_id"].strip(), section["aws_secret_access_key"].strip(),
                           (section.get("aws_session_token") or "").strip() or None)
    return Credentials(None, None, None)
