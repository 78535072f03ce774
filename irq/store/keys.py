"""The statements on the API keys table."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import insert, or_, select, update

from irq.store.db import Database
from irq.store.models import ApiKey

KEYS: Any = ApiKey.__table__


class KeyRow(NamedTuple):
    id: int
    name: str
    is_admin: bool


def insert_key(db: Database, *, name: str, prefix: str, key_hash: str, admin: bool, now: datetime) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            insert(KEYS).values(name=name, prefix=prefix, key_hash=key_hash, is_admin=admin, created_at=now)
        )


def find_key(db: Database, key_hash: str) -> KeyRow | None:
    """The key with this hash, unless it was revoked."""
    q = select(KEYS.c.id, KEYS.c.name, KEYS.c.is_admin).where(
        KEYS.c.key_hash == key_hash, KEYS.c.revoked_at.is_(None)
    )
    with db.engine.connect() as conn:
        row = conn.execute(q).one_or_none()
    return None if row is None else KeyRow(int(row.id), row.name, bool(row.is_admin))


class KeyListing(NamedTuple):
    id: int
    name: str
    prefix: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None


def list_keys(db: Database) -> list[KeyListing]:
    q = select(KEYS.c.id, KEYS.c.name, KEYS.c.prefix, KEYS.c.is_admin, KEYS.c.created_at, KEYS.c.revoked_at)
    with db.engine.connect() as conn:
        return [KeyListing(*row) for row in conn.execute(q.order_by(KEYS.c.id))]


def revoke_keys(db: Database, name_or_prefix: str, now: datetime) -> list[int]:
    """Revoke the live keys with this name or this prefix; returns their ids."""
    q = (
        update(KEYS)
        .where(
            or_(KEYS.c.name == name_or_prefix, KEYS.c.prefix == name_or_prefix), KEYS.c.revoked_at.is_(None)
        )
        .values(revoked_at=now)
        .returning(KEYS.c.id)
    )
    with db.engine.begin() as conn:
        return [int(row.id) for row in conn.execute(q)]
