"""One stored copy of each JSON Schema, by its hash: a job row keeps only `schema_hash`, so a million jobs
with the default schema hold one copy of it.

A process remembers the schemas it has read or written (SCHEMA_CACHE of them) for CACHE_TTL_S; storing one
it does not remember stamps the row's `used_at`. Retention deletes a schema that no job names once its
`used_at` is past the cutoff (`irq/store/retention.py`): a schema this process remembers was stamped less
than CACHE_TTL_S ago, far inside any retention time, so it is never deleted under a job being stored.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from irq.clock import utcnow
from irq.store.db import Database
from irq.store.models import StoredSchema

SCHEMAS = cast(Table, StoredSchema.__table__)
SCHEMA_CACHE = 1024
CACHE_TTL_S = 3600.0


class SchemaStore:
    """The schemas table behind a small cache; safe to share between threads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def _remembered(self, digest: str) -> dict[str, Any] | None:
        with self._lock:
            hit = self._cache.get(digest)
            if hit is None or time.monotonic() - hit[0] > CACHE_TTL_S:
                return None
            self._cache.move_to_end(digest)
            return hit[1]

    def _remember(self, schemas: Mapping[str, dict[str, Any]]) -> None:
        with self._lock:
            for digest, schema in schemas.items():
                self._cache[digest] = (time.monotonic(), schema)
                self._cache.move_to_end(digest)
            while len(self._cache) > SCHEMA_CACHE:
                self._cache.popitem(last=False)

    def put(self, conn: Connection, schemas: Mapping[str, dict[str, Any]]) -> None:
        """Store the schemas (hash → schema) this process does not remember, in the caller's transaction."""
        new = {digest: schema for digest, schema in schemas.items() if self._remembered(digest) is None}
        if not new:
            return
        now = utcnow()
        values = [{"hash": digest, "schema": schema, "used_at": now} for digest, schema in new.items()]
        dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        statement = dialect_insert(SCHEMAS).values(values)
        conn.execute(statement.on_conflict_do_update(index_elements=["hash"], set_={"used_at": now}))
        self._remember(new)

    def get(self, digests: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The schemas of these hashes (those stored)."""
        found: dict[str, dict[str, Any]] = {}
        missing = set()
        for digest in set(digests):
            schema = self._remembered(digest)
            if schema is None:
                missing.add(digest)
            else:
                found[digest] = schema
        if missing:
            q = select(SCHEMAS.c.hash, SCHEMAS.c.schema).where(SCHEMAS.c.hash.in_(sorted(missing)))
            with self.db.engine.connect() as conn:
                read = {digest: schema for digest, schema in conn.execute(q)}
            self._remember(read)
            found.update(read)
        return found


def used_before(conn: Connection, cutoff: datetime, limit: int = 1000) -> list[str]:
    """Hashes of schemas last stored before `cutoff`, oldest first."""
    q = select(SCHEMAS.c.hash).where(SCHEMAS.c.used_at < cutoff).order_by(SCHEMAS.c.used_at).limit(limit)
    return [row[0] for row in conn.execute(q)]
