"""A throwaway OpenLDAP directory (Debian's ``slapd``) for tests and demos.

``Directory(root).start()`` writes a ``slapd.conf`` (mdb backend, the core, cosine,
inetorgperson and nis schemas), starts ``slapd`` in the foreground on a free loopback port
and returns once it answers a bind; ``add_user`` / ``add_group`` fill it through ldap3 as
the root DN; ``stop()`` ends it. Nothing is installed system-wide and nothing listens
beyond 127.0.0.1. ``./dev setup`` installs the ``slapd`` package when it is missing.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLAPD = "/usr/sbin/slapd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")


@dataclass
class Directory:
    root: Path
    suffix: str = "dc=ragstream,dc=test"
    port: int = 0
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    _proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def admin_dn(self) -> str:
        return f"cn=admin,{self.suffix}"

    def start(self, timeout: float = 30) -> "Directory":
        import ldap3

        from infra.stack import free_port

        if not Path(SLAPD).exists():
            raise RuntimeError("slapd is not installed: run ./dev setup (or apt-get install slapd)")
        self.port = self.port or free_port()
        data = self.root / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        schemas = "\n".join(f"include {SCHEMA_DIR / s}.schema" for s in ("core", "cosine", "inetorgperson", "nis"))
        conf = self.root / "slapd.conf"
        conf.write_text(f"""{schemas}
pidfile {self.root / 'slapd.pid'}
modulepath {MODULE_DIR}
moduleload back_mdb
database mdb
maxsize 104857600
suffix "{self.suffix}"
rootdn "{self.admin_dn}"
rootpw {self.admin_password}
directory {data}
access to attrs=userPassword by self read by anonymous auth by * none
access to * by users read by * none
""")
        log = open(self.root / "slapd.log", "wb")
        self._proc = subprocess.Popen([SLAPD, "-f", str(conf), "-h", self.url + "/", "-d", "0"],
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"slapd exited with {self._proc.returncode}; see {self.root / 'slapd.log'}")
            try:
                conn = ldap3.Connection(ldap3.Server(self.url, connect_timeout=1), self.admin_dn,
                                        self.admin_password, auto_bind=True)
                break
            except ldap3.core.exceptions.LDAPException:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"slapd did not answer on {self.url} within {timeout:.0f} s") from None
                time.sleep(0.1)
        dc = self.suffix.split(",")[0].split("=")[1]
        conn.add(self.suffix, ["dcObject", "organization"], {"o": "ragstream test", "dc": dc})
        conn.add(f"ou=people,{self.suffix}", ["organizationalUnit"], {"ou": "people"})
        conn.add(f"ou=groups,{self.suffix}", ["organizationalUnit"], {"ou": "groups"})
        conn.unbind()
        return self

    def _admin(self):  # noqa: ANN202 - an ldap3 Connection
        import ldap3

        return ldap3.Connection(ldap3.Server(self.url), self.admin_dn, self.admin_password, auto_bind=True)

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.suffix}"

    def add_user(self, uid: str, password: str) -> str:
        from ldap3.utils.hashed import hashed
        from ldap3 import HASHED_SALTED_SHA

        conn = self._admin()
        ok = conn.add(self.user_dn(uid), ["inetOrgPerson"],
                      {"uid": uid, "cn": uid, "sn": uid, "userPassword": hashed(HASHED_SALTED_SHA, password)})
        conn.unbind()
        if not ok:
            raise RuntimeError(f"adding {uid} failed: {conn.result}")
        return self.user_dn(uid)

    def add_group(self, name: str, members: list[str]) -> None:
        conn = self._admin()
        ok = conn.add(f"cn={name},ou=groups,{self.suffix}", ["groupOfNames"],
                      {"cn": name, "member": [self.user_dn(m) for m in members]})
        conn.unbind()
        if not ok:
            raise RuntimeError(f"adding group {name} failed: {conn.result}")

    def set_members(self, name: str, members: list[str]) -> None:
        import ldap3

        conn = self._admin()
        conn.modify(f"cn={name},ou=groups,{self.suffix}",
                    {"member": [(ldap3.MODIFY_REPLACE, [self.user_dn(m) for m in members])]})
        conn.unbind()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
