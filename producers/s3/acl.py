"""Who may read an object: principals mapped from key prefixes and object tags by config.

Fail closed: an object no rule matches gets an empty ACL (nobody finds it), and a principal
in a tag that is not a valid principal is dropped (logged), never widened to "everyone".
All matching rules add up (a union).
"""

from __future__ import annotations

from ragstream.logging import get_logger
from schemas.events import Acl
from schemas.principals import is_principal

from producers.s3.config import S3Config

log = get_logger(__name__)


class AclMapping:
    def __init__(self, config: S3Config) -> None:
        self.rules = config.acl
        self.principals_tag = config.acl_principals_tag

    @property
    def needs_tags(self) -> bool:
        """Whether an object's tags must be read to know its ACL (one GetObjectTagging each)."""
        return self.principals_tag is not None or any(r.tag is not None for r in self.rules)

    def acl_for(self, key: str, tags: dict[str, str] | None = None) -> Acl:
        tags = tags or {}
        principals: set[str] = set()
        for rule in self.rules:
            if rule.prefix is not None and not key.startswith(rule.prefix):
                continue
            if rule.tag is not None:
                name, has_value, value = rule.tag.partition("=")
                if name not in tags or (has_value and tags[name] != value):
                    continue
            principals.update(rule.principals)
        if self.principals_tag and self.principals_tag in tags:
            for p in tags[self.principals_tag].split():
                if is_principal(p):
                    principals.add(p)
                else:
                    log.warning("invalid principal in an object tag dropped", key=key, tag=self.principals_tag,
                                principal=p[:100])
        return Acl(principals=tuple(principals))
