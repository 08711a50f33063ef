"""`pbs-activated migrate --from URL`: move authorizations from another store into ours.

Why: 0.1.0 kept them in Debian's redis-server on 127.0.0.1:6379, open to every
local user; 0.2.0's default is the package's own store. An upgrade must not
cost a client its authorization, so the postinst copies them across, each with
its own expiry, before anyone notices the move. The same command moves a site
from any store to another.

A copied authorization never shortens one already there (the authorize script
only lengthens), so running it twice, or while the reader writes new logins,
is harmless.
"""

from __future__ import annotations

import sys

from pbs_activated.config import Config, RedisSettings
from pbs_activated.config.storeurl import parse_redis_url
from pbs_activated.store import StoreError, keys
from pbs_activated.store.writer import Writer

EXIT_SOURCE_UNAVAILABLE = 3
"""The old store could not be read: the caller falls back to re-reading the journal."""


def run(source_url: str, config: Config, only_to_own_store: bool = False) -> int:
    """Copy every live authorization from `source_url` into the configured store.

    With `only_to_own_store` (the package's upgrade from 0.1.0), only when the
    configured store is the package's own: a site that names its own store
    keeps it, and hears whether every local user can write to it.
    """
    if only_to_own_store and not config.redis.own_store():
        from pbs_activated.reader.follow import open_store_warning

        warning = open_store_warning(config)
        print(
            f"pbs-activated: keeping the store {config.redis.url}"
            + (f"; {warning}" if warning else ""),
            file=sys.stderr,
        )
        return 0
    source = RedisSettings()
    parse_redis_url(source_url, source)
    source.timeout = config.redis.timeout
    try:
        found = Writer(source).authorizations()
    except StoreError as error:  # the old store is down or refuses us
        print(f"pbs-activated: migrate: cannot read {source_url}: {error}", file=sys.stderr)
        return EXIT_SOURCE_UNAVAILABLE
    now = keys.now_ms()
    live = [entry for entry in found if entry[2] > now]  # -1 (no expiry) is never a login
    target = Writer(config.redis)
    copied = sum(target.authorize(*entry) for entry in live)
    print(
        f"pbs-activated: migrate: {len(live)} authorizations in {source_url}, "
        f"{copied} copied into {config.redis.url}"
    )
    return 0
