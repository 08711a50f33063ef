"""A redis-server closed by the ACL file `pbs-activated store-acl` writes: the package's
own store as the integration tests meet it (test_store_acl.py, test_deny.py)."""

from __future__ import annotations

from pathlib import Path

from support import RedisServer, run_cli

from pbs_activated.config import RedisSettings
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import acl
from pbs_activated.store.writer import Writer


class ClosedStore:
    """A redis-server whose ACL file `pbs-activated store-acl` wrote from three secrets."""

    def __init__(self, directory: Path) -> None:
        self.secrets = directory / "secrets"
        self.secrets.mkdir()
        self.passwords = {user: f"secret-of-{user}" for user in acl.USERS}
        for user, password in self.passwords.items():
            (self.secrets / user).write_text(password + "\n")
        self.acl_file = directory / "users.acl"
        run_cli("store-acl", "--secrets", str(self.secrets), "--output", str(self.acl_file))
        self.server = RedisServer(directory, arguments=("--aclfile", str(self.acl_file)))

    def settings(self, user: str, password: str | None = None) -> RedisSettings:
        settings = RedisSettings()
        parse_redis_url(self.server.url, settings)
        settings.username = user
        settings.password = self.passwords[user] if password is None else password
        settings.timeout = 2.0
        return settings

    def client(self, user: str) -> Writer:
        return Writer(self.settings(user))
