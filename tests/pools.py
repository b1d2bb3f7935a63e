"""A connection pool with every connection taken, for tests of what waits for one."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from serving.store.database import db


@contextlib.contextmanager
def only_connection_held() -> Iterator[None]:
    """While the block runs, another thread holds a pooled connection (the only one, with
    DB_POOL_SIZE=1), so any work that needs one waits DB_POOL_WAIT_SECONDS for nothing."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        db.connect(reuse_if_open=True)
        holding.set()
        release.wait(30)
        db.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10), "the connection was not taken"
        yield
    finally:
        release.set()
        holder.join(30)
